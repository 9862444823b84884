"""DDIM parity against the official trace (../shared/parity/ddim_trace.safetensors, README section 7).

The trace is one 16-frame chunk of the official denoising loop: tiny U-Net, 256 px (32x32 latents),
guidance 1.5, 4 steps, eta 0, float32 CPU, generator seed 1247. Two checks:

* replay: a stand-in model returns the recorded U-Net outputs, so guidance + scheduler + the 13-channel
  input are tested without the U-Net (the stand-in also asserts the input it receives);
* full: the tiny U-Net (tiny_unet.safetensors + tiny_unet_config.json) runs for real.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import parity_file
from latentsync.pipeline.latents import ChunkConditioning, expand_noise, initial_noise, mask_latents
from latentsync.pipeline.sampler import make_scheduler, sample_chunk

TOL = 1e-4
STEPS = 4


@pytest.fixture(scope="module")
def trace():
    return load_file(str(parity_file("ddim_trace.safetensors")))


def _cond(trace) -> ChunkConditioning:
    """Conditioning of the chunk from the trace (batch 1, conditional half)."""
    return ChunkConditioning(
        mask_latents=trace["mask_latents"][1:],
        masked_latents=trace["masked_image_latents"][1:],
        ref_latents=trace["ref_latents"][1:],
        audio_embeds=trace["audio_embeds"][16:],
    )


def _max_diff(a, b) -> float:
    return float((a.double() - b.double()).abs().max())


def _check_steps(trace, steps, final):
    diffs = {}
    for j, info in enumerate(steps):
        for name, key in [
            ("noise_pred_raw", f"noise_pred_raw_step{j}"),
            ("noise_pred", f"noise_pred_step{j}"),
            ("pred_original_sample", "pred_original_sample_step%d" % j),
            ("latents", f"latents_step{j}"),
        ]:
            d = _max_diff(getattr(info, name), trace[key])
            diffs[key] = d
            assert d <= TOL, f"{key}: max abs diff {d:.3g} > {TOL}"
    diffs["final_latents"] = _max_diff(final, trace["final_latents"])
    assert diffs["final_latents"] <= TOL
    return diffs


def test_scheduler_matches_official(trace):
    sched = make_scheduler(json.loads(parity_file("scheduler_config.json").read_text()))
    sched.set_timesteps(STEPS)
    assert sched.timesteps.tolist() == trace["timesteps"].tolist() == [751, 501, 251, 1]
    assert torch.equal(sched.alphas_cumprod.float(), trace["scheduler_alphas_cumprod"])
    assert sched.init_noise_sigma == 1.0
    # default config (latentsync.config or the built-in copy) is the same schedule
    default = make_scheduler()
    default.set_timesteps(20)
    assert default.timesteps[:3].tolist() == [951, 901, 851] and int(default.timesteps[-1]) == 1


def test_initial_noise_is_one_draw_repeated(trace):
    noise = initial_noise(32, generator=torch.Generator().manual_seed(1247))
    assert noise.shape == (1, 4, 1, 32, 32)
    full = expand_noise(noise, 82)
    assert torch.equal(full, trace["initial_noise_all_frames"])
    assert torch.equal(full[:, :, :16], trace["initial_latents"])


def test_mask_latents_nearest(trace):
    m = trace["mask_pixel"][0].float()
    ml = mask_latents(m, 16, 32)
    assert torch.equal(ml, trace["mask_latents"][:1])


def test_ddim_replay_recorded_unet_outputs(trace):
    """Guidance + DDIM + input assembly with the U-Net replaced by the recorded outputs."""
    cond = _cond(trace)
    calls = []

    def recorded_unet(sample, timestep, encoder_hidden_states, step_index):
        j = len(calls)
        calls.append(int(timestep))
        assert sample.shape == (2, 13, 16, 32, 32)
        prev = trace["initial_latents"] if j == 0 else trace[f"latents_step{j - 1}"]
        assert _max_diff(sample[:, :4], torch.cat([prev, prev])) <= TOL
        assert torch.equal(sample[:, 4:5], trace["mask_latents"])
        assert torch.equal(sample[:, 5:9], trace["masked_image_latents"])
        assert torch.equal(sample[:, 9:13], trace["ref_latents"])
        assert torch.equal(encoder_hidden_states, trace["audio_embeds"])  # zeros first, then audio
        assert step_index == j
        return trace[f"noise_pred_raw_step{j}"].clone()

    steps = []
    final = sample_chunk(
        recorded_unet, trace["initial_latents"].clone(), cond, num_inference_steps=STEPS,
        guidance_scale=1.5, eta=0.0, callback=steps.append,
    )
    assert calls == [751, 501, 251, 1]
    diffs = _check_steps(trace, steps, final)
    print("replay max abs diffs:", {k: f"{v:.2e}" for k, v in diffs.items()})


def test_ddim_trace_with_tiny_unet(trace):
    """The full chunk with the tiny U-Net: every recorded tensor within 1e-4."""
    from latentsync.models.unet import UNet3DConditionModel

    cfg = json.loads(parity_file("tiny_unet_config.json").read_text())
    unet = UNet3DConditionModel.from_config(cfg)
    unet.load_state_dict(load_file(str(parity_file("tiny_unet.safetensors"))), strict=True)
    unet.eval()
    steps = []
    final = sample_chunk(
        unet, trace["initial_latents"].clone(), _cond(trace), num_inference_steps=STEPS,
        guidance_scale=1.5, eta=0.0, callback=steps.append,
    )
    diffs = _check_steps(trace, steps, final)
    print("tiny U-Net max abs diffs:", {k: f"{v:.2e}" for k, v in diffs.items()})


def test_guidance_scale_one_runs_conditional_branch_only(trace):
    cond = _cond(trace)
    seen = []

    def unet(sample, timestep, encoder_hidden_states, step_index):
        seen.append(sample.shape[0])
        assert encoder_hidden_states.abs().sum() > 0  # the real audio, no zero branch
        return torch.zeros_like(sample[:, :4])

    sample_chunk(unet, trace["initial_latents"].clone(), cond, num_inference_steps=2, guidance_scale=1.0)
    assert seen == [1, 1]


def test_callback_can_interrupt(trace):
    class Stop(Exception):
        pass

    def cb(info):
        if info.step_index == 1:
            raise Stop

    def unet(sample, timestep, encoder_hidden_states, step_index):
        return torch.zeros_like(sample[:, :4])

    with pytest.raises(Stop):
        sample_chunk(unet, trace["initial_latents"].clone(), _cond(trace), num_inference_steps=4, callback=cb)
