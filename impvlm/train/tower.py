"""A tiny vision tower that has learned to see the synthetic world: the offline stand-in for SigLIP.

Upstream Imp starts from a pretrained SigLIP and keeps it frozen. Offline there is nothing pretrained,
and a tiny tower trained only through the language model's answers learns slowly (measured on 2 CPU
cores: shape and position stayed near chance after 800 end-to-end steps). Supervising the tower
directly is fast. Every patch token is trained towards a *code* of the object covering that patch: one
one-hot block each for its slot (left / right / top / bottom, background, or "sign"), its colour, its
shape and the word of a sign scene, side by side in the token's first features, every other feature 0.
The blocks are read as logits (cross-entropy per block) and the whole feature vector is pulled onto the
code (squared distance, ``code_weight``). Both halves matter. Read-outs shared by every token make each
token carry what it shows *and where* in its own features (an object-centric token), which is what the
language model looks up when a question names a slot or an attribute. The squared distance keeps each
token to its own object: with a linear read-out alone, the tower's global attention spread every object
over all tokens (a linear probe read another object's colour from 66% of the tokens, chance 33%), and
the language model never learned to pick the object a question names; with the code, 32% (probes
after 400 read-out steps and 1500 code steps).

The training images are drawn fresh from the world's generator (``world.json``) with a seed of their
own, as a tower's pretraining data is not the benchmark's data. The result is a plain
``SiglipVisionModel`` / ``CLIPVisionModel`` folder (``config.json`` + ``model.safetensors``) that a
recipe's ``model.vision_tower`` loads, plus ``tower.json`` (settings, held-out accuracy per head).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from impvlm.data.defaults import TOWER_STEPS
from impvlm.errors import ConfigError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

TOWER_INFO = "tower.json"
SEED_OFFSET = 7919  # the tower's scenes are not the dataset's draws (those use the world seed)


@dataclass(frozen=True)
class TowerTraining:
    """Settings of the tower pretraining (defaults: measured on 2 cores, ~99% per token held out)."""

    preset: str = "imp-tiny"
    steps: int = TOWER_STEPS
    batch_size: int = 64
    lr: float = 1e-3
    code_scale: float = 3.0  # the value of a token's one-hot code entries
    code_weight: float = 0.1  # weight of the squared distance of every feature to the token's code
    eval_scenes: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.eval_scenes < 1:
            raise ConfigError("tower training needs steps, batch_size and eval_scenes >= 1")
        if self.lr <= 0 or self.code_scale <= 0 or self.code_weight < 0:
            raise ConfigError("tower training: lr and code_scale must be positive, code_weight >= 0")


class TokenLabels:
    """Per-token targets of a scene: ``(num_tokens, 4)`` ints for the heads ``slot, colour, shape, word``.

    A patch token belongs to the object covering most of it (at least ``MIN_COVER`` of its pixels);
    ``slot`` is 0 for background, 1.. for the world's positions and ``len(positions) + 1`` for every
    token of a sign scene; ``colour`` / ``shape`` / ``word`` are 0 where there is none, else 1 + index.
    """

    HEADS: tuple[str, ...] = ("slot", "colour", "shape", "word")
    MIN_COVER = 0.1
    INK = 30  # summed |RGB - background| above which a pixel counts as drawn

    def __init__(self, world: Any, renderer: Any, grid: int) -> None:
        if world.image_size % grid:
            raise ConfigError(f"a {world.image_size} px world does not split into a {grid}x{grid} patch grid")
        self.world, self.renderer, self.grid = world, renderer, grid
        self.sizes = [
            len(world.positions) + 2,
            len(world.colours) + 1,
            len(world.shapes) + 1,
            len(world.words) + 1,
        ]

    def __call__(self, scene: Any) -> np.ndarray:
        from impvlm.data.synthetic import Scene

        w, g = self.world, self.grid
        out = np.zeros((g * g, len(self.HEADS)), dtype=np.int64)
        if scene.is_sign:
            out[:, 0] = len(w.positions) + 1
            out[:, 1] = w.colours.index(scene.word_colour) + 1
            out[:, 3] = w.words.index(scene.word) + 1
            return out
        patch = w.image_size // g
        best = np.zeros(g * g)
        for obj in scene.objects:
            pixels = np.asarray(self.renderer(Scene(objects=(obj,))), dtype=np.int16)
            drawn = np.abs(pixels - np.array(w.background, dtype=np.int16)).sum(-1) > self.INK
            cover = drawn.reshape(g, patch, g, patch).mean(axis=(1, 3)).reshape(-1)
            mine = (cover >= self.MIN_COVER) & (cover > best)
            best = np.where(mine, cover, best)
            out[mine, :3] = (
                w.positions.index(obj.position) + 1,
                w.colours.index(obj.colour) + 1,
                w.shapes.index(obj.shape) + 1,
            )
        return out


class TowerObjective:
    """The preset's tower (seeded) and what it is trained towards: fresh scenes of ``world``, their
    per-token labels and codes, the loss and the held-out accuracy per head."""

    def __init__(self, world: Any, settings: TowerTraining, config: Any) -> None:
        import torch

        from impvlm.data.synthetic import Renderer
        from impvlm.image_processing import ImageProcessor
        from impvlm.vision import VisionTower

        torch.manual_seed(settings.seed)
        self.world, self.settings = world, settings
        self.tower = VisionTower(config)
        self.processor, self.render = ImageProcessor.from_config(config), Renderer(world)
        grid = (
            config.image_size // config.vision_config.patch_size
        )  # tokens per side (no CLS in the features)
        self.labels = TokenLabels(world, self.render, grid)
        self.width, self.n_codes = self.tower.hidden_size, sum(self.labels.sizes)
        if self.width < self.n_codes:
            raise ConfigError(
                f"the {settings.preset} tower's {self.width} features cannot hold this world's {self.n_codes} "
                "codes (slots + colours + shapes + words); use a wider tower or a smaller world"
            )
        self.offsets = torch.tensor(np.cumsum([0, *self.labels.sizes[:-1]]))

    def draw(self, rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` fresh scenes: pixels ``(n, 3, H, W)`` and per-token labels ``(n, N, 4)``."""
        import torch

        from impvlm.data.synthetic import sample_scene

        scenes = [sample_scene(rng, self.world) for _ in range(n)]
        pixels = torch.from_numpy(self.processor.batch([self.render(s) for s in scenes]))
        return pixels, torch.from_numpy(np.stack([self.labels(s) for s in scenes]))

    def loss_and_accuracy(
        self, pixels: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, list[float], float]:
        """The loss, the accuracy per head on tokens that show something, and the code error."""
        import torch
        from torch import nn

        settings, sizes = self.settings, self.labels.sizes
        features = self.tower(pixels)  # (B, N, width)
        # every token's own code: one-hot per head, side by side in its first n_codes features
        code = torch.zeros_like(features).scatter_(-1, target + self.offsets, settings.code_scale)
        logits = features[..., : self.n_codes].split(sizes, dim=-1)  # (B, N, size) per head
        loss = settings.code_weight * self.width * nn.functional.mse_loss(features, code) + sum(
            nn.functional.cross_entropy(x.flatten(0, 1), target[..., i].flatten())
            for i, x in enumerate(logits)
        )
        # scored on the tokens that show something: background tokens are an easy majority
        shown = target[..., 0] != 0
        accuracy = [
            (x.argmax(-1) == target[..., i])[shown].float().mean().item() for i, x in enumerate(logits)
        ]
        # how far the features are from carrying their own object only (0: exactly the code)
        code_error = ((features - code).square().sum(-1).mean() / code.square().sum(-1).mean()).item()
        return loss, accuracy, code_error  # type: ignore[return-value]


