"""One trial: distil a student, prune it, quantize it, export it, and measure the served artifact."""

from __future__ import annotations

import shutil
import time

import numpy as np
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from objectives.bundle import write_metadata
from objectives.distill import DistillConfig, kd_loss_fn
from objectives.measure import Quality, Speed, evaluate, measure_speed
from objectives.prune import PRUNERS, PruneConfig, nonzero_parameters, prune
from objectives.quantize import CALIBRATION_METHODS, SCHEMES, QuantConfig, Servable, quantize
from search_spaces import SearchSpace, suggest
from study.config import MeasureSettings
from study.context import TrialContext
from study.data import DataSplit
from study.errors import UserError
from study.models import build_model, load_tokenizer, teacher_subset
from study.training import Encoded, encode, fit, pad_batch

OBJECTIVES = ("macro_f1", "latency_ms", "size_mb")
DIRECTIONS = ("maximize", "minimize", "minimize")


@dataclass(frozen=True)
class TrialOutcome:
    """What a finished trial hands to tracking: objective values, params, metrics, files."""

    values: tuple[float, float, float]  # in the order of OBJECTIVES
    params: dict[str, Any]
    metrics: dict[str, float]
    tags: dict[str, str]
    artifact_dir: Path  # the served artifact's bundle folder
    timings: dict[str, float] = field(default_factory=dict)
    predictions: Any = None  # test-split predictions of the served model (np.ndarray)


def check_space(space: SearchSpace) -> None:
    """Every categorical choice of the space must name a registered pruning kind / quantization scheme."""
    for name, registry in (("prune_kind", PRUNERS), ("quant_scheme", SCHEMES),
                           ("calibration", dict.fromkeys(CALIBRATION_METHODS))):
        unknown = [c for c in space.choices(name) if c not in registry]
        if unknown:
            raise UserError(f"search space {space.source}: {name} choice(s) {', '.join(map(str, unknown))} "
                            f"unknown; known: {', '.join(registry)}")


def objective(trial, ctx: TrialContext) -> TrialOutcome:
    """Run one trial: params from ``ctx.space``, every step seeded with ``ctx.trial_seed(trial.number)``."""
    params = suggest(trial, ctx.space)
    seed = ctx.trial_seed(trial.number)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[f"time_{name}_s"] = now - clock
        clock = now

    s = ctx.split
    if ctx.student is None:  # no distillation: compress the fp32 teacher itself
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(ctx.teacher.tokenizer_dir))
        model = AutoModelForSequenceClassification.from_pretrained(str(ctx.teacher.model_dir)).eval()
        train_enc = encode(tokenizer, s.train.texts, ctx.train.max_length)
        distilled = {"validation_macro_f1": ctx.teacher.network_f1}  # its network, not its TF-IDF member
    else:  # distil
        if ctx.student.from_teacher:  # the teacher's own layers: its tokenizer and weights
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(ctx.teacher.tokenizer_dir))
            model = teacher_subset(ctx.teacher.model_dir, ctx.student.teacher_layers)
        else:
            tokenizer = load_tokenizer(ctx.student, ctx.scratch_tokenizer_dir)
            model = build_model(ctx.student, ctx.split.label_names, vocab_size=len(tokenizer), seed=seed)
        kd = DistillConfig(temperature=float(params["temperature"]), kd_lambda=float(params["kd_lambda"]))
        train_enc = encode(tokenizer, s.train.texts, ctx.train.max_length)
        val_enc = encode(tokenizer, s.validation.texts, ctx.train.max_length)
        lr = ctx.train.learning_rate_scratch if ctx.student.from_scratch else ctx.train.learning_rate_pretrained
        result = fit(model, train=train_enc, train_labels=s.train.labels, validation=val_enc,
                     validation_labels=s.validation.labels, loss_fn=kd_loss_fn(ctx.teacher.train_logits, kd),
                     settings=ctx.train, learning_rate=lr, pad_id=tokenizer.pad_token_id, seed=seed,
                     progress=f"trial {trial.number} epochs" if ctx.show_progress else None)
        distilled = {"validation_macro_f1": result.best_validation_macro_f1, "best_epoch": float(result.best_epoch),
                     "epochs_run": float(result.epochs_run)}
    pad_id = tokenizer.pad_token_id
    lap("distil")
    # prune
    report = prune(model, PruneConfig(kind=str(params["prune_kind"]), ratio=float(params["prune_ratio"])))
    nonzero = nonzero_parameters(model)
    lap("prune")
    # quantize + export, then evaluate and time in the serving runtime
    out = ctx.trial_dir(trial.number)
    if out.exists():
        shutil.rmtree(out)
    quant = QuantConfig(str(params["quant_scheme"]), calibration=str(params.get("calibration", "minmax")))
    calibration = calibration_batches(train_enc, pad_id) if SCHEMES[quant.scheme].needs_calibration else None
    served = serve_and_measure(model, tokenizer, quant, out, ctx.split, ctx.train.max_length, ctx.measure,
                               calibration=calibration)
    timings.update(served.timings)
    servable, quality, speed = served.servable, served.quality, served.speed
    size_mb = servable.size_bytes / 1e6
    metrics = {**served.metrics(), "nonzero_params": float(nonzero),
               "pruned_sparsity": report.sparsity, **distilled, **timings}
    tags = {"runtime": servable.runtime, "quantizes": servable.quantizes,
            "latency_protocol": f"median of {ctx.measure.repeats} passes (each >= {ctx.measure.min_pass_seconds} s "
                                f"of whole sweeps) over {ctx.measure.latency_examples} batch-1 calls on test texts, "
                                f"{speed.threads} intra-op thread(s) (also all cores), "
                                f">= {ctx.measure.warmup} warm-up calls over >= {ctx.measure.warmup_seconds} s "
                                f"+ one untimed pass, retaken while the CV > {ctx.measure.max_cv:.0%} "
                                f"(<= {ctx.measure.max_attempts} attempts); "
                                f"throughput at batch {speed.batch_size}, dynamic padding"}
    return TrialOutcome(values=(quality.macro_f1, speed.latency_ms, size_mb), params=params, metrics=metrics,
                        tags=tags, artifact_dir=out, timings=timings, predictions=quality.predictions)


