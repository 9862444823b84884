"""Train the LatentSync U-Net, stage 1 or stage 2 (spec 3.3-3.6).

One process::

    python -m training.train_unet --config training/configs/tiny_unet.yaml \\
        data.train_data_dir=DATA data.train_output_dir=runs/unet run.max_train_steps=2

Several GPUs (NCCL) or CPU processes (gloo)::

    torchrun --nproc_per_node 8 -m training.train_unet --config training/configs/stage2.yaml \\
        data.train_fileslist=files.txt ckpt.resume_ckpt_path=runs/stage1/checkpoints/checkpoint-N.pt

Resume exactly: ``run.resume_from=latest`` (or a ``checkpoint-<step>.pt`` path).

One step (spec 3.4):

1. VAE (frozen) encodes target, masked and reference frames (posterior samples x 0.18215) ->
   ``[B, 4, F, h, w]``; the mask is nearest-resized to ``[B, 1, F, h, w]``.
2. Noise: mixed (``run.use_mixed_noise``, ``run.mixed_noise_alpha``) or one draw over frames.
3. ``t ~ U{0..999}`` per clip; ``x_t = sqrt(a_t) z + sqrt(1 - a_t) eps`` (DDIM scheduler's a_t).
4. U-Net on ``cat[x_t, mask, masked, ref]`` (13 ch) with Whisper windows ``[B, F, 50, 384]``; with
   probability ``run.uncond_prob`` per clip the audio is replaced by zeros (the null condition of
   classifier-free guidance; **default 0 = the official recipe, which never drops it**, spec 7.10).
5. ``recon = MSE(eps_hat, eps)``.
6. If ``run.pixel_space_supervise``: ``z0 = (x_t - sqrt(1-a_t) eps_hat) / sqrt(a_t)`` decoded by the
   VAE (gradients flow) -> LPIPS-style loss on lower halves (``run.perceptual_loss_weight``), TREPA
   (``run.trepa_loss_weight``), and if ``run.use_syncnet`` the frozen SyncNet loss
   (``run.sync_loss_weight``).
7. Total = weighted sum; AdamW over the trainable parameters (stage 2: names containing one of
   ``run.trainable_modules`` when the model has motion modules, spec 3.5; else everything), grad-norm
   clip, LR schedule.

All random draws of a step (VAE posterior samples, noise, timesteps, audio dropout) come from a
generator seeded with ``(run.seed, rank, step)``, so resumed runs reproduce the loss sequence.

Auxiliary networks come from ``ckpt.*`` paths; the value ``tiny-random`` builds a small random
network in memory (tests / smoke runs); an empty LPIPS / TREPA path skips that loss with a logged
message. Checkpoints: ``checkpoints/checkpoint-<step>.pt`` = ``{"global_step", "state_dict"}`` (the
whole U-Net, loadable by :func:`latentsync.checkpoints.load_unet` and the official code) +
``checkpoint-<step>.resume.pt``. Validation (every ``run.validation_steps``): mean reconstruction
loss on ``data.num_val_samples`` fixed clips with fixed noise (official: an inference video + its
SyncNet confidence; not done here).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from latentsync.errors import InvalidInputError
from training import engine
from training.datasets.common import collate_samples, list_videos
from training.datasets.unet import UNetDataset, load_mask_image
from training.losses import PerceptualLoss, TrepaLoss, lipsync_sync_loss, lower_half, mixed_noise

TINY = "tiny-random"

DEFAULTS: dict[str, Any] = {
    "data": {
        "syncnet_config_path": "latentsync/configs/syncnet/syncnet_16_pixel_attn.yaml",
        "train_fileslist": "", "train_data_dir": "", "val_fileslist": "", "val_data_dir": "",
        "audio_embeds_cache_dir": "", "audio_mel_cache_dir": "", "num_val_samples": 4,
        "batch_size": 1, "num_workers": 0, "num_frames": 16, "resolution": 256,
        "mask_image_path": "latentsync/face/assets/mask.png", "audio_sample_rate": 16000,
        "video_fps": 25, "vae_batch_size": 16,
    },
    "ckpt": {
        "resume_ckpt_path": "", "save_ckpt_steps": 10000,
        "vae_path": "checkpoints/sd-vae-ft-mse",
        "whisper_path": "checkpoints/whisper/tiny.pt",
        "syncnet_ckpt_path": "checkpoints/stable_syncnet.pt",
        "lpips_path": "",
        "trepa_path": "",
    },
    "run": {
        "pixel_space_supervise": False, "use_syncnet": False, "sync_loss_weight": 0.05,
        "perceptual_loss_weight": 0.1, "recon_loss_weight": 1.0, "trepa_loss_weight": 10.0,
        "trainable_modules": ["motion_modules.", "attentions."], "seed": 1247,
        "use_mixed_noise": True, "mixed_noise_alpha": 1.0, "mixed_precision_training": False,
        "enable_gradient_checkpointing": False, "max_train_steps": 10, "max_train_epochs": -1,
        "uncond_prob": 0.0, "device": "auto", "num_threads": 0, "resume_from": "", "log_every": 1,
        "validation_steps": 10000, "guidance_scale": 1.5, "inference_steps": 20,
    },
    "optimizer": {"lr": 1.0e-5, "scale_lr": False, "max_grad_norm": 1.0, "lr_scheduler": "constant",
                  "lr_warmup_steps": 0, "weight_decay": 0.01},
}


# --------------------------------------------------------------------------------------------------
# Components


class AudioFeatureCache:
    """Whisper features ``[L, 5, 384]`` per video, cached on disk as ``<sha256>_whisper.pt`` (fp16)
    in ``cache_dir`` (content-hash keyed; spec 7.13) and in memory for this process."""

    def __init__(self, whisper_model: nn.Module | Any, cache_dir: str | None, sample_rate: int = 16000) -> None:
        # ``whisper_model``: the model, or a zero-argument factory called on the first cache miss.
        self._model, self.sample_rate = whisper_model, sample_rate
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._mem: dict[str, torch.Tensor] = {}

    def model(self) -> nn.Module:
        if not isinstance(self._model, nn.Module):
            self._model = self._model()
        return self._model

    @torch.no_grad()
    def features(self, video_path: str, content_hash: str) -> torch.Tensor:
        if content_hash in self._mem:
            return self._mem[content_hash]
        f = self.cache_dir / f"{content_hash}_whisper.pt" if self.cache_dir else None
        feats = None
        if f is not None and f.is_file():
            try:
                feats = torch.load(f, map_location="cpu", weights_only=True).float()
            except Exception:
                warnings.warn(f"corrupt audio-feature cache {f}; recomputing", stacklevel=2)
        if feats is None:
            from latentsync.audio.whisper import extract_whisper_features
            from latentsync.video.io import read_audio

            wav = read_audio(video_path, sample_rate=self.sample_rate)
            # Stored and used in fp16 precision (as the official cache), so a run that reads the
            # cache sees exactly the features of the run that wrote it.
            feats = extract_whisper_features(self.model(), wav).float().cpu().half()
            if f is not None:
                engine.atomic_torch_save(feats, f)
            feats = feats.float()
        if len(self._mem) > 256:
            self._mem.clear()
        self._mem[content_hash] = feats
        return feats

    def windows(self, video_path: str, content_hash: str, start: int, num_frames: int, fps: float) -> torch.Tensor:
        """``[num_frames, 50, 384]`` windows of frames ``start .. start + num_frames - 1`` (spec 1.4.6)."""
        from latentsync.audio.windows import audio_windows

        feats = self.features(video_path, content_hash)
        return audio_windows(feats, fps, num_frames=start + num_frames)[start:start + num_frames]


def _seeded(seed: int, fn):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn()


def _freeze(m: nn.Module | None) -> nn.Module | None:
    if m is not None:
        m.requires_grad_(False)
        m.eval()
    return m


def build_components(cfg: DictConfig, env: engine.DistEnv, logger: engine.JsonlLogger) -> dict[str, Any]:
    """U-Net (trainable), VAE, Whisper, and the loss networks that the config enables.

    Raises:
        MissingWeightsError / CheckpointError: a configured weight file is absent or wrong.
    """
    from latentsync import checkpoints
    from latentsync.models.unet import UNet3DConditionModel

    seed = int(cfg.run.seed)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    if cfg.ckpt.resume_ckpt_path == TINY:  # random weights everywhere, incl. the zero-init layers
        from latentsync.models.tiny import randomize_constant_tensors

        unet = _seeded(seed, lambda: UNet3DConditionModel.from_config(model_cfg))
        randomize_constant_tensors(unet, seed + 1)
        logger.log("init", unet="tiny-random (zero-initialised layers randomised)")
    elif cfg.ckpt.resume_ckpt_path:
        unet = checkpoints.load_unet(cfg.ckpt.resume_ckpt_path, config=model_cfg, allow_partial=True)
        logger.log("init", unet=str(cfg.ckpt.resume_ckpt_path),
                   missing=len(getattr(getattr(unet, "load_report", None), "missing", []) or []))
    else:
        unet = _seeded(seed, lambda: UNet3DConditionModel.from_config(model_cfg))
        logger.log("init", unet="random (no ckpt.resume_ckpt_path)")

    if cfg.ckpt.vae_path == TINY:
        from latentsync.models.tiny import build_tiny_vae

        vae = build_tiny_vae(seed)
    else:
        from latentsync.vae import load_vae

        vae = load_vae(cfg.ckpt.vae_path)
    def whisper_factory() -> nn.Module:  # built on the first audio-feature cache miss only
        if cfg.ckpt.whisper_path == TINY:
            from latentsync.models.tiny import build_tiny_whisper

            m = build_tiny_whisper(seed)
        else:
            m = checkpoints.load_whisper(cfg.ckpt.whisper_path)
        return _freeze(m).to(env.device)

    pixel = bool(cfg.run.pixel_space_supervise)
    syncnet, syncnet_res, lpips, trepa = None, 256, None, None
    if pixel and cfg.run.use_syncnet and float(cfg.run.sync_loss_weight) > 0:
        sync_cfg = engine.load_yaml(cfg.data.syncnet_config_path)
        syncnet_res = int(sync_cfg.data.resolution) if "data" in sync_cfg else 256
        sync_model_cfg = OmegaConf.to_container(sync_cfg.model, resolve=True)
        if cfg.ckpt.syncnet_ckpt_path == TINY:
            from latentsync.models.syncnet import StableSyncNet

            syncnet = _seeded(seed + 7, lambda: StableSyncNet(sync_model_cfg))
        else:
            syncnet = checkpoints.load_syncnet(cfg.ckpt.syncnet_ckpt_path, sync_model_cfg)
        if cfg.run.enable_gradient_checkpointing:
            syncnet.enable_gradient_checkpointing()
    if pixel and float(cfg.run.perceptual_loss_weight) > 0:
        if cfg.ckpt.lpips_path == TINY:
            lpips = PerceptualLoss(channels=(8, 16, 16, 32, 32), seed=seed + 11)
        elif cfg.ckpt.lpips_path:
            lpips = PerceptualLoss(weights_path=cfg.ckpt.lpips_path)
        else:
            logger.log("skip_loss", loss="lpips", reason="ckpt.lpips_path is empty: LPIPS weights absent; "
                       "the perceptual loss is skipped (set ckpt.lpips_path to enable it)")
    if pixel and float(cfg.run.trepa_loss_weight) > 0:
        if cfg.ckpt.trepa_path == TINY:
            trepa = TrepaLoss.tiny_random(seed + 13, image_size=32, num_frames=int(cfg.data.num_frames))
        elif cfg.ckpt.trepa_path:
            trepa = TrepaLoss.from_pretrained(cfg.ckpt.trepa_path, bool(cfg.run.enable_gradient_checkpointing))
        else:
            logger.log("skip_loss", loss="trepa", reason="ckpt.trepa_path is empty: VideoMAE weights absent; "
                       "the TREPA loss is skipped (set ckpt.trepa_path to enable it)")
    if pixel and cfg.run.enable_gradient_checkpointing and hasattr(vae, "enable_gradient_checkpointing"):
        vae.enable_gradient_checkpointing()
    dev = env.device
    return {
        "unet": unet.to(dev),
        "vae": _freeze(vae).to(dev),
        "whisper": whisper_factory,
        "syncnet": _freeze(syncnet).to(dev) if syncnet is not None else None,
        "syncnet_resolution": syncnet_res,
        "lpips": lpips.to(dev) if lpips is not None else None,
        "trepa": trepa.to(dev) if trepa is not None else None,
    }


def select_trainable(unet: nn.Module, use_motion_module: bool, trainable_modules: Sequence[str]) -> list[str]:
    """Spec 3.5: with motion modules, train parameters whose name contains one of
    ``trainable_modules``; otherwise (stage 1) everything. Returns the trainable names."""
    names = []
    for name, p in unet.named_parameters():
        on = (not use_motion_module) or any(m in name for m in trainable_modules)
        p.requires_grad_(on)
        if on:
            names.append(name)
    if not names:
        raise InvalidInputError(f"run.trainable_modules {list(trainable_modules)}: matches no U-Net parameter")
    return names


# --------------------------------------------------------------------------------------------------
# The step


def _encode(vae: nn.Module, frames: torch.Tensor, generator: torch.Generator, batch_size: int) -> torch.Tensor:
    """``[B, F, 3, R, R]`` -> scaled latents ``[B, 4, F, h, w]`` (frozen VAE posterior samples)."""
    from latentsync.vae import encode_frames

    b, f = frames.shape[:2]
    with torch.no_grad():
        z = encode_frames(vae, frames.reshape(b * f, *frames.shape[2:]), generator=generator,
                          batch_size=batch_size).float()
    return z.reshape(b, f, *z.shape[1:]).permute(0, 2, 1, 3, 4).contiguous()


def compute_losses(comp: dict[str, Any], unet: nn.Module, batch: dict, audio: torch.Tensor, cfg: DictConfig,
                   scheduler: Any, generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """Losses of one batch (spec 3.4). ``audio``: ``[B, F, 50, 384]``. Returns named scalars incl. "total"."""
    from latentsync.vae import VAE_SCALING_FACTOR

    vae = comp["vae"]
    vb = int(cfg.data.vae_batch_size)
    gt = batch["gt"].to(device)
    b, f = gt.shape[:2]
    z = _encode(vae, gt, generator, vb)
    masked = _encode(vae, batch["masked"].to(device), generator, vb)
    ref = _encode(vae, batch["ref"].to(device), generator, vb)
    h, w = z.shape[-2:]
    m = batch["masks"].to(device).reshape(b * f, 1, *batch["masks"].shape[-2:])
    m = F.interpolate(m, size=(h, w)).reshape(b, f, 1, h, w).permute(0, 2, 1, 3, 4)

    noise = mixed_noise(z.shape, float(cfg.run.mixed_noise_alpha), generator, "cpu",
                        bool(cfg.run.use_mixed_noise)).to(device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator).to(device)
    drop = torch.rand(b, generator=generator) < float(cfg.run.uncond_prob)
    if drop.any():
        audio = audio.clone()
        audio[drop.to(device)] = 0.0
    acp = scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)[t].view(b, 1, 1, 1, 1)
    x_t = acp.sqrt() * z + (1.0 - acp).sqrt() * noise

    inp = torch.cat([x_t, m, masked, ref], dim=1)
    with engine.autocast(device, bool(cfg.run.mixed_precision_training)):
        eps = unet(inp, t, encoder_hidden_states=audio).sample
    eps = eps.float()
    out = {"recon": F.mse_loss(eps, noise)}
    total = float(cfg.run.recon_loss_weight) * out["recon"]

    if cfg.run.pixel_space_supervise and (comp["lpips"] is not None or comp["trepa"] is not None
                                          or comp["syncnet"] is not None):
        z0 = (x_t - (1.0 - acp).sqrt() * eps) / acp.sqrt()
        z0 = z0.permute(0, 2, 1, 3, 4).reshape(b * f, z.shape[1], h, w)
        with engine.autocast(device, bool(cfg.run.mixed_precision_training)):
            pred = vae.decode(z0.to(vae.dtype) / VAE_SCALING_FACTOR).sample.float()  # [B*F, 3, R, R]
        gt_flat = gt.reshape(b * f, *gt.shape[2:])
        if comp["lpips"] is not None:
            out["lpips"] = comp["lpips"](lower_half(pred), lower_half(gt_flat))
            total = total + float(cfg.run.perceptual_loss_weight) * out["lpips"]
        if comp["trepa"] is not None:
            vid = lambda x: x.reshape(b, f, *x.shape[1:]).permute(0, 2, 1, 3, 4)  # noqa: E731
            out["trepa"] = comp["trepa"](vid(pred), vid(gt_flat))
            total = total + float(cfg.run.trepa_loss_weight) * out["trepa"]
        if comp["syncnet"] is not None:
            if "mel" not in batch:
                raise InvalidInputError("SyncNet loss: the batch has no mel (dataset built without need_mel)")
            out["sync"] = lipsync_sync_loss(comp["syncnet"], pred.reshape(b, f, *pred.shape[1:]),
                                            batch["mel"].to(device), comp["syncnet_resolution"])
            total = total + float(cfg.run.sync_loss_weight) * out["sync"]
    out["total"] = total
    return out


def _audio_batch(cache: AudioFeatureCache, batch: dict, num_frames: int, fps: float,
                 device: torch.device) -> torch.Tensor:
    return torch.stack([
        cache.windows(p, h, int(s), num_frames, fps)
        for p, h, s in zip(batch["video_path"], batch["content_hash"], batch["start_idx"].tolist())
    ]).to(device)


# --------------------------------------------------------------------------------------------------
# Main


def _as_config(cfg: DictConfig | dict | str | os.PathLike, overrides: Sequence[str] = ()) -> DictConfig:
    return engine.as_config(cfg, overrides, DEFAULTS)


def main(cfg: DictConfig | dict | str | os.PathLike, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Run U-Net training; returns ``{"global_step", "losses" (total per step of this run),
    "components" (per-step dicts), "checkpoint", "output_dir", "num_skipped"}``."""
    return engine.run_distributed(_as_config(cfg, overrides), _train)


