"""Behavioural invariants of ImpForCausalLM on tiny random models."""

import pytest
import torch

from impvlm import ImpForCausalLM, build_config
from impvlm.errors import ConfigError, DataError
from impvlm.templates import IGNORE_INDEX

IMG = 2  # <image> id of the tiny presets


def tiny(preset="imp-tiny", seed=0):
    torch.manual_seed(seed)
    return ImpForCausalLM(build_config(preset)).eval()


@pytest.fixture(scope="module")
def model():
    return tiny()


def pixels(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 64, 64, generator=g)


@pytest.mark.parametrize("preset", ["imp-tiny", "llava-phi-tiny"])
def test_forward_and_generate_with_image(preset):
    m = tiny(preset)
    ids = torch.tensor([[5, 6, IMG, 7, 8]])
    out = m(input_ids=ids, pixel_values=pixels(1))
    n = m.config.num_image_tokens
    assert out.logits.shape == (1, 4 + n, m.config.vocab_size)
    gen = m.generate(input_ids=ids, pixel_values=pixels(1), max_new_tokens=4, do_sample=False)
    assert gen.shape == (1, 4)


def test_llava_phi_drops_cls_and_uses_second_to_last_layer():
    m = tiny("llava-phi-tiny")
    px = pixels(2)
    feats = m.vision_tower(px)
    hidden = m.vision_tower.model(pixel_values=px, output_hidden_states=True).hidden_states
    assert feats.shape[1] == m.config.num_image_tokens == 16
    torch.testing.assert_close(feats, hidden[-2][:, 1:])


def test_siglip_tower_is_truncated_without_post_layernorm(model):
    vm = model.vision_tower.model.vision_model
    assert len(vm.encoder.layers) == model.config.vision_config.num_hidden_layers
    assert isinstance(vm.post_layernorm, torch.nn.Identity)
    vision_keys = [k for k in model.state_dict() if k.startswith("vision_tower.")]
    assert vision_keys and not any(".head." in k or "post_layernorm" in k for k in vision_keys)


def test_features_land_exactly_at_image_token(model):
    ids = torch.tensor([[5, 6, IMG, 7]])
    px = pixels(1)
    mm = model.prepare_multimodal(ids, pixel_values=px, labels=ids.clone())
    feats = model.encode_images(px)[0]
    n = feats.shape[0]
    emb = model.get_input_embeddings()
    torch.testing.assert_close(mm.inputs_embeds[0, 2 : 2 + n], feats)
    torch.testing.assert_close(mm.inputs_embeds[0, :2], emb(torch.tensor([5, 6])))
    torch.testing.assert_close(mm.inputs_embeds[0, 2 + n], emb(torch.tensor(7)))
    assert (mm.labels[0, 2 : 2 + n] == IGNORE_INDEX).all()
    assert mm.labels[0, :2].tolist() == [5, 6] and mm.labels[0, -1].item() == 7
    assert mm.position_ids[0].tolist() == list(range(3 + n))


def test_kv_cache_generation_equals_no_cache(model):
    ids = torch.tensor([[5, 6, IMG, 7, 8, 9]])
    kw = dict(input_ids=ids, pixel_values=pixels(1), max_new_tokens=8, do_sample=False, min_new_tokens=8)
    with_cache = model.generate(**kw, use_cache=True)
    no_cache = model.generate(**kw, use_cache=False)
    assert with_cache.tolist() == no_cache.tolist()


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_equals_samples_one_by_one(model, side):
    samples = [[5, IMG, 7, 8, 9, 10], [IMG, 11, 12], [13, 14, 15, 16]]  # last one has no image
    images = [pixels(1, seed=3), pixels(1, seed=4), None]
    longest = max(map(len, samples))
    ids = torch.zeros(len(samples), longest, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, s in enumerate(samples):
        span = slice(longest - len(s), longest) if side == "left" else slice(0, len(s))
        ids[b, span] = torch.tensor(s)
        mask[b, span] = 1
    px = torch.cat([p for p in images if p is not None])
    batch = model(input_ids=ids, attention_mask=mask, pixel_values=px)
    mm = model.prepare_multimodal(ids, mask, pixel_values=px)
    for b, s in enumerate(samples):
        kw = {"pixel_values": images[b]} if images[b] is not None else {}
        single = model(input_ids=torch.tensor([s]), **kw).logits[0]
        rows = mm.attention_mask[b].bool()
        torch.testing.assert_close(batch.logits[b][rows], single, atol=1e-4, rtol=1e-4)
    if side == "left":
        gen_batch = model.generate(
            input_ids=ids, attention_mask=mask, pixel_values=px, max_new_tokens=5, do_sample=False
        )
        for b, s in enumerate(samples):
            kw = {"pixel_values": images[b]} if images[b] is not None else {}
            if images[b] is None:  # text-only: generate returns prompt + new tokens
                single = model.generate(input_ids=torch.tensor([s]), max_new_tokens=5, do_sample=False)
                single = single[:, len(s) :]
            else:
                single = model.generate(input_ids=torch.tensor([s]), max_new_tokens=5, do_sample=False, **kw)
            assert gen_batch[b].tolist()[: single.shape[1]] == single[0].tolist()


def test_several_images_per_sample(model):
    ids = torch.tensor([[5, IMG, 6, IMG, 7]])
    px = pixels(2)
    mm = model.prepare_multimodal(ids, pixel_values=px)
    feats = model.encode_images(px)
    n = feats.shape[1]
    torch.testing.assert_close(mm.inputs_embeds[0, 1 : 1 + n], feats[0])
    torch.testing.assert_close(mm.inputs_embeds[0, 2 + n : 2 + 2 * n], feats[1])
    assert mm.inputs_embeds.shape[1] == 3 + 2 * n


def test_training_loss_has_gradients_and_masks_images(model):
    m = tiny()
    m.train()
    ids = torch.tensor([[5, IMG, 7, 8, 9]])
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 8, 9]])
    out = m(input_ids=ids, labels=labels, pixel_values=pixels(1))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert m.mm_projector[0].weight.grad is not None


def test_image_count_mismatch_is_a_clear_error(model):
    with pytest.raises(DataError, match="2 <image> tokens but 1 images"):
        model(input_ids=torch.tensor([[IMG, 5, IMG]]), pixel_values=pixels(1))
    with pytest.raises(DataError, match="no images"):
        model(input_ids=torch.tensor([[IMG, 5]]))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"mm_projector_type": "mlp2x_relu"}, "unknown projector type"),
        ({"template": "vicuna"}, "unknown template"),
        ({"image_aspect_ratio": "crop"}, "unknown image_aspect_ratio"),
        ({"image_token_index": 5000}, "outside the vocabulary"),
    ],
)
def test_bad_config_is_a_clear_error(override, message):
    with pytest.raises(ConfigError, match=message):
        build_config("imp-tiny", **override)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'imp-v9'"):
        build_config("imp-v9")
