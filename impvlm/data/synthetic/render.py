"""Drawing scenes: shapes in their slots, a sign's word in the largest font that fits."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from impvlm.data.synthetic.world import PALETTE, SLOTS, Obj, Scene, WorldConfig
from impvlm.errors import ConfigError


class Renderer:
    """Draws scenes at ``size`` px (default ``cfg.image_size``); reuse one per size (it keeps the font)."""

    def __init__(self, cfg: WorldConfig, size: int | None = None) -> None:
        self.cfg = cfg
        self.size = int(size or cfg.image_size)
        self._font: ImageFont.FreeTypeFont | ImageFont.ImageFont | None = None

    def __call__(self, scene: Scene) -> Image.Image:
        img = Image.new("RGB", (self.size, self.size), self.cfg.background)
        draw = ImageDraw.Draw(img)
        for obj in scene.objects:
            self._draw_obj(draw, obj)
        if scene.is_sign:
            self._draw_word(img, scene.word or "", PALETTE[scene.word_colour or "white"])
        return img

    def _draw_obj(self, draw: ImageDraw.ImageDraw, obj: Obj) -> None:
        s = self.size
        fx, fy = SLOTS[obj.position]
        cx, cy = (fx + obj.dx) * s, (fy + obj.dy) * s
        r = self.cfg.object_scale * obj.scale * s / 2
        fill = PALETTE[obj.colour]
        if obj.shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif obj.shape == "square":
            h = r * 0.85  # a square of the same "size" looks bigger than a circle
            draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
        elif obj.shape == "triangle":
            draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
        elif obj.shape == "cross":
            t = r / 3
            draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=fill)
            draw.rectangle((cx - t, cy - r, cx + t, cy + r), fill=fill)
        else:  # pragma: no cover - WorldConfig rejects unknown shapes
            raise ConfigError(f"unknown shape {obj.shape!r}")

    def _draw_word(self, img: Image.Image, word: str, fill: tuple[int, int, int]) -> None:
        text = word.upper()
        font = self._get_font()
        if isinstance(font, ImageFont.FreeTypeFont):
            ImageDraw.Draw(img).text((self.size / 2, self.size / 2), text, fill=fill, font=font, anchor="mm")
            return
        # Pillow built without FreeType: draw the bitmap font small and scale it up.
        left, top, right, bottom = font.getbbox(text)
        small = Image.new("L", (right - left, bottom - top), 0)
        ImageDraw.Draw(small).text((-left, -top), text, fill=255, font=font)
        factor = max(1, int(self.size * 0.85 / max(small.width, 1)))
        mask = small.resize((small.width * factor, small.height * factor), Image.Resampling.NEAREST)
        xy = ((self.size - mask.width) // 2, (self.size - mask.height) // 2)
        img.paste(Image.new("RGB", mask.size, fill), xy, mask)

    def _get_font(self) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
        if self._font is None:
            self._font = fit_font([w.upper() for w in self.cfg.words] or ["W"], self.size)
        return self._font


def fit_font(texts: Sequence[str], size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """PIL's default font at the largest pixel size (<= 0.4 * size) where every text fits 90% of the width."""
    px = max(6, int(size * 0.4))
    while px > 6:
        try:
            font = ImageFont.load_default(size=px)
        except (TypeError, ImportError, OSError):  # no FreeType: the bitmap font, scaled by the renderer
            return ImageFont.load_default()
        if max(font.getbbox(t)[2] for t in texts) <= 0.9 * size:
            return font
        px -= 1
    return ImageFont.load_default(size=px)


def render(scene: Scene, cfg: WorldConfig, size: int | None = None) -> Image.Image:
    """Render one scene (``size`` px square, default ``cfg.image_size``); use :class:`Renderer` for many."""
    return Renderer(cfg, size)(scene)
