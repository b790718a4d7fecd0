"""The secondary all-cores timings, taken when a pair study ends and only for the trials on its front."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from objectives.timing import PairedTimer
from study.core.config import MeasureSettings
from study.reporting.callbacks import BUNDLE_ARTIFACT
from study.reporting.progress import say
from study.reporting.tracking import RUN_ID_ATTR, Tracker

ALL_CORES_SUFFIX = "_allcores"
SKIPPED = ("timing_process_task",)  # bookkeeping of the timing process, not a timing


def all_cores_metrics(timing) -> dict[str, float]:
    """A ``PairedTiming`` at every core as run metrics: each timing metric with the suffix ``_allcores``."""
    return {f"{k}{ALL_CORES_SUFFIX}": v for k, v in timing.as_metrics().items() if k not in SKIPPED}


def time_front_on_all_cores(study_name: str, front: list, tracker: Tracker, parent: str, teacher_torch: Path,
                            teacher_onnx: Path, texts: tuple[str, ...], settings: MeasureSettings) -> int:
    """Time each front trial's bundle (downloaded from its run) on every core of this machine, paired with the
    fp32 teacher exactly as the trials were at ``settings.threads``, and log the ``*_allcores`` metrics on its
    run (the teacher's on the parent run). These numbers are not objectives: the search never reads them, so
    they are taken once per front trial instead of once per trial. Trials timed so in an earlier session are
    skipped. Returns how many trials were timed."""
    every_core = settings.all_cores()
    todo = [t for t in front if t.user_attrs.get(RUN_ID_ATTR)
            and f"latency_ms{ALL_CORES_SUFFIX}" not in tracker.run_metrics(t.user_attrs[RUN_ID_ATTR])]
    if not todo or every_core.threads == settings.threads:
        return 0
    with_bundle = [t for t in todo if tracker.has_artifacts(t.user_attrs[RUN_ID_ATTR], BUNDLE_ARTIFACT)]
    if len(with_bundle) < len(todo):
        say(f"[{study_name}] {len(todo) - len(with_bundle)} front trial(s) kept no model bundle "
            "(--keep-models none): not timed on all cores")
    if not with_bundle:
        return 0
    say(f"[{study_name}] timing the {len(with_bundle)} front trial(s) on all {every_core.threads} cores "
        "(secondary numbers, *_allcores) ...")
    timer = PairedTimer(teacher_torch, teacher_onnx, texts, every_core)
    teacher = []
    try:
        with tempfile.TemporaryDirectory(prefix="front-timing-") as tmp:
            for t in with_bundle:
                run_id = t.user_attrs[RUN_ID_ATTR]
                bundle = tracker.download_artifacts(run_id, BUNDLE_ARTIFACT, str(Path(tmp) / str(t.number)))
                timing = timer.time(Path(bundle))
                tracker.log_metrics(run_id, all_cores_metrics(timing))
                teacher.append((timing.teacher_latency_ms, timing.teacher_onnx_latency_ms))
    finally:
        timer.close()
    tracker.log_metrics(parent, {f"teacher_latency_ms{ALL_CORES_SUFFIX}": statistics.median(t for t, _ in teacher),
                                 f"teacher_onnx_latency_ms{ALL_CORES_SUFFIX}": statistics.median(o for _, o in teacher)})
    return len(with_bundle)
