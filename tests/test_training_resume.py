"""Training resume state: plain data read back with ``weights_only=True``; a crafted file runs nothing."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from latentsync.errors import InvalidInputError
from training import engine


class _Payload:
    """Unpickling this creates ``path`` (what a malicious ``__reduce__`` would do, harmlessly)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def _run_state(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    lr_scheduler = engine.build_lr_scheduler(optimizer, "cosine", warmup_steps=2, max_steps=10)
    scaler = engine.make_grad_scaler(torch.device("cpu"), enabled=False)
    return model, optimizer, lr_scheduler, scaler


def _draws():
    return random.random(), float(np.random.randn()), float(torch.rand(1))


def test_resume_state_loads_with_weights_only_and_restores_everything(tmp_path):
    model, optimizer, lr_scheduler, scaler = _run_state(0)
    model(torch.randn(2, 4)).sum().backward()
    engine.optimizer_step(model.parameters(), optimizer, lr_scheduler, scaler, max_grad_norm=1.0)
    engine.seed_everything(7)
    _draws()
    ckpt = engine.save_training_checkpoint(tmp_path, 1, model, optimizer, lr_scheduler, scaler,
                                           engine.DistEnv(), {"run": {"seed": 7}})
    expected = _draws()  # what the run would draw next

    resume = engine.resume_path_for(ckpt)
    raw = torch.load(resume, map_location="cpu", weights_only=True)  # no pickled classes / arrays
    assert raw["global_step"] == 1 and raw["world_size"] == 1

    fresh, opt2, sched2, scaler2 = _run_state(1)
    engine.seed_everything(123)
    step = engine.load_training_state(resume, fresh, opt2, sched2, scaler2, engine.DistEnv())
    assert step == 1
    assert _draws() == expected  # Python, NumPy and torch streams continue exactly
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), model.parameters()))
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    assert sched2.state_dict()["last_epoch"] == lr_scheduler.state_dict()["last_epoch"] == 1


def test_crafted_resume_file_is_refused_and_runs_nothing(tmp_path):
    model, optimizer, lr_scheduler, scaler = _run_state(0)
    ckpt = engine.save_training_checkpoint(tmp_path, 1, model, optimizer, lr_scheduler, scaler,
                                           engine.DistEnv(), {})
    resume = engine.resume_path_for(ckpt)
    marker = tmp_path / "payload-ran"
    state = torch.load(resume, weights_only=False)  # our own file (the test's, trusted)
    state["config"] = _Payload(marker)
    torch.save(state, resume)

    found = engine.find_resume_file("latest", tmp_path)
    assert found == resume
    with pytest.raises(InvalidInputError) as exc:
        engine.load_training_state(found, model, optimizer, lr_scheduler, scaler, engine.DistEnv())
    msg = str(exc.value)
    assert "\n" not in msg and str(resume) in msg and "refused" in msg and "open" in msg
    assert not marker.exists()


def test_truncated_resume_file_is_one_clear_error(tmp_path):
    model, optimizer, lr_scheduler, scaler = _run_state(0)
    ckpt = engine.save_training_checkpoint(tmp_path, 1, model, optimizer, lr_scheduler, scaler,
                                           engine.DistEnv(), {})
    resume = engine.resume_path_for(ckpt)
    resume.write_bytes(resume.read_bytes()[:200])
    with pytest.raises(InvalidInputError, match="truncated or corrupt"):
        engine.load_resume_state(resume)


def test_training_cli_refuses_a_crafted_resume_file_with_one_line(tmp_path, capsys):
    from conftest import REPO_ROOT
    from training.train_syncnet import cli

    model, optimizer, lr_scheduler, scaler = _run_state(0)
    ckpt = engine.save_training_checkpoint(tmp_path, 1, model, optimizer, lr_scheduler, scaler,
                                           engine.DistEnv(), {})
    marker = tmp_path / "payload-ran"
    resume = engine.resume_path_for(ckpt)
    state = torch.load(resume, weights_only=False)  # our own file (the test's, trusted)
    state["rng"] = [_Payload(marker)]
    torch.save(state, resume)
    config = REPO_ROOT / "training" / "configs" / "tiny_syncnet.yaml"
    rc = cli(["--config", str(config), f"data.train_output_dir={tmp_path}", "run.resume_from=latest"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len([ln for ln in err if ln.startswith("error:")]) == 1, err
    assert "refused" in err[-1] and not marker.exists()
