"""DeepCache wrapper (spec 1.11) on the tiny U-Net config."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from conftest import load_fixture_json
from latentsync.errors import InvalidInputError
from latentsync.models.tiny import randomize_constant_tensors
from latentsync.models.unet import UNet3DConditionModel
from latentsync.pipeline.deepcache import DeepCacheUNet


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def unet() -> UNet3DConditionModel:
    torch.manual_seed(0)
    model = UNet3DConditionModel.from_config(load_fixture_json("tiny_unet_config.json")).eval()
    randomize_constant_tensors(model)
    return model


def _inputs(seed: int, b: int = 2, f: int = 3, hw: int = 16):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, 13, f, hw, hw, generator=gen), torch.randn(b * f, 50, 384, generator=gen)


class CallCounter:
    """Counts forward calls of every named submodule of interest."""

    def __init__(self, model: torch.nn.Module, names: list[str]) -> None:
        self.counts: Counter[str] = Counter()
        self.handles = [
            model.get_submodule(n).register_forward_hook(lambda *_, n=n: self.counts.update([n])) for n in names
        ]

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _official_deepcache_reference(unet, full_inputs, step_inputs):
    """Emulates DeepCache 0.1.1 ``DeepCacheSDHelper(cache_interval=3, cache_branch_id=0)`` by wrapping
    module forwards the way the helper does (test-only): a full step stores every wrapped module's
    output; on a cached step all down blocks, the mid block, up blocks 0..2 and resnets/attentions
    0..1 of the last up block return their stored outputs, everything else runs on what it receives.
    """
    last = len(unet.up_blocks) - 1
    wrapped = [*unet.down_blocks, unet.mid_block, *unet.up_blocks[:last]]
    wrapped += [unet.up_blocks[last].resnets[i] for i in (0, 1)] + [unet.up_blocks[last].attentions[i] for i in (0, 1)]
    cache: dict[int, object] = {}
    state = {"skip": False}
    originals = {}
    for module in wrapped:
        original = module.forward
        originals[id(module)] = (module, original)

        def forward(*args, _module=module, _original=original, **kwargs):
            if state["skip"]:
                return cache[id(_module)]
            result = _original(*args, **kwargs)
            cache[id(_module)] = result
            return result

        module.forward = forward
    try:
        with torch.no_grad():
            full = unet(*full_inputs).sample
            state["skip"] = True
            cached = unet(*step_inputs).sample
    finally:
        for module, original in originals.values():
            module.forward = original
    return full, cached


def test_full_step_equals_plain_forward(unet):
    sample, audio = _inputs(0)
    cached_unet = DeepCacheUNet(unet, cache_interval=3, cache_branch_id=0)
    with torch.no_grad():
        plain = unet(sample, 801, audio).sample
        out = cached_unet(sample, 801, audio, step_index=0)
    assert torch.equal(out, plain)
    assert cached_unet.has_cache and cached_unet.num_full_steps == 1


def test_cached_step_with_same_input_equals_full_output(unet):
    sample, audio = _inputs(1)
    cached_unet = DeepCacheUNet(unet)
    with torch.no_grad():
        full = cached_unet(sample, 801, audio, step_index=0)
        reused = cached_unet(sample, 801, audio, step_index=1)
    assert cached_unet.num_cached_steps == 1
    torch.testing.assert_close(reused, full, rtol=0, atol=1e-5)


def test_cached_step_matches_deepcache_helper_semantics(unet):
    """On a reuse step with new latents, timestep and audio, the result equals DeepCache 0.1.1's."""
    sample0, audio0 = _inputs(2)
    sample1, audio1 = _inputs(3)
    ref_full, ref_cached = _official_deepcache_reference(unet, (sample0, 801, audio0), (sample1, 761, audio1))
    cached_unet = DeepCacheUNet(unet)
    with torch.no_grad():
        full = cached_unet(sample0, 801, audio0, step_index=0)
        reused = cached_unet(sample1, 761, audio1, step_index=1)
        plain = unet(sample1, 761, audio1).sample
    torch.testing.assert_close(full, ref_full, rtol=0, atol=1e-6)
    torch.testing.assert_close(reused, ref_cached, rtol=0, atol=1e-5)
    assert (reused - plain).abs().max() > 1e-4  # the cache really stands in for the deep part


def test_cached_steps_skip_the_deep_part(unet):
    last = len(unet.up_blocks) - 1
    names = [f"down_blocks.{i}" for i in range(len(unet.down_blocks))] + ["mid_block", "conv_in", "conv_out"]
    names += [f"up_blocks.{i}" for i in range(last)]
    names += [f"up_blocks.{last}.{kind}.{i}" for kind in ("resnets", "attentions", "motion_modules") for i in range(3)]
    counter = CallCounter(unet, names)
    sample, audio = _inputs(4)
    cached_unet = DeepCacheUNet(unet, cache_interval=3)
    try:
        with torch.no_grad():
            for step in range(7):  # full at 0, 3, 6; cached at 1, 2, 4, 5
                cached_unet(sample, 900 - 100 * step, audio, step_index=step)
    finally:
        counter.close()
    counts = counter.counts
    assert (cached_unet.num_full_steps, cached_unet.num_cached_steps) == (3, 4)
    shallow = {"conv_in", "conv_out"} | {f"up_blocks.{last}.{kind}.2" for kind in ("resnets", "attentions", "motion_modules")}
    for name in names:
        if name in shallow:
            assert counts[name] == 7, name  # shallow branch: every step
        else:
            assert counts[name] == 3, name  # deep part: full steps only


def test_interval_one_never_reuses_and_reset_forces_full_step(unet):
    sample, audio = _inputs(5, b=1, f=2, hw=8)
    with torch.no_grad():
        no_cache = DeepCacheUNet(unet, cache_interval=1)
        outs = [no_cache(sample, t, audio, step_index=i) for i, t in enumerate((900, 800))]
        assert no_cache.num_cached_steps == 0
        assert torch.equal(outs[1], unet(sample, 800, audio).sample)

        cached_unet = DeepCacheUNet(unet)
        cached_unet(sample, 900, audio, step_index=0)
        cached_unet.reset()
        assert not cached_unet.has_cache
        out = cached_unet(sample, 800, audio, step_index=1)  # nothing cached: runs fully
        assert cached_unet.num_full_steps == 1 and cached_unet.num_cached_steps == 0
        assert torch.equal(out, unet(sample, 800, audio).sample)

        # a cache made for another shape (e.g. a shorter last chunk) is not reused
        short_sample, short_audio = sample[:, :, :1], audio[:1]
        out = cached_unet(short_sample, 700, short_audio, step_index=2)
        assert cached_unet.num_full_steps == 2
        assert torch.equal(out, unet(short_sample, 700, short_audio).sample)


def test_bad_arguments_raise(unet):
    with pytest.raises(InvalidInputError, match="cache_branch_id"):
        DeepCacheUNet(unet, cache_branch_id=1)
    with pytest.raises(InvalidInputError, match="cache_interval"):
        DeepCacheUNet(unet, cache_interval=0)
    sample, audio = _inputs(6, b=1, f=2, hw=8)
    with pytest.raises(InvalidInputError, match="cached_deep_features"):
        unet(sample, 10, audio, cached_deep_features=torch.zeros(1, 32, 2, 4, 4))
