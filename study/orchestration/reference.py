"""The teacher as every trial is compared with it, measured with the trials' protocol."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from objectives.baseline import run_baseline
from objectives.prune import nonzero_parameters
from objectives.measure import bootstrap_macro_f1
from objectives.timing import PairedTimer
from objectives.trial import export_bundle, serve_and_measure
from study.reporting.progress import say
from study.core.config import StudyConfig
from study.core.data import DataSplit
from study.core.teacher import TeacherArtifacts
from study.core.training import macro_f1


@dataclass(frozen=True)
class Reference:
    """The teacher as every trial is compared with it: its metrics, its test predictions, its bundles."""

    metrics: dict[str, float]
    test_predictions: np.ndarray  # the teacher's (with its TF-IDF member, if it has one) on the test texts
    torch_bundle: Path  # its fp32 network served by PyTorch
    onnx_bundle: Path  # ... and by ONNX Runtime

    def timer(self, split: DataSplit, cfg: StudyConfig) -> PairedTimer:
        return PairedTimer(self.torch_bundle, self.onnx_bundle, split.test.texts, cfg.measure)


def measure_reference(teacher: TeacherArtifacts, split: DataSplit, cfg: StudyConfig, workdir: Path,
                      ) -> tuple[Reference, PairedTimer]:
    """The fp32 teacher measured with the trials' protocol (in the timing process, against itself).

    Speed and size are its network's (fp32; PyTorch, and ONNX Runtime as ``teacher_onnx_latency_ms``): the
    one model that trials compress. Macro-F1 and accuracy are the teacher's as a whole (with its TF-IDF
    member, if it has one: what students learn from); ``teacher_network_*`` are the network's alone.
    """
    tokenizer, model = teacher.load_tokenizer(), teacher.load_network()
    onnx_dir, torch_dir = workdir / "teacher-onnx", workdir / "teacher-torch"
    export_bundle(model, tokenizer, "onnx_fp32", onnx_dir, cfg.train.max_length, split.label_names)
    timer = PairedTimer(torch_dir, onnx_dir, split.test.texts, cfg.measure)
    served = serve_and_measure(model, tokenizer, "none", torch_dir, split, cfg.train.max_length, timer=timer)
    timing = served.timing
    metrics = {f"teacher_{k}": v for k, v in served.metrics().items()
               if not k.startswith(("speedup_", "teacher_", "timing_"))}
    metrics["teacher_onnx_latency_ms"] = timing.teacher_onnx_latency_ms
    metrics["teacher_self_speedup"] = timing.speedup  # the teacher against itself: 1 within the timing's noise
    metrics["teacher_latency_vs_teacher"] = 1.0  # by definition: the reference of the latency objective
    metrics["teacher_network_macro_f1"] = served.quality.macro_f1
    metrics["teacher_network_accuracy"] = served.quality.accuracy
    metrics["teacher_tfidf_weight"] = teacher.tfidf_weight
    predictions = served.quality.predictions
    if teacher.tfidf_weight:
        predictions = teacher.predictions(split.test.texts, cfg.train.max_length)
        metrics["teacher_macro_f1"] = macro_f1(split.test.labels, predictions)
        metrics["teacher_accuracy"] = float(np.mean(predictions == split.test.labels))
    interval, _ = bootstrap_macro_f1(split.test.labels, predictions, seed=cfg.seed)
    metrics["teacher_macro_f1_ci_low"], metrics["teacher_macro_f1_ci_high"] = interval.low, interval.high
    metrics["teacher_nonzero_params"] = float(nonzero_parameters(model))
    metrics["teacher_validation_macro_f1"] = teacher.validation_macro_f1
    metrics["teacher_macro_f1_validation"] = teacher.validation_macro_f1  # as the trials' objective is named
    metrics["teacher_network_validation_macro_f1"] = teacher.network_f1
    return Reference(metrics, predictions, torch_dir, onnx_dir), timer


def announce_teacher(name: str, tfidf_weight: float, reference: dict[str, float], cfg: StudyConfig) -> None:
    """One line on the teacher: test macro-F1 with its interval, fp32 latencies and size."""
    member = (f" with its TF-IDF member (weight {tfidf_weight:g}; network alone "
              f"{reference['teacher_network_macro_f1']:.4f})" if tfidf_weight else "")
    say(f"[teacher] {name}: test macro-F1 {reference['teacher_macro_f1']:.4f} (95% CI "
        f"{reference['teacher_macro_f1_ci_low']:.4f}-{reference['teacher_macro_f1_ci_high']:.4f}){member}; its "
        f"network fp32 ({cfg.measure.threads} thread(s), batch 1) {reference['teacher_latency_ms']:.2f} ms/example "
        f"in PyTorch, {reference['teacher_onnx_latency_ms']:.2f} ms in ONNX Runtime, "
        f"{reference['teacher_latency_e2e_ms']:.2f} ms from raw text; {reference['teacher_size_mb']:.2f} MB")


def add_baseline(reference: Reference, split: DataSplit, cfg: StudyConfig) -> None:
    """The TF-IDF + logistic regression baseline, measured and added to ``reference.metrics`` (``baseline_*``), with
    95% bootstrap intervals of its test macro-F1 and of its difference to the teacher's on the same resampled
    texts (paired): whether the teacher beats it is a finding only when that interval excludes zero."""
    metrics = reference.metrics
    baseline = run_baseline(split, cfg.measure, cfg.seed)
    metrics.update(baseline.as_metrics())
    _, delta = bootstrap_macro_f1(split.test.labels, reference.test_predictions, baseline.predictions, seed=cfg.seed)
    own, _ = bootstrap_macro_f1(split.test.labels, baseline.predictions, seed=cfg.seed)
    metrics.update(baseline_macro_f1_ci_low=own.low, baseline_macro_f1_ci_high=own.high,
                   teacher_macro_f1_delta_vs_baseline=metrics["teacher_macro_f1"] - baseline.macro_f1,
                   teacher_macro_f1_delta_vs_baseline_ci_low=delta.low,
                   teacher_macro_f1_delta_vs_baseline_ci_high=delta.high)
    # from raw text, both: the baseline's latency includes its feature extraction (not paired: in this process)
    metrics["baseline_latency_vs_teacher"] = baseline.speed.latency_ms / metrics["teacher_latency_e2e_ms"]
    verdict = "a finding" if delta.excludes_zero() else "within noise"
    say(f"[baseline] TF-IDF + logistic regression (scikit-learn): test macro-F1 {baseline.macro_f1:.4f} (95% CI "
        f"{own.low:.4f}-{own.high:.4f}), {baseline.speed.latency_ms:.2f} ms/example at batch 1 from raw text, "
        f"{baseline.size_bytes / 1e6:.2f} MB; the teacher minus the baseline: "
        f"{metrics['teacher_macro_f1_delta_vs_baseline']:+.4f} (paired 95% CI {delta.low:+.4f} to {delta.high:+.4f}: "
        f"{verdict})")
