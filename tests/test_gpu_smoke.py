"""benchmarks.gpu_smoke: imports only the training pieces, refuses a machine without CUDA, and reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_it_imports_no_study_store_or_serving_runtime():
    code = ("import sys, benchmarks.gpu_smoke\n"
            "print(sorted(m for m in ('optuna', 'mlflow', 'skops', 'onnxruntime', 'onnx', 'plotly') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_without_cuda_it_exits_2_with_a_message_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from benchmarks.gpu_smoke import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["--out", str(tmp_path / "out")]) == 2
    assert "error: no CUDA GPU is visible to PyTorch" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # a benchmark: trains a teacher and a student twice
def test_two_runs_on_the_cpu_with_one_seed_agree_exactly(tmp_path):
    """The smoke check's pipeline, run with the CPU in both roles: the same seed gives the same teacher logits
    and scores (what --device cpu and --device auto promise on a CPU machine)."""
    from benchmarks.gpu_smoke import Recipe, smoke, table
    from study.core.config import TrainSettings

    settings = TrainSettings(max_epochs=1, patience=1, max_length=32, max_train_examples=200, mlm_epochs=1)
    result = smoke(tmp_path, devices=("cpu", "cpu"), recipe=Recipe(teacher="scratch-tiny", settings=settings))
    assert result == json.loads((tmp_path / "gpu_smoke.json").read_text())
    fast, ref = result["accelerator"], result["reference"]
    assert result["failed"] == [] and fast["train_device"] == ref["train_device"] == "cpu"
    assert list(fast["seconds"]) == ["teacher_mlm_pretrain", "teacher_fine_tune", "teacher_logits", "student_distil"]
    assert all(v > 0 for v in fast["seconds"].values())
    assert result["teacher_logits_max_abs_diff_same_weights"] == result["teacher_logits_max_abs_diff_trained_apart"] == 0
    assert result["teacher_logits_max_abs_reference"] > 0
    assert fast["student_validation_macro_f1"] == ref["student_validation_macro_f1"] > 0
    assert fast["models_back_on_cpu_fp32"] and ref["models_back_on_cpu_fp32"]
    assert "teacher_fine_tune" in table(result)
