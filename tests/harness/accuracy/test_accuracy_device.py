"""`attnbench accuracy --device`: the model and batches on the device, the device in the rows,
and a training loop that reads the GPU only every `check_every` steps."""

import json
import sys

import pytest
import torch
from typer.testing import CliRunner

from harness.accuracy.tasks import train
from harness.cli import app

from ...conftest import DEVICES
from .test_accuracy_cli import read_csv, smoke

runner = CliRunner()


def linear_fit(steps, check_every, nan_at=None):
    """fit() on a one-weight model whose loss is NaN from step `nan_at` on."""
    model = torch.nn.Linear(1, 1)
    x = torch.ones(4, 1)

    def step_loss(step):
        loss = model(x).pow(2).mean()
        return loss * float("nan") if nan_at is not None and step >= nan_at else loss

    return train.fit(model, step_loss, steps, lr=1e-2, check_every=check_every)


@pytest.mark.parametrize("steps, nan_at", [(40, 7), (40, 10), (8, 7), (3, 0)])
def test_a_non_finite_loss_raises_naming_its_step(steps, nan_at):
    with pytest.raises(FloatingPointError, match=f"loss is nan at step {nan_at}$"):
        linear_fit(steps, check_every=5, nan_at=nan_at)


def test_the_loop_reads_the_host_only_at_the_checks(monkeypatch):
    """Tensor.item / bool(tensor) called from fit itself: the final mean only (before: one
    `if not isfinite(loss)` per step, one `.item()` per tail step). Checks: one per k steps."""
    reads, checks, real_check = [], [], train.check_finite

    def spy(name):
        real = getattr(torch.Tensor, name)

        def wrapper(self, *args):
            if sys._getframe(1).f_code.co_name == "fit":
                reads.append(name)
            return real(self, *args)

        monkeypatch.setattr(torch.Tensor, name, wrapper)

    spy("item")
    spy("__bool__")
    monkeypatch.setattr(train, "check_finite", lambda losses, first_step: checks.append(len(losses)))
    loss = linear_fit(steps=40, check_every=10)
    assert reads == ["item"] and checks == [10, 10, 10, 10]
    assert loss > 0
    monkeypatch.setattr(train, "check_finite", real_check)


def test_fit_rejects_a_zero_check_interval():
    with pytest.raises(ValueError, match="check_every=0 must be >= 1"):
        linear_fit(steps=2, check_every=0)


@pytest.mark.parametrize("device", DEVICES)
def test_rows_record_the_device_they_trained_on(tmp_path, device):
    result = runner.invoke(
        app, smoke(tmp_path, "--tasks", "mqar,captions", "--variants", "gqa", "--device", device)
    )
    assert result.exit_code == 0, result.output
    rows = read_csv(result)
    assert {(r["device"], r["status"]) for r in rows} == {(device, "ok")}
    assert all(r["device_name"] for r in rows)
    run_json = json.loads(next((tmp_path / "out").glob("*/run.json")).read_text())
    assert run_json["config"]["device"] == device


def test_auto_is_resolved_and_recorded(tmp_path):
    result = runner.invoke(app, smoke(tmp_path, "--tasks", "mqar", "--variants", "gqa", "--device", "auto"))
    assert result.exit_code == 0, result.output
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert {r["device"] for r in read_csv(result)} == {expected}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_one_line_and_exit_2(tmp_path):
    result = runner.invoke(app, smoke(tmp_path, "--tasks", "mqar", "--device", "cuda"))
    assert result.exit_code == 2
    assert "device='cuda' was asked for but torch sees no CUDA device" in result.output
    assert "Traceback" not in result.output


def test_unknown_device_is_rejected(tmp_path):
    result = runner.invoke(app, smoke(tmp_path, "--device", "tpu"))
    assert result.exit_code == 2 and "device='tpu' is not one of ['auto', 'cpu', 'cuda']" in result.output