@dataclass(frozen=True)
class Served:
    servable: Servable
    quality: Quality
    speed: Speed  # at the configured threads (default 1)
    speed_all_cores: Speed  # at all cores
    timings: dict[str, float]

    def metrics(self) -> dict[str, float]:
        return {"macro_f1": self.quality.macro_f1, "accuracy": self.quality.accuracy, **self.speed.as_metrics(),
                **self.speed_all_cores.as_metrics(suffix="_allcores"),
                "size_mb": self.servable.size_bytes / 1e6, "size_bytes": float(self.servable.size_bytes),
                "size_compressed_mb": self.servable.compressed_bytes / 1e6}


def calibration_batches(train: Encoded, pad_id: int, examples: int = 128, batch_size: int = 8) -> list:
    """The first ``examples`` training texts in batches for static int8, all padded to one width (the
    histogram calibrators, entropy and percentile, need equal shapes across batches)."""
    n = min(examples, len(train))
    width = int(train.lengths()[:n].max())
    return [pad_batch(train, np.arange(s, min(s + batch_size, n)), pad_id, width) for s in range(0, n, batch_size)]


def serve_and_measure(model, tokenizer, quant: QuantConfig | str, out: Path, split: DataSplit, max_length: int,
                      settings: MeasureSettings, calibration=None) -> Served:
    """Quantize/export ``model`` with ``scheme`` into ``out``, then measure the served artifact.

    Used for trials and for the fp32 teacher reference alike, so every number has one protocol.
    """
    timings = {}
    start = time.perf_counter()
    servable = quantize(model, quant, out / "model", calibration)
    tokenizer.save_pretrained(str(out / "tokenizer"))
    write_metadata(out, scheme=servable.scheme, runtime=servable.runtime, quantizes=servable.quantizes,
                   max_length=max_length, labels=split.label_names)
    timings["time_quantize_s"] = time.perf_counter() - start
    start = time.perf_counter()
    test_enc = encode(tokenizer, split.test.texts, max_length)
    quality = evaluate(servable.predictor, test_enc, split.test.labels, tokenizer.pad_token_id)
    timings["time_evaluate_s"] = time.perf_counter() - start
    start = time.perf_counter()
    speed = measure_speed(servable.predictor, test_enc, tokenizer.pad_token_id, settings)
    speed_all = measure_speed(servable.predictor, test_enc, tokenizer.pad_token_id, settings.all_cores())
    timings["time_measure_s"] = time.perf_counter() - start
    return Served(servable, quality, speed, speed_all, timings)
