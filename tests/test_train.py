"""The train stage's resume state: an interrupted run goes on where it was saved."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import stages.lib.model.training
import stages.train
from stages.lib.core.config import params_from_dict
from stages.lib.core.params import Params
from stages.lib.data import prepared as data
from stages.lib.model.resume import Resume, resume_key
from tests.conftest import TINY, compose, run_stage

EPOCHS = 3


def _params(*overrides: str) -> Params:
    return params_from_dict(
        compose([*TINY, f"train.epochs={EPOCHS}", "train.batch_size=32", "train.cutmix=0.5", *overrides])
    )


def _split() -> data.RawDataset:
    return data.synthetic(64, 32, 10, seed=0)


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """Make the training loop raise KeyboardInterrupt as epoch ``epoch`` starts."""
    real = stages.lib.model.training.progress

    def progress(items: Iterable[Any], total: int | None = None, desc: str = "") -> Iterator[Any]:
        if desc.startswith(f"epoch {epoch}/"):
            raise KeyboardInterrupt
        return real(items, total=total, desc=desc)

    monkeypatch.setattr(stages.lib.model.training, "progress", progress)


def _untimed(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in history]


def _train(p: Params, resume: Resume | None) -> stages.train.Trained:
    ds = _split()
    return stages.train.train(p, ds.train, ds.test, torch.device("cpu"), resume)


def test_interrupted_training_resumes_to_the_same_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _params()
    straight = _train(p, None)
    resume = Resume(tmp_path / "state.pt", key="k", every_s=0.0)

    with monkeypatch.context() as m:
        _interrupt_at(m, 3)
        with pytest.raises(KeyboardInterrupt):
            _train(p, resume)
    assert torch.load(resume.path, weights_only=True)["epoch"] == 2

    resumed = _train(p, resume)
    assert resumed.resumed_at == [2] and resumed.earlier_wall_s > 0
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]
    # the generators, optimizer and schedule came back too, so epoch 3 is the same epoch
    assert _untimed(resumed.history) == _untimed(straight.history)
    for name, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=1e-6, msg=name)


def test_a_state_saved_for_other_params_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    resume = Resume(tmp_path / "state.pt", key="lr 0.05", every_s=0.0)
    with monkeypatch.context() as m:
        _interrupt_at(m, 2)
        with pytest.raises(KeyboardInterrupt):
            _train(_params(), resume)
    other = Resume(resume.path, key="lr 0.1", every_s=0.0)
    done = _train(_params("train.lr=0.1"), other)
    assert done.resumed_at == [] and [row["epoch"] for row in done.history] == [1, 2, 3]


def test_resume_key_follows_params_and_data(tmp_path: Path) -> None:
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"images")
    b.write_bytes(b"other images")
    key = resume_key(_params(), [a])
    assert key == resume_key(_params(), [a])
    assert key != resume_key(_params("train.lr=0.1"), [a])
    assert key != resume_key(_params(), [b])


def test_stage_removes_its_resume_state_once_the_checkpoint_is_written(prepared_tiny: Path, tmp_path: Path) -> None:
    state = tmp_path / "train-resume.pt"
    args = ["--data", "data/prepared", "--checkpoint", str(tmp_path / "ckpt.pt")]
    args += ["--metrics", str(tmp_path / "train.json"), "--history", str(tmp_path / "history.csv")]
    run_stage("train", [*args, "--resume-state", str(state)], prepared_tiny)
    assert (tmp_path / "ckpt.pt").exists() and not state.exists()
    assert json.loads((tmp_path / "train.json").read_text())["resumed"] == 0


def test_sam_ascent_moves_the_weights_by_rho_and_descent_takes_it_back() -> None:
    from stages.lib.model import sam

    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    layer(torch.randn(8, 4)).square().sum().backward()
    params = list(layer.parameters())
    before = [p.detach().clone() for p in params]
    offsets = sam.ascend(params, rho=0.05)
    moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(params, before, strict=True)])
    torch.testing.assert_close(torch.linalg.vector_norm(moved), torch.tensor(0.05), rtol=1e-4, atol=0)
    grads = torch.cat([p.grad.flatten() for p in params])  # type: ignore[union-attr]
    assert torch.dot(moved, grads) > 0  # uphill
    sam.descend(params, offsets)
    for p, b in zip(params, before, strict=True):
        torch.testing.assert_close(p.detach(), b, rtol=0, atol=1e-7)


def test_sam_second_pass_leaves_batch_norm_statistics_alone() -> None:
    from stages.lib.model import sam

    bn = torch.nn.BatchNorm2d(3).train()
    bn(torch.randn(4, 3, 2, 2) + 5)
    mean, var = bn.running_mean.clone(), bn.running_var.clone()  # type: ignore[union-attr]
    with sam.frozen_batch_norm_stats(bn):
        bn(torch.randn(4, 3, 2, 2) - 5)
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    assert bn.momentum == 0.1
    bn(torch.randn(4, 3, 2, 2) - 5)
    assert not torch.equal(bn.running_mean, mean)  # counted again outside the second pass


def test_training_with_sam_takes_two_passes_per_step_and_other_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    from stages.lib.model import networks as models

    forwards: list[int] = []
    real_build = models.build_model

    def counted(p: Any) -> torch.nn.Module:
        model = real_build(p)
        model.register_forward_hook(lambda m, i, o: forwards.append(1) if m.training else None)
        return model

    monkeypatch.setattr(stages.lib.model.training, "build_model", counted)
    plain = _train(_params("train.epochs=1"), None)
    plain_forwards = len(forwards)
    forwards.clear()
    with_sam = _train(_params("train.epochs=1", "train.sam_rho=0.05"), None)
    assert plain_forwards == 64 // 32 and len(forwards) == 2 * plain_forwards
    weights = with_sam.model.state_dict()
    assert any(not torch.equal(v, weights[k]) for k, v in plain.model.state_dict().items() if v.is_floating_point())