def pretrain_tower(
    data_root: str | Path,
    out_dir: str | Path,
    settings: TowerTraining = TowerTraining(),
    progress: bool = True,
) -> dict[str, Any]:
    """Train the preset's tower on fresh scenes of the world in ``data_root``; write it to ``out_dir``.

    Returns the ``tower.json`` content (held-out accuracy per head, seconds). A finished ``out_dir``
    (``tower.json`` present) is returned as is.
    """
    from impvlm.checkpoint import committed_folder
    from impvlm.data.synthetic import read_world
    from impvlm.presets import build_config

    out = Path(out_dir)
    if (out / TOWER_INFO).is_file():
        log.info("the tower in %s is already trained", out)
        return json.loads((out / TOWER_INFO).read_text())
    if out.exists():
        raise ConfigError(f"{out} exists but holds no finished tower ({TOWER_INFO}); remove it first")
    world = read_world(Path(data_root) / "world.json")
    config = build_config(settings.preset)
    if config.image_size != world.image_size:
        raise ConfigError(
            f"preset {settings.preset} sees {config.image_size} px images but the world in {data_root} "
            f"draws {world.image_size} px ones"
        )
    objective = TowerObjective(world, settings, config)
    started = time.perf_counter()
    accuracy, code_error = _fit(objective, progress)
    info = {
        "settings": asdict(settings),
        "world": str(Path(data_root) / "world.json"),
        "seconds": round(time.perf_counter() - started, 1),
        "held_out_accuracy": dict(zip(TokenLabels.HEADS, (round(a, 4) for a in accuracy))),
        "mean_accuracy": round(float(np.mean(accuracy)), 4),
        "code_error": round(code_error, 4),
    }
    with committed_folder(out) as tmp:
        objective.tower.model.save_pretrained(tmp)
        (tmp / TOWER_INFO).write_text(json.dumps(info, indent=2) + "\n")
    log.info(
        "tower: held-out mean accuracy %.1f%%, code error %.3f in %.0f s -> %s",
        100 * info["mean_accuracy"],
        info["code_error"],
        info["seconds"],
        out,
    )
    return info


def _fit(objective: TowerObjective, progress: bool) -> tuple[list[float], float]:
    """``settings.steps`` AdamW steps on fresh batches; the held-out accuracy per head and code error."""
    import torch
    from tqdm.auto import tqdm

    settings, seed = objective.settings, objective.world.seed
    rng = np.random.default_rng(seed + SEED_OFFSET + settings.seed)
    held_out = objective.draw(
        np.random.default_rng(seed + 2 * SEED_OFFSET + settings.seed), settings.eval_scenes
    )
    optimizer = torch.optim.AdamW(objective.tower.parameters(), lr=settings.lr)
    objective.tower.train()
    bar = tqdm(range(settings.steps), desc="tower", unit="step", disable=not progress)
    for _ in bar:
        loss, _, _ = objective.loss_and_accuracy(*objective.draw(rng, settings.batch_size))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    objective.tower.eval()
    with torch.no_grad():
        _, accuracy, code_error = objective.loss_and_accuracy(*held_out)
    return accuracy, code_error
