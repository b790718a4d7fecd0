"""One trial: distil a student, prune it, quantize it, export it, and measure the served artifact."""

from __future__ import annotations

import shutil
import time

import numpy as np
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from objectives.bundle import write_metadata
from objectives.distill import DistillConfig
from objectives.measure import Interval, Quality, bootstrap_macro_f1, evaluate
from objectives.student import distilled_student
from objectives.timing import PairedTimer, PairedTiming
from objectives.prune import PRUNERS, PruneConfig, nonzero_parameters, prune
from objectives.quantize import (CALIBRATION_METHODS, SCHEMES, QuantConfig, SchemeUnavailable, Servable, quantize,
                                 unavailable_schemes)
from search_spaces import SearchSpace, suggest
from study.core.config import MeasureSettings
from objectives.context import TrialContext
from study.core.data import DataSplit
from study.core.errors import UserError, space_errors
from study.core.timing_lock import training_step
from study.core.training import Encoded, encode, macro_f1, pad_batch

# The objectives' MLflow metric names:
# - validation macro-F1 of the served artifact (selection never sees test labels; ``macro_f1``, the test score, is
#   only reported);
# - batch-1 latency relative to the fp32 teacher (PyTorch) timed in the same blocks of the same process: measured
#   in benchmarks.timing, a machine's load moved absolute latencies by 16-37% while this ratio moved under 8%, so
#   trial order, other workers and busy moments do not move the front (``latency_ms`` is logged beside it);
# - bytes of the exported artifact.
OBJECTIVES = ("macro_f1_validation", "latency_vs_teacher", "size_mb")
DIRECTIONS = ("maximize", "minimize", "minimize")


@dataclass(frozen=True)
class TrialOutcome:
    """What a finished trial hands to tracking: objective values, params, metrics, files."""

    values: tuple[float, float, float]  # in the order of OBJECTIVES
    params: dict[str, Any]
    metrics: dict[str, float]
    tags: dict[str, str]
    artifact_dir: Path  # the served artifact's bundle folder
    predictions: Any = None  # test-split predictions of the served model (np.ndarray)


def servable_space(space: SearchSpace) -> tuple[SearchSpace, dict[str, str]]:
    """``space`` without the quantization schemes this machine cannot serve, and those schemes with why."""
    dropped = unavailable_schemes(space.choices("quant_scheme"))
    with space_errors():
        return space.without_choices("quant_scheme", set(dropped)), dropped


def check_space(space: SearchSpace) -> None:
    """Every categorical choice of the space must name a registered pruning kind / quantization scheme."""
    for name, registry in (("prune_kind", PRUNERS), ("quant_scheme", SCHEMES),
                           ("calibration", dict.fromkeys(CALIBRATION_METHODS))):
        unknown = [c for c in space.choices(name) if c not in registry]
        if unknown:
            raise UserError(f"search space {space.source}: {name} choice(s) {', '.join(map(str, unknown))} "
                            f"unknown; known: {', '.join(registry)}")


# Over 50 lines on purpose: a trial reads top to bottom as its steps (suggest, distil, prune, quantize, serve and
# measure); each step is one call into its own module.
def objective(trial, ctx: TrialContext) -> TrialOutcome:
    """Run one trial: params from ``ctx.space``; the distillation seeded with ``ctx.distill_seed(trial.number)``
    (the study's seed: trials sharing student, T and lambda share one cached student), every later step with
    ``ctx.trial_seed(trial.number)``."""
    if ctx.timer is None:
        raise ValueError("a trial's latency objective is paired with the teacher: give its context a timer")
    params = suggest(trial, ctx.space)
    seed = ctx.trial_seed(trial.number)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[f"time_{name}_s"] = now - clock
        clock = now

    scheme = SCHEMES[str(params["quant_scheme"])]
    if (why := scheme.unavailable()) is not None:  # fail before distilling, not after
        raise SchemeUnavailable(why)
    s = ctx.split
    if ctx.student is None:  # no distillation: compress the fp32 teacher itself
        tokenizer, model = ctx.teacher.load_tokenizer(), ctx.teacher.load_network()
        train_enc = encode(tokenizer, s.train.texts, ctx.train.max_length)
        distilled = {"distill_validation_macro_f1": ctx.teacher.network_f1}  # its network, not its TF-IDF member
        distill_tags = {}
    else:  # distil, or load the student a trial distilled before with the same key
        kd = DistillConfig(temperature=float(params["temperature"]), kd_lambda=float(params["kd_lambda"]))
        student = distilled_student(ctx, kd, ctx.distill_seed(trial.number),
                                    progress=f"trial {trial.number} epochs" if ctx.show_progress else None)
        tokenizer, model, distilled, distill_tags = student.tokenizer, student.model, student.metrics, student.tags
        train_enc = encode(tokenizer, s.train.texts, ctx.train.max_length)
    pad_id = tokenizer.pad_token_id  # the model is on the CPU in fp32 from here on: the serving target
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
    served = serve_and_measure(model, tokenizer, quant, out, ctx.split, ctx.train.max_length,
                               calibration=calibration, timer=ctx.timer,
                               teacher_predictions=ctx.teacher_test_predictions, seed=seed)
    timings.update(served.timings)
    servable, quality = served.servable, served.quality
    size_mb = servable.size_bytes / 1e6
    metrics = {**served.metrics(), "nonzero_params": float(nonzero),
               "pruned_sparsity": report.sparsity, **distilled, **timings}
    tags = {"runtime": servable.runtime, "quantizes": servable.quantizes, **distill_tags,
            "latency_protocol": latency_protocol(ctx.measure)}
    values = (served.validation.macro_f1, metrics[OBJECTIVES[1]], size_mb)
    return TrialOutcome(values=values, params=params, metrics=metrics, tags=tags, artifact_dir=out,
                        predictions=quality.predictions)


