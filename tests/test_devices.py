"""--device: resolution, a GPU per worker, the autocast choice, and training that gives the CPU's numbers on the CPU.

Runs on a CPU-only machine (accelerators are monkeypatched away or in); the tests marked ``needs_cuda`` run only
where PyTorch sees a CUDA GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from study.core import devices
from study.core.devices import as_device, autocast, autocast_dtype, device_facts, resolve_device, worker_device
from study.core.errors import UserError

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def cpu_only(monkeypatch):
    """This machine as a CPU-only one, whatever it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def _machine(monkeypatch, cuda: bool, mps: bool, gpus: int = 1) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus if cuda else 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


def test_auto_takes_cuda_then_mps_then_the_cpu(monkeypatch):
    for cuda, mps, expected in ((True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")):
        _machine(monkeypatch, cuda, mps)
        assert resolve_device("auto") == expected
    assert resolve_device("cpu") == "cpu"  # cpu is always there


def test_a_named_accelerator_the_machine_lacks_is_a_user_error(monkeypatch):
    _machine(monkeypatch, cuda=False, mps=False)
    with pytest.raises(UserError, match="--device cuda: this machine has no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(UserError, match="--device mps: this machine has no Apple MPS"):
        resolve_device("mps")
    with pytest.raises(UserError, match="--device must be one of auto, cpu, cuda, mps, got 'gpu'"):
        resolve_device("gpu")
    _machine(monkeypatch, cuda=True, mps=False)
    assert resolve_device("cuda") == "cuda"


def test_worker_i_trains_on_visible_gpu_i_mod_their_count(monkeypatch):
    _machine(monkeypatch, cuda=True, mps=False, gpus=2)
    assert [worker_device("cuda", i) for i in range(5)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert [worker_device("auto", i) for i in range(3)] == ["cuda:0", "cuda:1", "cuda:0"]
    _machine(monkeypatch, cuda=True, mps=False, gpus=3)
    assert worker_device("cuda", 4) == "cuda:1"
    _machine(monkeypatch, cuda=False, mps=False)
    assert {worker_device("auto", i) for i in range(4)} == {"cpu"}  # the CPU is shared; threads are split instead
    _machine(monkeypatch, cuda=False, mps=True)
    assert worker_device("auto", 3) == "mps"


def test_gpus_hidden_by_cuda_visible_devices_are_not_taken():
    """An empty CUDA_VISIBLE_DEVICES hides every GPU from PyTorch: auto is the CPU, cuda an error (also on a
    machine with GPUs)."""
    code = ("from study.core.devices import resolve_device; from study.core.errors import UserError\n"
            "print(resolve_device('auto'))\n"
            "try:\n    resolve_device('cuda')\nexcept UserError as exc:\n    print('refused:', exc)\n")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    first, second = out.stdout.splitlines()
    assert first in ("cpu", "mps") and second.startswith("refused: --device cuda") and "CUDA_VISIBLE_DEVICES" in second


def test_autocast_is_bf16_only_on_a_cuda_gpu_that_has_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: not including_emulation)
    assert autocast_dtype("cuda:0") == torch.bfloat16 and autocast_dtype(torch.device("cuda", 1)) == torch.bfloat16
    assert autocast_dtype("cpu") is None and autocast_dtype("mps") is None and autocast_dtype(None) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)  # e.g. a V100, T4
    assert autocast_dtype("cuda:0") is None
    with autocast("cpu"):  # no autocast on the CPU: training there is exactly fp32
        assert not torch.is_autocast_enabled("cpu")
    assert device_facts("cpu")["train_precision"] == "fp32" and device_facts("cpu")["train_device"] == "cpu"
    assert device_facts("cpu")["train_device_name"]  # the CPU's model name


def test_as_device_reads_names_torch_devices_and_none(cpu_only):
    assert as_device(None) == torch.device("cpu") and as_device("auto") == torch.device("cpu")
    assert as_device("cuda:1") == torch.device("cuda", 1) and as_device(torch.device("cpu")) == torch.device("cpu")


def test_kd_loss_moves_the_teacher_logits_to_the_students_device():
    from study.core.training import kd_loss

    student = torch.randn(4, 3, device="meta")  # shapes only: stands in for a GPU here
    loss = kd_loss(student, torch.zeros(4, dtype=torch.long, device="meta"), torch.randn(4, 3), 2.0, 0.5)
    assert loss.device.type == "meta" and loss.shape == ()


def _fit_tiny(demo_split, tokenizer_dir, device):
    from study.core.config import TrainSettings
    from study.core.models import ZOO, build_model, load_tokenizer
    from study.core.training import encode, fit, torch_logits

    tok = load_tokenizer(ZOO["scratch-tiny"], tokenizer_dir)
    model = build_model(ZOO["scratch-tiny"], demo_split.label_names, vocab_size=len(tok), seed=1)
    train, validation = (encode(tok, part.texts[:200], 32) for part in (demo_split.train, demo_split.validation))
    result = fit(model, train=train, train_labels=demo_split.train.labels[:200], validation=validation,
                 validation_labels=demo_split.validation.labels[:200], settings=TrainSettings(max_epochs=2, patience=2),
                 loss_fn=lambda logits, labels, _i: F.cross_entropy(logits, labels), learning_rate=5e-4,
                 pad_id=tok.pad_token_id, seed=1, device=device)
    return model, result, torch_logits(model, validation, tok.pad_token_id, device=device)


def test_fit_and_torch_logits_take_a_device_and_give_the_cpus_numbers_on_it(demo_split, tokenizer_dir, cpu_only):
    runs = [_fit_tiny(demo_split, tokenizer_dir, device) for device in (torch.device("cpu"), "auto")]
    (model, result, logits), others = runs[0], runs[1:]
    assert 0.0 < result.best_validation_macro_f1 <= 1.0
    for other_model, other_result, other_logits in others:
        assert other_result.best_validation_macro_f1 == result.best_validation_macro_f1
        assert np.array_equal(other_logits, logits)
        for (name, a), (_, b) in zip(model.state_dict().items(), other_model.state_dict().items()):
            assert torch.equal(a, b), name
    for m, *_ in runs:  # handed back where it is pruned, quantized, exported and timed
        assert not m.training and all(p.device.type == "cpu" and p.dtype == torch.float32 for p in m.parameters())


def test_device_cuda_on_a_machine_without_cuda_exits_2_and_creates_nothing(tmp_path, monkeypatch, capsys):
    from study.run import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    assert main(["--quick", "--n-trials", "1", "--device", "cuda", "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --device cuda: this machine has no CUDA GPU"), err
    assert list(tmp_path.iterdir()) == []  # no mlruns/, no cache, no study


def test_the_cli_resolves_auto_once_into_the_config(cpu_only):
    from study.run import build_parser, config_from_args

    assert config_from_args(build_parser().parse_args(["--device", "auto"])).device == "cpu"
    assert config_from_args(build_parser().parse_args([])).device == "cpu"  # auto is the default


class _Pinned:
    """A trial whose parameters are all fixed by its space (as the ablation's cells): no sampler needed."""

    number = 0

    def __init__(self):
        self.user_attrs = {}

    def set_user_attr(self, key, value):
        self.user_attrs[key] = value


class _ConstantTimer:
    """A stand-in for the timing process: the same numbers for every artifact."""

    def time(self, bundle_dir):
        from objectives.timing import PairedTiming

        return PairedTiming(latency_ms=1.0, latency_iqr_ms=0.0, latency_cv=0.0, throughput_per_s=1000.0,
                            batch_size=32, threads=1, latency_e2e_ms=1.1, teacher_latency_ms=2.0,
                            teacher_onnx_latency_ms=2.0, speedup=2.0, speedup_ci=(2.0, 2.0), relative_latency=0.5,
                            relative_latency_ci=(0.5, 0.5), speedup_onnx=2.0, speedup_onnx_ci=(2.0, 2.0), blocks=6,
                            coverage=0.97, pid=0, process_task=1)


@pytest.fixture(scope="module")
def tiny_study(demo_split, tmp_path_factory):
    """A tiny teacher (network only), the study's split of the demo corpus and a pinned search space."""
    from search_spaces import load_space
    from study.core.config import TrainSettings
    from study.core.data import limit_part
    from study.core.models import ZOO
    from study.core.teacher import prepare_teacher, scratch_tokenizer

    cache = tmp_path_factory.mktemp("device-cache")
    split = replace(demo_split, train=limit_part(demo_split.train, 240, 0),
                    validation=limit_part(demo_split.validation, 90, 0), test=limit_part(demo_split.test, 90, 0))
    settings = TrainSettings(max_epochs=1, patience=1, max_length=32, baseline_kd_lambda=0.0, tfidf_member_weight=0.0)
    teacher = prepare_teacher(ZOO["scratch-mini"], split, settings, cache, seed=0, log=lambda *_: None)
    space = load_space("default").pinned(temperature=2.0, kd_lambda=0.5, prune_kind="l1_unstructured",
                                         prune_ratio=0.3, quant_scheme="none", calibration="minmax")
    return split, settings, teacher, scratch_tokenizer(split, cache), space


def _trial(tiny_study, device: str, workdir: Path):
    from types import MappingProxyType

    from objectives.context import TrialContext
    from objectives.trial import objective
    from study.core.config import MeasureSettings
    from study.core.models import ZOO

    split, settings, teacher, tokenizer_dir, space = tiny_study
    ctx = TrialContext(study_name="devices", split=split, teacher=teacher, student=ZOO["scratch-tiny"],
                       scratch_tokenizer_dir=tokenizer_dir, space=space, train=settings, measure=MeasureSettings(),
                       seed=3, workdir=workdir, data_facts=MappingProxyType({}), timer=_ConstantTimer(),
                       device=device)
    return objective(_Pinned(), ctx)


def _weights(outcome) -> dict:
    from safetensors.numpy import load_file

    (path,) = (outcome.artifact_dir / "model").glob("*.safetensors")
    return load_file(str(path))


def test_device_cpu_and_auto_give_the_same_trial_on_a_cpu_machine(tiny_study, tmp_path, cpu_only):
    on_cpu = _trial(tiny_study, worker_device("cpu"), tmp_path / "cpu")
    on_auto = _trial(tiny_study, worker_device("auto"), tmp_path / "auto")
    assert on_cpu.values[0] == on_auto.values[0]  # validation macro-F1 of the served artifact
    assert on_cpu.metrics["distill_validation_macro_f1"] == on_auto.metrics["distill_validation_macro_f1"]
    assert on_cpu.params == on_auto.params and on_cpu.metrics["nonzero_params"] == on_auto.metrics["nonzero_params"]
    cpu_weights, auto_weights = _weights(on_cpu), _weights(on_auto)
    assert cpu_weights.keys() == auto_weights.keys()
    assert all(np.array_equal(cpu_weights[k], auto_weights[k]) for k in cpu_weights)


@needs_cuda
def test_a_trial_distils_on_the_gpu_and_is_served_from_the_cpu(tiny_study, tmp_path):
    """On a GPU machine: distilled on cuda:0 (bf16 autocast where supported), pruned, exported and scored on the
    CPU, within a few points of the CPU's macro-F1 (not bit-equal: other kernels and precision)."""
    on_gpu = _trial(tiny_study, worker_device("cuda"), tmp_path / "gpu")
    on_cpu = _trial(tiny_study, "cpu", tmp_path / "cpu")
    assert 0.0 < on_gpu.values[0] <= 1.0 and abs(on_gpu.values[0] - on_cpu.values[0]) < 0.15
    weights = _weights(on_gpu)
    assert all(w.dtype == np.float32 for w in weights.values())


@needs_cuda
def test_fit_on_the_gpu_hands_the_model_back_on_the_cpu(demo_split, tokenizer_dir):
    model, result, logits = _fit_tiny(demo_split, tokenizer_dir, "cuda")
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
    assert 0.0 < result.best_validation_macro_f1 <= 1.0 and logits.dtype == np.float32
    assert devices.device_facts("cuda:0")["train_device"] == "cuda"
