"""Train StableSyncNet (spec 3.2).

One process (CPU or one GPU)::

    python -m training.train_syncnet --config training/configs/tiny_syncnet.yaml \\
        data.train_data_dir=DATA run.max_train_steps=100 data.train_output_dir=runs/sync

Several GPUs on one node (NCCL) or CPU processes (gloo)::

    torchrun --nproc_per_node 8 -m training.train_syncnet --config training/configs/syncnet_16_pixel_attn.yaml

Resume exactly (model, optimizer, LR schedule, step, RNG of every rank; same world size)::

    python -m training.train_syncnet --config ... run.resume_from=latest

Outputs in ``data.train_output_dir``: ``config.yaml`` (resolved), ``log.jsonl`` (one JSON object
per line: ``train`` with step/loss/acc/lr/grad_norm/num_skipped, ``val``, ``checkpoint``, ``done``),
``checkpoints/checkpoint-<step>.pt`` (official format: ``{"global_step", "state_dict",
"train_step_list", "train_loss_list", "val_step_list", "val_loss_list"}``) and
``checkpoint-<step>.resume.pt``.

Per step: frames ``[B, 16, 3, R, R]`` -> lower half packed ``[B, 48, R/2, R]``; mel ``[B, 1, 80, 52]``
(with ``data.paired_negatives`` ``[B/2, 1, 80, 52]``: the audio tower runs once per window, its embedding
is shared by the window's in-sync and off-sync clip);
loss = BCE(cos(v, a), y) (fp32); accuracy = mean((cos > 0.5) == y); gradient accumulation over
``data.gradient_accumulation_steps`` micro-batches (DDP ``no_sync`` on all but the last), grad-norm
clip ``optimizer.max_grad_norm``, AdamW, LR schedule ``optimizer.lr_scheduler`` (official: constant).

Deviations from the official script, on purpose: deterministic data (see
:mod:`training.datasets.syncnet`), validation on every rank's shard of exactly
``data.num_val_samples`` clips (official: ~360 clips, spec 7.14), GradScaler only when it is used
(official crashes without mixed precision), no loss-chart PNG (the JSON log has the curve). The
latent-space variant (``data.latent_space: true``) is not implemented.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from latentsync.errors import InvalidInputError
from training import engine
from training.datasets.common import collate_samples, list_videos
from training.datasets.syncnet import SyncNetDataset, pack_syncnet_frames, repeat_audio_embeds, unpair_batch
from training.losses import embedding_spread, syncnet_accuracy, syncnet_bce_loss

#: Knobs of this script that the official YAML does not have (merged under the file's keys).
DEFAULTS: dict[str, Any] = {
    "ckpt": {"resume_ckpt_path": "", "save_ckpt_steps": 2500},
    "data": {
        "gradient_accumulation_steps": 1,  # micro-batches per optimizer step
        "val_fileslist": "",
        "val_data_dir": "",
        "val_batch_size": 40,  # official: min(640 // 16, batch_size)
        "lower_half": True,
        "audio_mel_cache_dir": "",
        "num_workers": 0,
        "latent_space": False,
        "frame_cache_mb": 0,  # > 0: decode each video once and keep it in memory (small data sets)
        "paired_negatives": False,  # True: each audio window comes with its positive AND a negative
    },
    "optimizer": {"lr": 1.0e-5, "max_grad_norm": 1.0, "lr_scheduler": "constant", "lr_warmup_steps": 0,
                  "weight_decay": 0.01},
    "run": {
        "device": "auto",  # auto | cpu | cuda
        "num_threads": 0,  # torch CPU threads (0 = leave torch's default)
        "resume_from": "",  # "" | latest | path to checkpoint-<step>.pt / .resume.pt
        "log_every": 1,
        "validation_steps": 2500,
        "mixed_precision_training": False,
        "enable_gradient_checkpointing": False,
        "max_train_steps": 10,
        "time_budget_s": 0,  # > 0: stop (and save) after the first step past this many seconds
        "seed": 42,
    },
}


def _as_config(cfg: DictConfig | dict | str | os.PathLike, overrides: Sequence[str] = ()) -> DictConfig:
    return engine.as_config(cfg, overrides, DEFAULTS)


def _make_dataset(cfg: DictConfig, fileslist: str, data_dir: str, seed: int,
                  paired: bool = False) -> SyncNetDataset:
    return SyncNetDataset(
        list_videos(fileslist, data_dir), seed=seed, resolution=cfg.data.resolution,
        num_frames=cfg.data.num_frames, audio_mel_cache_dir=cfg.data.audio_mel_cache_dir or None,
        fps=cfg.data.video_fps, sample_rate=cfg.data.audio_sample_rate,
        frame_cache_mb=float(cfg.data.frame_cache_mb), paired=paired,
    )


def _keys_per_batch(batch_size: int, paired: bool) -> int:
    """Dataset items per micro-batch: ``batch_size`` clips, i.e. half as many items when each item
    is a (positive, negative) pair."""
    if not paired:
        return batch_size
    if batch_size % 2:
        raise InvalidInputError(f"data.batch_size={batch_size}: must be even with data.paired_negatives=true "
                                "(each audio window brings one in-sync and one off-sync clip)")
    return batch_size // 2


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: SyncNetDataset, cfg: DictConfig, env: engine.DistEnv,
             num_samples: int, batch_size: int, seed: int) -> dict[str, float]:
    """Mean BCE loss and accuracy over ``num_samples`` deterministic clips (sharded over ranks).

    RNG streams of the caller are preserved (validation never changes the training trajectory).
    """
    was_training = model.training
    model.eval()
    n_batches = max(1, -(-num_samples // (batch_size * env.world_size)))
    tot_loss = tot_correct = tot_n = 0.0
    with engine.preserved_rng():
        for b in range(n_batches):
            keys = engine.batch_keys(b, env.rank, env.world_size, batch_size, len(dataset), seed)
            batch = collate_samples([dataset[k] for k in keys])
            x = pack_syncnet_frames(batch["frames"].to(env.device), cfg.data.lower_half)
            with engine.autocast(env.device, cfg.run.mixed_precision_training):
                v, a = model(x, batch["audio"].to(env.device))
            y = batch["y"].to(env.device).float()
            tot_loss += float(syncnet_bce_loss(v, a, y)) * len(y)
            tot_correct += float(syncnet_accuracy(v, a, y)) * len(y)
            tot_n += len(y)
    model.train(was_training)
    n = engine.all_reduce_sum(tot_n, env)
    return {"loss": engine.all_reduce_sum(tot_loss, env) / n,
            "acc": engine.all_reduce_sum(tot_correct, env) / n, "num_samples": int(n)}


def main(cfg: DictConfig | dict | str | os.PathLike, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Run SyncNet training; returns ``{"global_step", "losses" (this run's steps), "checkpoint",
    "output_dir", "num_skipped"}`` (on every rank; checkpoint None on ranks > 0)."""
    cfg = _as_config(cfg, overrides)
    if cfg.data.latent_space:
        raise InvalidInputError("data.latent_space: the latent-space SyncNet variant is not implemented; "
                                "use a pixel-space config (syncnet_16_pixel_attn.yaml)")
    return engine.run_distributed(cfg, _train)


