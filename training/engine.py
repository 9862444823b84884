"""Shared training infrastructure: config, DDP, seeds, deterministic batches, checkpoints, logging.

Spec 3.1 describes the official launch (torchrun, NCCL, seed = ``run.seed + rank``). This module
keeps that behaviour and adds what the official scripts lack (spec 7.13/7.14):

* **DDP from the environment** (nanoGPT style): a process group is created iff ``RANK`` and
  ``WORLD_SIZE`` are set (torchrun). Backend NCCL on CUDA, gloo on CPU. Only rank 0 logs and saves.
* **Deterministic data order**: :func:`batch_keys` maps ``(step, rank, i)`` to a dataset item and a
  per-sample seed, so a run can restart at any step without replaying a sampler, and the datasets
  (unlike the official ones, which ignore the index and draw ``random.randint``) are a pure function
  of ``(seed, key)``.
* **Checkpoints in the official format** (``{"global_step", "state_dict", ...}`` via
  :func:`latentsync.checkpoints.save_official_checkpoint`) at ``checkpoints/checkpoint-<step>.pt``,
  and next to it ``checkpoint-<step>.resume.pt`` with optimizer, LR scheduler, GradScaler, step,
  config and the RNG states of **every** rank. Both are written to a temporary name and renamed.
* **JSON-lines logs** at ``<output_dir>/log.jsonl`` (one object per event, flushed per line).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import pickle
import random
import re
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch import nn

from latentsync.errors import InvalidInputError, LatentSyncError

__all__ = [
    "DistEnv",
    "load_config",
    "load_yaml",
    "parse_cli",
    "setup_distributed",
    "cleanup_distributed",
    "seed_everything",
    "capture_rng_state",
    "restore_rng_state",
    "JsonlLogger",
    "build_lr_scheduler",
    "get_lr_multiplier",
    "batch_keys",
    "StepBatchSampler",
    "sample_seed",
    "atomic_torch_save",
    "save_training_checkpoint",
    "find_resume_file",
    "load_resume_state",
    "load_training_state",
    "autocast",
    "make_grad_scaler",
    "unwrap_model",
    "all_reduce_mean",
    "file_content_hash",
    "as_config",
    "run_cli",
    "atomic_write",
    "run_distributed",
    "start_run",
    "wrap_ddp",
    "build_optimization",
    "resume_if_requested",
    "optimizer_step",
    "val_source",
    "is_due",
]


# --------------------------------------------------------------------------------------------------
# Config


#: Folder a training YAML's ``base:`` key is resolved against (the bundled official configs).
BASE_CONFIG_DIR = Path(__file__).resolve().parents[1] / "latentsync" / "configs"


def load_yaml(path: str | os.PathLike) -> DictConfig:
    """``OmegaConf.load(path)`` with layering: a top-level ``base: NAME`` key loads the config
    ``NAME`` first and merges this file's other keys on top (lists are replaced, mappings merged).

    ``NAME`` is ``unet/stage2`` style (-> ``latentsync/configs/unet/stage2.yaml``), or a path to a
    YAML file (absolute, or relative to ``path``'s folder). Bases may themselves have a ``base``.

    Raises:
        InvalidInputError: the base config does not exist.
    """
    path = Path(path)
    cfg = OmegaConf.load(path)
    base = cfg.pop("base", None) if isinstance(cfg, DictConfig) else None
    if not base:
        return cfg
    name = str(base)
    candidates = [path.parent / name, BASE_CONFIG_DIR / name, BASE_CONFIG_DIR / f"{name}.yaml"]
    base_path = next((c for c in candidates if c.suffix in (".yaml", ".yml") and c.is_file()), None)
    if base_path is None:
        raise InvalidInputError(f"training config {str(path)!r}: base {name!r} not found "
                                f"(expected latentsync/configs/{name}.yaml or a YAML path)")
    return OmegaConf.merge(load_yaml(base_path), cfg)


def load_config(path: str | os.PathLike, overrides: Sequence[str] = (),
                defaults: dict | None = None) -> DictConfig:
    """Load a YAML config and apply OmegaConf dot-list overrides (``run.max_train_steps=2``).

    ``defaults`` (the training script's own knobs, e.g. ``run.device``) are merged under the file,
    so an official YAML without them still works. The merged keys are the schema: an override naming
    a key that is in neither is an error (nanoGPT's "unknown key" rule).

    Raises:
        InvalidInputError: missing file, or an override with an unknown key / no ``=``.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"training config {str(path)!r}: file not found")
    cfg = load_yaml(path)
    if defaults:
        cfg = OmegaConf.merge(OmegaConf.create(defaults), cfg)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise InvalidInputError(f"config overrides {bad}: expected key=value (e.g. run.seed=3)")
    OmegaConf.set_struct(cfg, True)
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except Exception as exc:  # omegaconf raises ConfigAttributeError / ConfigKeyError
        raise InvalidInputError(
            f"config overrides {list(overrides)} for {str(path)!r}: {exc}".replace("\n", " ")
        ) from exc
    OmegaConf.set_struct(cfg, False)
    return cfg


def as_config(cfg: DictConfig | dict | str | os.PathLike, overrides: Sequence[str] = (),
              defaults: dict | None = None) -> DictConfig:
    """A training script's config from a YAML path (:func:`load_config`), a dict or a DictConfig.

    ``defaults`` are merged under the given keys; ``overrides`` (dot-list ``key=value``) must name
    existing keys (struct mode), as for :func:`load_config`.
    """
    if isinstance(cfg, (str, os.PathLike)):
        return load_config(cfg, overrides, defaults)
    merged = OmegaConf.merge(OmegaConf.create(defaults or {}), OmegaConf.create(
        OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg))
    if overrides:
        OmegaConf.set_struct(merged, True)
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        OmegaConf.set_struct(merged, False)
    return merged


def run_cli(argv: Sequence[str] | None, prog: str, default_config: str, defaults: dict | None,
            main: Any) -> int:
    """Entry point of a training script: ``main(parse_cli(...))``. Returns exit status 0, or 2 after
    one ``error: ...`` line on stderr for a :class:`~latentsync.errors.LatentSyncError` (a bad config
    key, a refused resume file, ...), as ``python -m latentsync`` does."""
    try:
        main(parse_cli(argv, prog, default_config, defaults))
    except LatentSyncError as err:
        print("error: " + "; ".join(ln.strip() for ln in str(err).splitlines() if ln.strip()), file=sys.stderr)
        return 2
    return 0


def parse_cli(argv: Sequence[str] | None, prog: str, default_config: str,
              defaults: dict | None = None) -> DictConfig:
    """``--config PATH [key=value ...]`` -> resolved config (see :func:`load_config`)."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=default_config, help="YAML config file")
    parser.add_argument("overrides", nargs="*", help="OmegaConf dot-list overrides key=value")
    args = parser.parse_args(argv)
    return load_config(args.config, args.overrides, defaults)


# --------------------------------------------------------------------------------------------------
# Distributed


@dataclass
class DistEnv:
    """Process-group facts for this process (``world_size == 1`` when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    distributed: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None = None) -> DistEnv:
    """Initialise DDP from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).

    Args:
        device: "cpu", "cuda" or None (CUDA when available). The backend is NCCL for CUDA and gloo
            for CPU. Local rank = ``LOCAL_RANK`` (spec 3.1 uses RANK mod #GPUs; same on one node).
    """
    want_cuda = torch.cuda.is_available() if device in (None, "auto") else device.startswith("cuda")
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank = int(os.environ["RANK"])
        world = int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
        if want_cuda:
            local = local % torch.cuda.device_count()
            torch.cuda.set_device(local)
            dev = torch.device("cuda", local)
        else:
            dev = torch.device("cpu")
        if not dist.is_initialized():
            dist.init_process_group(
                backend="nccl" if want_cuda else "gloo", timeout=datetime.timedelta(minutes=30)
            )
        return DistEnv(rank, world, local, dev, True)
    dev = torch.device("cuda", 0) if want_cuda else torch.device("cpu")
    return DistEnv(device=dev)


def cleanup_distributed(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_reduce_mean(value: float, env: DistEnv) -> float:
    """Mean of a Python float over ranks (identity without DDP)."""
    if not env.distributed:
        return float(value)
    return all_reduce_sum(value, env) / env.world_size


def all_reduce_sum(value: float, env: DistEnv) -> float:
    """Sum of a Python float over ranks (float64 all-reduce; identity without DDP)."""
    if not env.distributed:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64,
                     device=env.device if env.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return float(t.item())


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DDP (checkpoints never carry a ``module.`` prefix)."""
    return model.module if hasattr(model, "module") else model


# --------------------------------------------------------------------------------------------------
# Seeds and RNG


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU + all CUDA devices). Spec 3.1: seed = run.seed + rank."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA RNG states of this process, as tensors and plain containers
    only (``torch.load(weights_only=True)`` reads them back; no pickled classes or NumPy arrays).

    Returns: ``{"python": (version, tuple of 625 ints, gauss), "numpy": {"bit_generator": "MT19937",
    "state": {"key": int64 tensor [624], "pos": int}, "has_gauss": int, "gauss": float},
    "torch": uint8 tensor, "cuda": [uint8 tensor per device] (only when CUDA is initialised)}``.
    """
    np_state = np.random.get_state(legacy=False)
    np_state["state"] = {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                         "pos": int(np_state["state"]["pos"])}
    state = {"python": random.getstate(), "numpy": np_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    random.setstate(tuple(state["python"]))
    np_state = dict(state["numpy"])
    np_state["state"] = {"key": np.asarray(np_state["state"]["key"], dtype=np.uint32),
                         "pos": int(np_state["state"]["pos"])}
    np.random.set_state(np_state)
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block (e.g. validation) without disturbing the training RNG streams."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


def sample_seed(*parts: int | str) -> int:
    """A 63-bit seed derived from integers/strings (stable across processes and Python versions)."""
    h = hashlib.blake2b(":".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


def step_generator(seed: int, rank: int, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch Generator for the random draws of one training step (noise, timesteps, dropout of
    the audio condition), a pure function of ``(seed, rank, step)``: exact on resume."""
    g = torch.Generator(device=device)
    g.manual_seed(sample_seed("step", seed, rank, step))
    return g


# --------------------------------------------------------------------------------------------------
# Deterministic batches


def batch_keys(step: int, rank: int, world_size: int, batch_size: int, num_items: int,
               seed: int) -> list[tuple[int, int]]:
    """Dataset keys of one rank's batch at a given (0-based) step.

    Global sample position ``p = (step * world_size + rank) * batch_size + i``; epoch
    ``e = p // num_items``; item = ``permutation(seed, e)[p % num_items]``; per-sample seed =
    ``sample_seed(seed, p)``. Every item is used once per epoch across all ranks (sampling without
    replacement, unlike the official datasets), and the whole stream is a pure function of the
    arguments, so resuming at step k needs no sampler state.

    Returns: list of ``(item_index, sample_seed)`` of length ``batch_size``.
    """
    if num_items <= 0:
        raise InvalidInputError("training dataset: expected at least one video, found none")
    keys = []
    perms: dict[int, np.ndarray] = {}
    for i in range(batch_size):
        p = (step * world_size + rank) * batch_size + i
        epoch, pos = divmod(p, num_items)
        if epoch not in perms:
            perms[epoch] = np.random.default_rng(sample_seed("perm", seed, epoch)).permutation(num_items)
        keys.append((int(perms[epoch][pos]), sample_seed("sample", seed, p)))
    return keys


class StepBatchSampler(torch.utils.data.Sampler):
    """Batch sampler yielding :func:`batch_keys` for steps ``start_step .. end_step - 1``."""

    def __init__(self, num_items: int, batch_size: int, rank: int, world_size: int, seed: int,
                 start_step: int, end_step: int) -> None:
        self.num_items, self.batch_size = num_items, batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.start_step, self.end_step = start_step, end_step

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.end_step):
            yield batch_keys(step, self.rank, self.world_size, self.batch_size, self.num_items, self.seed)

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)


# --------------------------------------------------------------------------------------------------
# LR schedule, precision


def get_lr_multiplier(step: int, schedule: str, warmup_steps: int, max_steps: int,
                      min_ratio: float = 0.0) -> float:
    """LR factor at ``step`` (0-based), nanoGPT style.

    1. linear warm-up over ``warmup_steps``; 2. then ``constant`` (official default, spec 3.4 step 9),
    ``linear`` decay to ``min_ratio`` at ``max_steps``, or ``cosine`` decay to ``min_ratio``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule in ("constant", "constant_with_warmup"):
        return 1.0
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if schedule == "linear":
        return 1.0 - (1.0 - min_ratio) * progress
    if schedule == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise InvalidInputError(
        f"optimizer.lr_scheduler {schedule!r}: expected constant, constant_with_warmup, linear or cosine"
    )


def build_lr_scheduler(optimizer: torch.optim.Optimizer, schedule: str = "constant",
                       warmup_steps: int = 0, max_steps: int = 1,
                       min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: get_lr_multiplier(s, schedule, warmup_steps, max_steps, min_ratio)
    )


def autocast(device: torch.device, enabled: bool):
    """fp16 autocast on CUDA (official), bf16 on CPU; a no-op when disabled."""
    if not enabled:
        return nullcontext()
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast("cpu", dtype=torch.bfloat16)


def make_grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    """GradScaler, active only for fp16 on CUDA (disabled scaler = identity; fixes spec 7.14's crash)."""
    return torch.amp.GradScaler(device.type, enabled=bool(enabled and device.type == "cuda"))


# --------------------------------------------------------------------------------------------------
# Logging


class JsonlLogger:
    """Append JSON objects, one per line, to ``path`` (rank 0 only); also echo to stdout."""

    def __init__(self, path: str | os.PathLike | None, enabled: bool = True, echo: bool = True) -> None:
        self.enabled = enabled and path is not None
        self.echo = echo and enabled
        self.path = Path(path) if path is not None else None
        self._fh = None
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")

    def log(self, event: str, **fields: Any) -> None:
        if not self.enabled and not self.echo:
            return
        rec = {"event": event, "time": round(time.time(), 3), **fields}
        line = json.dumps(rec, default=_json_default)
        if self._fh is not None:
            self._fh.write(line + "\n")
            self._fh.flush()
        if self.echo:
            print(line, file=sys.stdout, flush=True)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if torch.is_tensor(o):
        return o.item() if o.numel() == 1 else o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All records of a JSON-lines log (for tests and the benchmark)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------------
# Checkpoints


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any], tmp_prefix: str = "") -> Path:
    """Call ``write(tmp)`` for ``<tmp_prefix><name>.tmp-<pid>`` next to ``path``, then ``os.replace``
    it onto ``path`` (never a half-written file; the temporary is removed on error). Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{tmp_prefix}{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path.tmp-<pid>`` then ``os.replace`` (never a half-written file)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def resume_path_for(checkpoint_path: str | os.PathLike) -> Path:
    """``checkpoints/checkpoint-<step>.pt`` -> ``checkpoints/checkpoint-<step>.resume.pt``."""
    p = Path(checkpoint_path)
    return p.with_name(p.stem + ".resume.pt")


def save_training_checkpoint(
    output_dir: str | os.PathLike,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: Any,
    scaler: torch.amp.GradScaler | None,
    env: DistEnv,
    config: DictConfig | dict,
    official_extra: dict | None = None,
    state_dict_filter: Any = None,
) -> Path | None:
    """Save the official checkpoint + the resume state (collective: call on every rank).

    Files (rank 0 writes): ``<output_dir>/checkpoints/checkpoint-<step>.pt`` =
    ``{"global_step": step, "state_dict": ..., **official_extra}`` (spec 2.5/3.6, loadable by the
    official code and :func:`latentsync.checkpoints.load_unet` / ``load_syncnet``) and
    ``checkpoint-<step>.resume.pt`` = ``{"global_step", "optimizer", "lr_scheduler", "scaler",
    "config", "rng": [state of rank 0, rank 1, ...], "world_size"}``, tensors and plain containers
    only (read back with ``weights_only=True``, see :func:`load_resume_state`). The resume file is
    written last, so its presence marks a complete checkpoint.

    Returns: the official checkpoint path on rank 0, None elsewhere.
    """
    from latentsync.checkpoints import save_official_checkpoint

    rng = capture_rng_state()
    if env.distributed:
        gathered: list[Any] = [None] * env.world_size
        dist.all_gather_object(gathered, rng)
    else:
        gathered = [rng]
    path = None
    if env.is_main:
        ckpt_dir = Path(output_dir) / "checkpoints"
        path = ckpt_dir / f"checkpoint-{step}.pt"
        sd = unwrap_model(model).state_dict()
        if state_dict_filter is not None:
            sd = state_dict_filter(sd)
        sd = {k: v.detach().to("cpu", copy=True) for k, v in sd.items()}
        save_official_checkpoint(sd, path, global_step=step, **(official_extra or {}))
        cfg = OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else config
        atomic_torch_save(
            {
                "global_step": step,
                "optimizer": optimizer.state_dict(),
                "lr_scheduler": lr_scheduler.state_dict() if lr_scheduler is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "config": cfg,
                "rng": gathered,
                "world_size": env.world_size,
                "checkpoint": path.name,
            },
            resume_path_for(path),
        )
    barrier(env)
    return path


def find_resume_file(spec: str | None, output_dir: str | os.PathLike) -> Path | None:
    """Resolve ``run.resume_from``: "" / None -> None; "latest" -> highest-step complete checkpoint
    under ``<output_dir>/checkpoints`` (None if there is none); else a ``.resume.pt`` path or the
    matching official ``checkpoint-<step>.pt``.

    Raises:
        InvalidInputError: an explicit path that does not exist.
    """
    if not spec:
        return None
    if spec == "latest":
        ckpt_dir = Path(output_dir) / "checkpoints"
        best, best_step = None, -1
        for p in ckpt_dir.glob("checkpoint-*.resume.pt"):
            try:
                s = int(p.name[len("checkpoint-"): -len(".resume.pt")])
            except ValueError:
                continue
            if s > best_step and (p.with_name(f"checkpoint-{s}.pt")).exists():
                best, best_step = p, s
        return best
    p = Path(spec)
    if p.suffixes[-2:] != [".resume", ".pt"]:
        p = resume_path_for(p)
    if not p.is_file():
        raise InvalidInputError(f"run.resume_from {spec!r}: resume state {str(p)!r} not found")
    return p


def load_resume_state(resume_file: str | os.PathLike) -> dict[str, Any]:
    """Read a ``.resume.pt`` with ``torch.load(weights_only=True)``: tensors and plain containers
    only, so a crafted file (a pickled ``__reduce__`` payload) is refused and runs nothing.

    Raises:
        InvalidInputError: a file holding other Python objects (crafted, or written before resume
            states were plain data), or a truncated / corrupt file.
    """
    try:
        state = torch.load(resume_file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        raise InvalidInputError(
            f"resume state {str(resume_file)!r}: holds Python objects other than tensors and plain "
            f"containers ({found.group(1) if found else 'not weights_only-loadable'}); refused without "
            "running any of it. Resume from a checkpoint this version wrote, or start without run.resume_from"
        ) from None
    except (EOFError, RuntimeError, OSError, ValueError) as err:
        raise InvalidInputError(
            f"resume state {str(resume_file)!r}: truncated or corrupt ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''})"
        ) from None
    if not isinstance(state, dict) or not {"checkpoint", "optimizer", "rng", "global_step"} <= state.keys():
        raise InvalidInputError(f"resume state {str(resume_file)!r}: not a resume state written by save_training_checkpoint")
    return state


def load_training_state(resume_file: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                        lr_scheduler: Any, scaler: torch.amp.GradScaler | None,
                        env: DistEnv) -> int:
    """Restore model (from the official checkpoint beside ``resume_file``), optimizer, scheduler,
    scaler and this rank's RNG state. Returns the global step to continue from.

    Raises:
        InvalidInputError: an unsafe or corrupt resume file (:func:`load_resume_state`), or a world
            size that differs from the saved run (RNG states are per rank).
    """
    from latentsync.checkpoints import load_state_dict_file

    state = load_resume_state(resume_file)
    ckpt = resume_file.with_name(state["checkpoint"])
    sd = load_state_dict_file(ckpt)
    missing, unexpected = unwrap_model(model).load_state_dict(sd, strict=False)
    if unexpected or [k for k in missing if not k.endswith(".pe")]:
        raise InvalidInputError(
            f"resume checkpoint {str(ckpt)!r}: keys do not match the model "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    optimizer.load_state_dict(state["optimizer"])
    if lr_scheduler is not None and state.get("lr_scheduler") is not None:
        lr_scheduler.load_state_dict(state["lr_scheduler"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    rngs = state["rng"]
    if len(rngs) != env.world_size:
        raise InvalidInputError(
            f"resume state {str(resume_file)!r}: saved with world size {len(rngs)}, "
            f"this run has {env.world_size}; relaunch with the same number of processes"
        )
    restore_rng_state(rngs[env.rank])
    return int(state["global_step"])


# --------------------------------------------------------------------------------------------------
# Content hashes (cache keys; spec 7.13: the official caches are keyed by basename)

_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def file_content_hash(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes, memoised per (path, size, mtime_ns) in this process."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_MEMO:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _HASH_MEMO[key] = h.hexdigest()
    return _HASH_MEMO[key]


def count_trainable(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter elements."""
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return train, total


# --------------------------------------------------------------------------------------------------
# Run scaffolding shared by the training scripts


def run_distributed(cfg: DictConfig, train: Callable[[DictConfig, DistEnv], Any]) -> Any:
    """Apply ``run.num_threads`` (> 0: ``torch.set_num_threads``), set up DDP from the environment
    (``run.device``), return ``train(cfg, env)`` and always tear the process group down."""
    if int(cfg.run.num_threads) > 0:
        torch.set_num_threads(int(cfg.run.num_threads))
    env = setup_distributed(cfg.run.device)
    try:
        return train(cfg, env)
    finally:
        cleanup_distributed(env)


def start_run(cfg: DictConfig, env: DistEnv) -> tuple[Path, int, JsonlLogger]:
    """Seed this rank (``run.seed + rank``), create ``data.train_output_dir`` and save the resolved
    ``config.yaml`` there (rank 0), open ``log.jsonl``. Returns ``(output_dir, run.seed, logger)``."""
    out_dir = Path(cfg.data.train_output_dir)
    seed = int(cfg.run.seed)
    seed_everything(seed + env.rank)
    if env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, out_dir / "config.yaml")
    return out_dir, seed, JsonlLogger(out_dir / "log.jsonl", enabled=env.is_main)


def wrap_ddp(model: nn.Module, env: DistEnv) -> nn.Module:
    """``DistributedDataParallel(model)`` under torchrun (device_ids on CUDA), else ``model``."""
    if not env.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[env.local_rank] if env.device.type == "cuda" else None)


def build_optimization(cfg: DictConfig, params: Any, lr: float, max_steps: int,
                       device: torch.device) -> tuple[torch.optim.Optimizer, Any, torch.amp.GradScaler]:
    """AdamW(``params``, ``lr``, ``optimizer.weight_decay``), the ``optimizer.lr_scheduler`` schedule
    (``optimizer.lr_warmup_steps``) over ``max_steps`` and the GradScaler of
    ``run.mixed_precision_training``."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=float(cfg.optimizer.weight_decay))
    lr_scheduler = build_lr_scheduler(optimizer, cfg.optimizer.lr_scheduler,
                                      int(cfg.optimizer.lr_warmup_steps), max_steps)
    return optimizer, lr_scheduler, make_grad_scaler(device, cfg.run.mixed_precision_training)


def resume_if_requested(cfg: DictConfig, out_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                        lr_scheduler: Any, scaler: torch.amp.GradScaler | None, env: DistEnv,
                        logger: JsonlLogger) -> tuple[int, Path | None]:
    """Resume from ``run.resume_from`` (see :func:`find_resume_file`, :func:`load_training_state`)
    and log it. Returns ``(start_step, resume_file)``; ``(0, None)`` when not resuming."""
    resume = find_resume_file(cfg.run.resume_from, out_dir)
    if resume is None:
        return 0, None
    start_step = load_training_state(resume, model, optimizer, lr_scheduler, scaler, env)
    logger.log("resume", step=start_step, file=str(resume))
    return start_step, resume


def optimizer_step(params: Any, optimizer: torch.optim.Optimizer, lr_scheduler: Any,
                   scaler: torch.amp.GradScaler, max_grad_norm: float) -> tuple[torch.Tensor, float]:
    """Unscale, clip the grad norm to ``max_grad_norm``, step optimizer + scaler, zero the grads and
    advance the LR schedule. Returns ``(grad_norm before clipping, lr used by this step)``."""
    scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, float(max_grad_norm))
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    lr = lr_scheduler.get_last_lr()[0]
    lr_scheduler.step()
    return grad_norm, lr


def val_source(cfg: DictConfig) -> tuple[str, str]:
    """``(fileslist, data_dir)`` of the validation videos: ``data.val_*`` when either is set, else
    the training videos (other clips of them, through a different seed)."""
    if cfg.data.val_fileslist or cfg.data.val_data_dir:
        return cfg.data.val_fileslist, cfg.data.val_data_dir
    return cfg.data.train_fileslist, cfg.data.train_data_dir


def is_due(step: int, every: int, max_steps: int) -> bool:
    """Periodic event at ``step``: every ``every`` steps and at the last step; ``every <= 0`` = never."""
    return every > 0 and (step % every == 0 or step == max_steps)
