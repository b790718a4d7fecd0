"""``python -m benchmarks.gpu_smoke --out DIR``: does training on a CUDA GPU work, and how does it compare with the CPU?

On the demo corpus, with one seed, a tiny scratch teacher is pre-trained (masked LM, 1 epoch) and fine-tuned, its
logits are computed, and a tiny scratch student is distilled from them: once on ``cuda`` and once on ``cpu``,
through the study's own functions (``fit``, ``mlm_pretrain``, ``torch_logits``, the KD loss). It prints and writes
``DIR/gpu_smoke.json``: the GPU's name, seconds per phase on each device, validation macro-F1 on each, whether each
model came back on the CPU in fp32, and how far the teacher logits differ (the same CPU-trained weights run on each
device, and the two devices' own teachers). Imports only the training pieces (torch, transformers, tokenizers,
numpy, scipy, scikit-learn, pandas): no optuna, mlflow, onnxruntime or skops, so a bare GPU image runs it.
Exits 2 with a message when PyTorch sees no CUDA GPU, 1 when a device's phases failed (its traceback is in the
JSON; the other device still runs).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from objectives.distill import DistillConfig, kd_loss_fn
from study.core.config import TrainSettings
from study.core.data import DataSplit, limit_part, split_corpus
from study.core.demo import demo_corpus
from study.core.devices import available, device_facts, worker_device
from study.core.errors import EXIT_USER_ERROR
from study.core.models import ZOO, build_model, load_tokenizer, train_wordpiece
from study.core.pretrain import mlm_pretrain
from study.core.training import Encoded, encode, fit, macro_f1, torch_logits

TEACHER, STUDENT = "scratch-base", "scratch-tiny"
SETTINGS = TrainSettings(max_epochs=3, patience=2, max_length=64, mlm_epochs=1)  # --quick's recipe, all demo texts
TEMPERATURE, KD_LAMBDA = 4.0, 0.5


@dataclass(frozen=True)
class Recipe:
    """What both devices run: the models, the training settings and the seed."""

    teacher: str = TEACHER
    student: str = STUDENT
    settings: TrainSettings = SETTINGS
    seed: int = 42


@dataclass(frozen=True)
class Inputs:
    """What both devices share: the split, its tokenizer and the encoded texts."""

    split: DataSplit
    tokenizer: object
    train: Encoded
    validation: Encoded


def inputs(recipe: Recipe, workdir: Path) -> Inputs:
    """The demo corpus split with the recipe's seed, a WordPiece tokenizer trained on its training texts."""
    split = split_corpus(demo_corpus(), seed=recipe.seed)
    split = replace(split, train=limit_part(split.train, recipe.settings.max_train_examples, recipe.seed))
    train_wordpiece(split.train.texts, workdir)
    tokenizer = load_tokenizer(ZOO[recipe.student], workdir)
    length = recipe.settings.max_length
    return Inputs(split, tokenizer, encode(tokenizer, split.train.texts, length),
                  encode(tokenizer, split.validation.texts, length))


def on_cpu_in_fp32(model) -> bool:
    import torch

    return all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())


def cross_entropy(logits, labels, _index):
    import torch.nn.functional as F

    return F.cross_entropy(logits, labels)


# Over 50 lines on purpose: the phases read top to bottom, each timed by the lap after it.
def run_on(device: str, data: Inputs, recipe: Recipe) -> tuple[dict, object, np.ndarray]:
    """Every training phase on ``device``: its facts, the teacher (back on the CPU) and its validation logits."""
    s, pad, cfg, seed = data.split, data.tokenizer.pad_token_id, recipe.settings, recipe.seed
    seconds = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 3)
        clock = now

    def train(model, loss_fn):
        return fit(model, train=data.train, train_labels=s.train.labels, validation=data.validation,
                   validation_labels=s.validation.labels, loss_fn=loss_fn, settings=cfg,
                   learning_rate=cfg.learning_rate_scratch, pad_id=pad, seed=seed, device=device)

    teacher = build_model(ZOO[recipe.teacher], s.label_names, vocab_size=len(data.tokenizer), seed=seed)
    if cfg.mlm_epochs:
        mlm_pretrain(teacher, data.tokenizer, data.train, epochs=cfg.mlm_epochs,
                     learning_rate=cfg.learning_rate_scratch, batch_size=cfg.batch_size, weight_decay=cfg.weight_decay,
                     warmup_ratio=cfg.warmup_ratio, seed=seed, log=lambda *_: None, device=device)
    lap("teacher_mlm_pretrain")
    fitted = train(teacher, cross_entropy)
    lap("teacher_fine_tune")
    train_logits = torch_logits(teacher, data.train, pad, device=device)
    validation_logits = torch_logits(teacher, data.validation, pad, device=device)
    lap("teacher_logits")
    student = build_model(ZOO[recipe.student], s.label_names, vocab_size=len(data.tokenizer), seed=seed)
    distilled = train(student, kd_loss_fn(train_logits, DistillConfig(TEMPERATURE, KD_LAMBDA)))
    lap("student_distil")
    facts = {**device_facts(device), "device": device, "seconds": seconds,
             "seconds_total": round(sum(seconds.values()), 3),
             "teacher_validation_macro_f1": macro_f1(s.validation.labels, validation_logits.argmax(axis=1)),
             "teacher_best_validation_macro_f1_in_training": fitted.best_validation_macro_f1,
             "student_validation_macro_f1": distilled.best_validation_macro_f1,
             "epochs_run": {"teacher": fitted.epochs_run, "student": distilled.epochs_run},
             "models_back_on_cpu_fp32": on_cpu_in_fp32(teacher) and on_cpu_in_fp32(student)}
    return facts, teacher, validation_logits


