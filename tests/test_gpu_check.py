"""``benchmarks/gpu_check.py``: runs configs through the zoo CLI on fixtures, checks them, writes the table, and
records a failing config as FAIL while the others go on. On the CPU here; the GPU assertions need CUDA."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import CONFIGS, REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def gpu_check(tmp_path: Path, *args: str, timeout: int = 600) -> tuple[subprocess.CompletedProcess, str, list[dict]]:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--steps", "8", "--warmup", "2", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    tables = sorted(out.glob("*.md"))
    assert len(tables) == 1, f"no table written:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc, tables[0].read_text(), json.loads(tables[0].with_suffix(".json").read_text())


def test_cpu_smoke_writes_the_table_and_records_a_broken_config_as_fail(tmp_path):
    broken = tmp_path / "broken_lenet.yaml"  # fails when the model is built, as a wrong config would
    text = (CONFIGS / "lenet_reduced_mnist.yaml").read_text()
    assert "activation: relu" in text
    broken.write_text(text.replace("activation: relu", "activation: gelu"))
    proc, table, results = gpu_check(tmp_path, "--accelerator", "cpu", "--configs",
                                     f"[lenet_reduced_mnist, {broken}]", "--precisions", "[32-true]",
                                     "--compile_precision", "32-true", "--compile_backend", "eager", "--workers", "2")
    assert proc.returncode == 1, "a failed run must fail the check"
    assert f"torch {torch.__version__}" in table and "CPU" in table.splitlines()[0]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.splitlines() if line.startswith("| ") and not line.startswith("| config")}
    assert rows["lenet_reduced_mnist"][0] == "callback" and float(rows["lenet_reduced_mnist"][1].replace(",", "")) > 0
    for variant in ("device_resident", "compile", "device_resident+compile"):
        assert re.search(r"^[\d,]+ \(\d+\.\d\dx[;)]", rows[f"lenet_reduced_mnist + {variant}"][1]), rows  # speed-up
    assert rows["broken_lenet"][1] == "FAIL"
    assert "broken_lenet, 32-true**: RuntimeError: the zoo CLI exited (2)" in table and "gelu" in table
    ok = [r for r in results if r["config"] == "lenet_reduced_mnist"]
    assert len(ok) == 4 and all(r["status"] == "OK" for r in ok), ok
    plain = next(r for r in ok if r["variant"] == "")
    assert {"train/loss", "val/loss", "val/acc", "test/acc", "test/f1", "test/balanced_acc"} <= set(plain["metrics"])
    assert plain["timed_steps"] > 0 and plain["optimizer_steps"] == [8]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_dcgan_steps_both_optimizers_under_the_fp16_grad_scaler(tmp_path):
    proc, table, results = gpu_check(tmp_path, "--configs", "[dcgan_mnist]", "--workers", "1")
    assert proc.returncode == 0, table
    fp16 = next(r for r in results if r["precision"] == "16-mixed")
    assert fp16["grad_scale"] is not None and min(fp16["optimizer_steps"]) > 0 and len(fp16["optimizer_steps"]) == 2
    assert fp16["channels_last"] == "callback"


def test_compile_and_channels_last_callbacks_leave_weights_checkpoint_keys_and_outputs_alone(tmp_path):
    """TorchCompile compiles in place and ChannelsLast only changes memory layout: the same state_dict keys
    (a checkpoint loads without them), the same outputs, in the standard layout the code after forward expects."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from zoo.compile import ChannelsLast, TorchCompile
    from zoo.nets.lenet import LeNet5
    from zoo.nets.masked_ae import MaskedAENet
    from zoo.tasks.classifier import Classifier
    from zoo.tasks.masked_ae import MaskedAE

    torch.manual_seed(0)
    model, eager = Classifier(LeNet5()), Classifier(LeNet5())
    eager.load_state_dict(model.state_dict())
    keys = list(model.state_dict())
    layout, compiled = ChannelsLast(), TorchCompile(backend="eager")
    data = DataLoader(TensorDataset(torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))), batch_size=8)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[layout, compiled])
    trainer.fit(model, data)
    assert layout.applied == "callback" and compiled.compiled == ["forward"] and list(model.state_dict()) == keys
    assert model.net.conv[0].weight.is_contiguous(memory_format=torch.channels_last)
    eager.load_state_dict(model.state_dict())
    x = torch.randn(4, 1, 28, 28)
    assert torch.allclose(model.eval()(x), eager.eval()(x), atol=1e-5)
    with pytest.raises(ValueError, match=r"no sub-module\(s\) \['nope'\]; children: \[.*'net'"):
        TorchCompile(submodules=["nope"]).setup(trainer, Classifier(LeNet5()), "fit")

    # a conv net whose 3-channel output feeds metrics that view(-1) it: forward hands back the standard layout
    ae = MaskedAE(MaskedAENet(architecture="conv", image_size=32, channels=3, conv_channels=[8, 16], bottleneck=16),
                  mask_type="patch", patch_size=4).eval()
    x = torch.rand(2, 3, 32, 32)
    before = ae(x)
    ChannelsLast().setup(trainer, ae, "fit")
    after = ae(x)
    assert after.is_contiguous() and torch.allclose(after, before, atol=1e-5)