def _train(cfg: DictConfig, env: engine.DistEnv) -> dict[str, Any]:
    from latentsync.checkpoints import load_state_dict_file
    from latentsync.models.syncnet import StableSyncNet

    out_dir, seed, logger = engine.start_run(cfg, env)

    model = StableSyncNet(OmegaConf.to_container(cfg.model, resolve=True))
    if cfg.ckpt.resume_ckpt_path:  # initial weights (official key name), not the training state
        model.load_state_dict(load_state_dict_file(cfg.ckpt.resume_ckpt_path), strict=True)
    if cfg.run.enable_gradient_checkpointing:
        model.enable_gradient_checkpointing()
    model.to(env.device).train()
    ddp_model = engine.wrap_ddp(model, env)

    max_steps = int(cfg.run.max_train_steps)
    optimizer, lr_scheduler, scaler = engine.build_optimization(
        cfg, model.parameters(), float(cfg.optimizer.lr), max_steps, env.device)

    history = {"train_step_list": [], "train_loss_list": [], "val_step_list": [], "val_loss_list": []}
    start_step, resume = engine.resume_if_requested(cfg, out_dir, model, optimizer, lr_scheduler, scaler,
                                                    env, logger)
    if resume is not None:
        prev = torch.load(resume.with_name(f"checkpoint-{start_step}.pt"), map_location="cpu",
                          weights_only=True)
        for k in history:
            history[k] = list(prev.get(k, []))

    paired = bool(cfg.data.paired_negatives)
    dataset = _make_dataset(cfg, cfg.data.train_fileslist, cfg.data.train_data_dir, seed, paired)
    # validation videos: data.val_* when configured, else other clips of the training videos
    val_dataset = _make_dataset(cfg, *engine.val_source(cfg), seed + 1)
    accum = int(cfg.data.gradient_accumulation_steps)
    keys_per_batch = _keys_per_batch(int(cfg.data.batch_size), paired)
    sampler = engine.StepBatchSampler(len(dataset), keys_per_batch, env.rank, env.world_size,
                                      seed, start_step * accum, max_steps * accum)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_samples,
                                         num_workers=int(cfg.data.num_workers),
                                         persistent_workers=False)
    logger.log("start", step=start_step, max_train_steps=max_steps, world_size=env.world_size,
               num_videos=len(dataset), parameters=engine.count_trainable(model)[1],
               device=str(env.device), config=OmegaConf.to_container(cfg, resolve=True))

    step, losses, skipped, last_ckpt = start_step, [], 0, None
    it = iter(loader)
    t0 = time.time()
    while step < max_steps:
        loss_sum = acc_sum = spread_v = spread_a = 0.0
        for micro in range(accum):
            batch = unpair_batch(next(it))
            skipped += batch["num_skipped"]
            x = pack_syncnet_frames(batch["frames"].to(env.device), cfg.data.lower_half)
            audio = batch["audio"].to(env.device)
            y = batch["y"].to(env.device).float()
            sync_ctx = ddp_model.no_sync() if (env.distributed and micro < accum - 1) else nullcontext()
            with sync_ctx:
                with engine.autocast(env.device, cfg.run.mixed_precision_training):
                    v, a = ddp_model(x, audio)  # audio tower once per window (paired: 2 clips each)
                a = repeat_audio_embeds(a, batch["clips_per_audio"])
                loss = syncnet_bce_loss(v, a, y)
                scaler.scale(loss / accum).backward()
            loss_sum += float(loss.detach()) / accum
            acc_sum += float(syncnet_accuracy(v.detach(), a.detach(), y)) / accum
            spread_v += float(embedding_spread(v.detach())) / accum
            spread_a += float(embedding_spread(a.detach())) / accum
        grad_norm, lr = engine.optimizer_step(model.parameters(), optimizer, lr_scheduler, scaler,
                                              cfg.optimizer.max_grad_norm)
        step += 1

        loss_mean = engine.all_reduce_mean(loss_sum, env)
        acc_mean = engine.all_reduce_mean(acc_sum, env)
        losses.append(loss_mean)
        history["train_step_list"].append(step)
        history["train_loss_list"].append(loss_mean)
        if engine.is_due(step, int(cfg.run.log_every), max_steps):
            logger.log("train", step=step, loss=loss_mean, acc=acc_mean,
                       spread_v=round(engine.all_reduce_mean(spread_v, env), 4),
                       spread_a=round(engine.all_reduce_mean(spread_a, env), 4), lr=lr,
                       grad_norm=float(grad_norm), num_skipped=skipped,
                       sec_per_step=round((time.time() - t0) / (step - start_step), 4))
        if not torch.isfinite(torch.tensor(loss_mean)):
            raise FloatingPointError(f"SyncNet training: loss is {loss_mean} at step {step}")

        vs = int(cfg.run.validation_steps)
        if engine.is_due(step, vs, max_steps):  # 0 = never
            val = evaluate(model, val_dataset, cfg, env, int(cfg.data.num_val_samples),
                           int(cfg.data.val_batch_size), seed + 1)
            history["val_step_list"].append(step)
            history["val_loss_list"].append(val["loss"])
            logger.log("val", step=step, **val)
        if float(cfg.run.time_budget_s) > 0 and step < max_steps:
            over = float(time.time() - t0 > float(cfg.run.time_budget_s))
            if engine.all_reduce_mean(over, env) > 0:  # every rank stops at the same step
                logger.log("time_budget", step=step, seconds=round(time.time() - t0, 1))
                max_steps = step
        if vs > 0 and step == max_steps and step % vs != 0 and not history["val_step_list"][-1:] == [step]:
            val = evaluate(model, val_dataset, cfg, env, int(cfg.data.num_val_samples),
                           int(cfg.data.val_batch_size), seed + 1)
            history["val_step_list"].append(step)
            history["val_loss_list"].append(val["loss"])
            logger.log("val", step=step, **val)
        if engine.is_due(step, int(cfg.ckpt.save_ckpt_steps), max_steps):
            last_ckpt = engine.save_training_checkpoint(
                out_dir, step, model, optimizer, lr_scheduler, scaler, env, cfg,
                official_extra={k: list(v) for k, v in history.items()})
            logger.log("checkpoint", step=step, path=str(last_ckpt) if last_ckpt else None)

    logger.log("done", step=step, num_skipped=skipped)
    logger.close()
    return {"global_step": step, "losses": losses, "checkpoint": last_ckpt, "output_dir": str(out_dir),
            "num_skipped": skipped}


def cli(argv: Sequence[str] | None = None) -> int:
    return engine.run_cli(argv, "python -m training.train_syncnet",
                          str(Path(__file__).parent / "configs" / "tiny_syncnet.yaml"), DEFAULTS, main)


if __name__ == "__main__":
    sys.exit(cli())