def _train(cfg: DictConfig, env: engine.DistEnv) -> dict[str, Any]:
    from diffusers import DDIMScheduler

    from latentsync.config import scheduler_config

    out_dir, seed, logger = engine.start_run(cfg, env)

    comp = build_components(cfg, env, logger)
    unet = comp["unet"]
    trainable = select_trainable(unet, bool(cfg.model.get("use_motion_module", False)),
                                 list(cfg.run.trainable_modules))
    if cfg.run.enable_gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    ddp_unet = engine.wrap_ddp(unet, env)
    params = [p for p in unet.parameters() if p.requires_grad]
    lr = float(cfg.optimizer.lr)
    if cfg.optimizer.scale_lr:
        lr *= int(cfg.data.batch_size) * env.world_size
    max_steps = int(cfg.run.max_train_steps)
    optimizer, lr_scheduler, scaler = engine.build_optimization(cfg, params, lr, max_steps, env.device)
    noise_scheduler = DDIMScheduler.from_config(scheduler_config())

    start_step, _ = engine.resume_if_requested(cfg, out_dir, unet, optimizer, lr_scheduler, scaler, env, logger)

    res = int(cfg.data.resolution)
    mask = load_mask_image(cfg.data.mask_image_path, res)
    need_mel = bool(cfg.model.get("add_audio_layer", True) and cfg.run.use_syncnet and comp["syncnet"] is not None)
    mk = lambda fl, d, s: UNetDataset(  # noqa: E731
        list_videos(fl, d), s, mask, res, int(cfg.data.num_frames), need_mel,
        cfg.data.audio_mel_cache_dir or None, float(cfg.data.video_fps), int(cfg.data.audio_sample_rate))
    dataset = mk(cfg.data.train_fileslist, cfg.data.train_data_dir, seed)
    val_dataset = mk(*engine.val_source(cfg), seed + 1)
    if int(cfg.run.max_train_epochs) > 0:  # official knob: cap the steps by epochs
        per_step = int(cfg.data.batch_size) * env.world_size
        max_steps = min(max_steps, -(-int(cfg.run.max_train_epochs) * len(dataset) // per_step))
    sampler = engine.StepBatchSampler(len(dataset), int(cfg.data.batch_size), env.rank, env.world_size,
                                      seed, start_step, max_steps)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_samples,
                                         num_workers=int(cfg.data.num_workers))
    audio_cache = AudioFeatureCache(comp["whisper"], cfg.data.audio_embeds_cache_dir or None,
                                    int(cfg.data.audio_sample_rate))
    n_train, n_total = engine.count_trainable(unet)
    logger.log("start", step=start_step, max_train_steps=max_steps, world_size=env.world_size,
               num_videos=len(dataset), trainable_parameters=n_train, parameters=n_total,
               device=str(env.device), config=OmegaConf.to_container(cfg, resolve=True))

    nf, fps = int(cfg.data.num_frames), float(cfg.data.video_fps)
    step, losses, comps, skipped, last_ckpt = start_step, [], [], 0, None
    t0 = time.time()
    for batch in loader:
        skipped += batch["num_skipped"]
        gen = engine.step_generator(seed, env.rank, step)
        audio = _audio_batch(audio_cache, batch, nf, fps, env.device)
        parts = compute_losses(comp, ddp_unet, batch, audio, cfg, noise_scheduler, gen, env.device)
        scaler.scale(parts["total"]).backward()
        grad_norm, cur_lr = engine.optimizer_step(params, optimizer, lr_scheduler, scaler,
                                                  cfg.optimizer.max_grad_norm)
        step += 1

        vals = {k: engine.all_reduce_mean(float(v.detach()), env) for k, v in parts.items()}
        losses.append(vals["total"])
        comps.append(vals)
        if not all(torch.isfinite(torch.tensor(v)) for v in vals.values()):
            raise FloatingPointError(f"U-Net training: non-finite loss at step {step}: {vals}")
        if engine.is_due(step, int(cfg.run.log_every), max_steps):
            logger.log("train", step=step, loss=vals["total"], **{k: v for k, v in vals.items() if k != "total"},
                       lr=cur_lr, grad_norm=float(grad_norm), num_skipped=skipped,
                       sec_per_step=round((time.time() - t0) / (step - start_step), 3))
        if engine.is_due(step, int(cfg.run.validation_steps), max_steps):
            val = validate(comp, unet, val_dataset, audio_cache, cfg, noise_scheduler, env)
            logger.log("val", step=step, **val)
        if engine.is_due(step, int(cfg.ckpt.save_ckpt_steps), max_steps):
            last_ckpt = engine.save_training_checkpoint(out_dir, step, unet, optimizer, lr_scheduler, scaler,
                                                        env, cfg)
            logger.log("checkpoint", step=step, path=str(last_ckpt) if last_ckpt else None)
    logger.log("done", step=step, num_skipped=skipped)
    logger.close()
    return {"global_step": step, "losses": losses, "components": comps, "checkpoint": last_ckpt,
            "output_dir": str(out_dir), "num_skipped": skipped}


@torch.no_grad()
def validate(comp: dict[str, Any], unet: nn.Module, dataset: UNetDataset, audio_cache: AudioFeatureCache,
             cfg: DictConfig, scheduler: Any, env: engine.DistEnv) -> dict[str, float]:
    """Mean reconstruction loss over ``data.num_val_samples`` fixed clips with fixed noise/timesteps
    (sharded over ranks); the training RNG streams are preserved."""
    unet.eval()
    seed = int(cfg.run.seed) + 1
    n = max(1, int(cfg.data.num_val_samples))
    bs = int(cfg.data.batch_size)
    n_batches = max(1, -(-n // (bs * env.world_size)))
    val_cfg = OmegaConf.merge(cfg, {"run": {"pixel_space_supervise": False, "uncond_prob": 0.0}})
    tot, cnt = 0.0, 0
    with engine.preserved_rng():
        for i in range(n_batches):
            keys = engine.batch_keys(i, env.rank, env.world_size, bs, len(dataset), seed)
            batch = collate_samples([dataset[k] for k in keys])
            audio = _audio_batch(audio_cache, batch, int(cfg.data.num_frames), float(cfg.data.video_fps), env.device)
            gen = engine.step_generator(seed, env.rank, 10**9 + i)
            parts = compute_losses(comp, unet, batch, audio, val_cfg, scheduler, gen, env.device)
            tot += float(parts["recon"]) * len(keys)
            cnt += len(keys)
    unet.train()
    total = engine.all_reduce_sum(tot, env)
    count = engine.all_reduce_sum(cnt, env)
    return {"recon": total / count, "num_samples": int(count)}


def cli(argv: Sequence[str] | None = None) -> int:
    return engine.run_cli(argv, "python -m training.train_unet",
                          str(Path(__file__).parent / "configs" / "tiny_unet.yaml"), DEFAULTS, main)


if __name__ == "__main__":
    sys.exit(cli())