def latency_protocol(m: MeasureSettings) -> str:
    """The timing protocol in words (a tag of every run)."""
    return (f"timed from the bundle's files in a separate process (recycled every {m.timing_process_tasks} "
            f"artifacts, holding the machine-wide timing lock) in {m.paired_blocks} blocks alternating with the "
            f"fp32 teacher in PyTorch and in ONNX Runtime, and more (up to {m.max_paired_blocks}) while the "
            f"interval of latency_vs_teacher is wider than +-{m.interval_tolerance:.0%} of it; latency = median "
            f"of the candidate's calls, speed-ups = median of the blocks' paired ratios; {m.threads} intra-op "
            f"thread(s), batch 1 over the first {m.latency_examples} test texts at their own "
            f"lengths{f' padded to {m.fixed_length} tokens' if m.fixed_length else ''}, passes of whole sweeps "
            f"lasting >= {m.min_pass_seconds} s after >= {m.warmup} warm-up calls over >= {m.warmup_seconds} s "
            f"and one untimed pass (a teacher: once per timing process); throughput at batch "
            f"{m.throughput_batch_size} and end-to-end latency over {m.min_repeats}-{m.repeats} passes, stopping "
            f"once their CV <= {m.stop_cv:.0%}; latency_e2e_ms from raw text (normalisation and tokenization "
            f"included)")


@dataclass(frozen=True)
class Served:
    """A quantized, exported artifact with its quality (validation: for choosing; test: for reporting) and speed."""

    servable: Servable
    validation: Quality  # what the search selects on
    quality: Quality  # on the test part: reported, never used to choose
    timing: PairedTiming  # isolated and paired with the teacher
    timings: dict[str, float]
    f1_interval: Interval | None = None
    delta_interval: Interval | None = None  # macro-F1 minus the teacher's, on the same resampled test texts
    delta: float | None = None

    def metrics(self) -> dict[str, float]:
        out = {"macro_f1_validation": self.validation.macro_f1, "accuracy_validation": self.validation.accuracy,
               "macro_f1": self.quality.macro_f1, "accuracy": self.quality.accuracy,
               "size_mb": self.servable.size_bytes / 1e6, "size_bytes": float(self.servable.size_bytes),
               "size_compressed_mb": self.servable.compressed_bytes / 1e6}
        out.update(self.timing.as_metrics())
        if self.f1_interval is not None:
            out.update(macro_f1_ci_low=self.f1_interval.low, macro_f1_ci_high=self.f1_interval.high)
        if self.delta_interval is not None:
            out.update(macro_f1_delta_vs_teacher=self.delta, macro_f1_delta_vs_teacher_ci_low=self.delta_interval.low,
                       macro_f1_delta_vs_teacher_ci_high=self.delta_interval.high)
        return out


def calibration_batches(train: Encoded, pad_id: int, examples: int = 128, batch_size: int = 8) -> list:
    """The first ``examples`` training texts in batches for static int8, all padded to one width (the
    histogram calibrators, entropy and percentile, need equal shapes across batches)."""
    n = min(examples, len(train))
    width = int(train.lengths()[:n].max())
    return [pad_batch(train, np.arange(s, min(s + batch_size, n)), pad_id, width) for s in range(0, n, batch_size)]


def export_bundle(model, tokenizer, quant: QuantConfig | str, out: Path, max_length: int,
                  labels: tuple[str, ...], calibration=None) -> Servable:
    """Quantize/export ``model`` into the bundle folder ``out`` (model, tokenizer, metadata); the export and its
    calibration run as one training step of the timing lock (they load the cores: not while a study times)."""
    with training_step():
        servable = quantize(model, quant, out / "model", calibration)
    tokenizer.save_pretrained(str(out / "tokenizer"))
    write_metadata(out, scheme=servable.scheme, runtime=servable.runtime, quantizes=servable.quantizes,
                   max_length=max_length, labels=labels)
    return servable


def serve_and_measure(model, tokenizer, quant: QuantConfig | str, out: Path, split: DataSplit, max_length: int,
                      *, timer: PairedTimer, calibration=None,
                      teacher_predictions=None, seed: int = 0) -> Served:
    """Export ``model`` with ``quant`` as a bundle in ``out``, score it on validation and test, and time it.

    Used for trials, the fp32 teacher reference and the compression benchmark alike, so every number has one
    protocol: the bundle is timed from its files in ``timer``'s process, paired with the teacher. With
    ``teacher_predictions`` (the teacher's on the test texts) the test macro-F1 and its difference to the teacher's get bootstrap intervals.
    """
    timings = {}
    start = time.perf_counter()
    servable = export_bundle(model, tokenizer, quant, out, max_length, split.label_names, calibration)
    timings["time_quantize_s"] = time.perf_counter() - start
    start = time.perf_counter()
    pad = tokenizer.pad_token_id
    validation = evaluate(servable.predictor, encode(tokenizer, split.validation.texts, max_length),
                          split.validation.labels, pad)
    test_enc = encode(tokenizer, split.test.texts, max_length)
    quality = evaluate(servable.predictor, test_enc, split.test.labels, pad)
    intervals, delta = (None, None), None
    if teacher_predictions is not None:
        intervals = bootstrap_macro_f1(split.test.labels, quality.predictions, teacher_predictions, seed=seed)
        delta = quality.macro_f1 - macro_f1(split.test.labels, teacher_predictions)
    timings["time_evaluate_s"] = time.perf_counter() - start
    start = time.perf_counter()
    timing = timer.time(out)
    timings["time_measure_s"] = time.perf_counter() - start
    return Served(servable, validation, quality, timing, timings, *intervals, delta)