def smoke(out: Path, devices: tuple[str, str] = ("cuda", "cpu"), recipe: Recipe = Recipe()) -> dict:
    """Train on each of ``devices`` (the accelerator first, then the reference), compare, write the JSON. A device
    whose phases fail is recorded with its error (``failed``), so one run on a lent GPU always reports."""
    import torch
    import transformers

    accelerator, reference = (worker_device(d) for d in devices)
    started = time.perf_counter()
    torch.zeros(1, device=accelerator).sum().item()  # the device's start-up, not timed in a phase
    result = {"device_start_seconds": round(time.perf_counter() - started, 3), "recipe": asdict(recipe),
              "torch_version": torch.__version__, "torch_cuda_version": torch.version.cuda,
              "transformers_version": transformers.__version__, "python_version": sys.version.split()[0],
              "cuda_device_count": torch.cuda.device_count() if available("cuda") else 0,
              "worker_devices": [worker_device(devices[0], i) for i in range(4)], "failed": []}
    with tempfile.TemporaryDirectory(prefix="gpu-smoke-") as tmp:
        data = inputs(recipe, Path(tmp))
    runs = {}
    for role, device in (("accelerator", accelerator), ("reference", reference)):
        try:
            runs[role] = run_on(device, data, recipe)
            result[role] = runs[role][0]
        except Exception:  # recorded and reported: the other device still runs
            result[role] = {"device": device, "error": traceback.format_exc()}
            result["failed"].append(role)
    if not result["failed"]:
        (fast, _, logits_fast), (ref, teacher_ref, logits_ref) = runs["accelerator"], runs["reference"]
        # the reference's teacher (CPU-trained weights) computed on the accelerator: the numerics alone
        same_weights = torch_logits(teacher_ref, data.validation, data.tokenizer.pad_token_id, device=accelerator)
        result.update(
            speedup_total=round(ref["seconds_total"] / fast["seconds_total"], 2),
            teacher_logits_max_abs_diff_same_weights=float(np.abs(same_weights - logits_ref).max()),
            teacher_logits_max_abs_diff_trained_apart=float(np.abs(logits_fast - logits_ref).max()),
            teacher_logits_max_abs_reference=float(np.abs(logits_ref).max()))
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_smoke.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def table(result: dict) -> str:
    """The phases side by side, the scores, and how far the teacher logits differ (or what failed)."""
    if result["failed"]:
        return "\n".join(f"{role} ({result[role]['device']}) FAILED:\n{result[role]['error']}"
                         for role in result["failed"])
    fast, ref = result["accelerator"], result["reference"]
    lines = [f"{'phase':<22} {fast['device'] + ' s':>12} {ref['device'] + ' s':>12}"]
    for phase in fast["seconds"]:
        lines.append(f"{phase:<22} {fast['seconds'][phase]:>12.2f} {ref['seconds'][phase]:>12.2f}")
    lines.append(f"{'total':<22} {fast['seconds_total']:>12.2f} {ref['seconds_total']:>12.2f}")
    for key in ("teacher_validation_macro_f1", "student_validation_macro_f1"):
        lines.append(f"{key:<34} {fast[key]:.4f} {ref[key]:.4f}")
    lines.append(f"{fast['device']}: {fast['train_device_name']} ({fast['train_precision']}); {ref['device']}: "
                 f"{ref['train_device_name']}; models back on the CPU in fp32: "
                 f"{fast['models_back_on_cpu_fp32'] and ref['models_back_on_cpu_fp32']}")
    lines.append(f"teacher logits, max |difference|: same weights "
                 f"{result['teacher_logits_max_abs_diff_same_weights']:.4f}, trained apart "
                 f"{result['teacher_logits_max_abs_diff_trained_apart']:.4f} (largest logit "
                 f"{result['teacher_logits_max_abs_reference']:.2f}); worker devices {result['worker_devices']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_smoke", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for gpu_smoke.json")
    p.add_argument("--seed", type=int, default=42, help="split, weights and batches (the same on both devices)")
    args = p.parse_args(argv)
    if not available("cuda"):
        import torch

        print(f"error: no CUDA GPU is visible to PyTorch {torch.__version__} (torch.cuda.is_available() is False"
              "; a CPU-only build, no driver, or CUDA_VISIBLE_DEVICES hides them): this smoke check compares cuda "
              "with cpu, so run it on a machine with an NVIDIA GPU", file=sys.stderr)
        return EXIT_USER_ERROR
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    result = smoke(args.out, recipe=Recipe(seed=args.seed))
    print(table(result))
    print(f"wrote {args.out / 'gpu_smoke.json'}")
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
