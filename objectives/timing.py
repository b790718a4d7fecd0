"""Isolated, paired timing: an exported bundle timed in a separate process, interleaved with the fp32 teacher.

Why: PyTorch eager gets slower over a long process, other workers train on the same cores, and the teacher's
own batch-1 time moved 4.2-7.7 ms between processes. So a trial's artifact is never timed in the process that
trained it. A timing process (spawned, recycled every ``MeasureSettings.timing_process_tasks`` artifacts, so
it never grows old) loads the artifact from the files of its bundle, and times it in blocks alternating with
the teacher's fp32 network in PyTorch and in ONNX Runtime (the order rotated from block to block). Each
block gives a ratio of pass medians; a speed-up is the median of those paired ratios, with a
distribution-free interval from their order statistics. While it times, the process holds a machine-wide
lock that training steps wait on (``training_step``), so no worker's training or timing overlaps a timing.
"""

from __future__ import annotations

import math
import os
import statistics
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from objectives.measure import cv, iqr, latency_pass, steady_passes, steady_timing, throughput, warm_up
from study.core.timing_lock import timing_exclusive
from study.core.config import MeasureSettings

# -- paired ratios -----------------------------------------------------------------------------------------

def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """A distribution-free interval for the median of ``values``: the k-th smallest and k-th largest, with
    the largest k whose coverage (binomial, p = 1/2) is at least ``confidence``; the whole range if none
    reaches it. Returns (low, high, coverage)."""
    ordered, n = sorted(values), len(values)
    best = (ordered[0], ordered[-1], 1 - 2 * 0.5 ** n)
    for k in range(2, n // 2 + 1):
        coverage = 1 - 2 * sum(math.comb(n, i) for i in range(k)) * 0.5 ** n
        if coverage < confidence:
            break
        best = (ordered[k - 1], ordered[n - k], coverage)
    return best


@dataclass(frozen=True)
class PairedTiming:
    """What the timing process measured for one artifact (milliseconds per text at batch 1)."""

    latency_ms: float  # the candidate: median of all its timed calls over the blocks
    latency_iqr_ms: float
    latency_cv: float  # pass-to-pass
    throughput_per_s: float  # at ``batch_size``
    batch_size: int
    threads: int
    latency_e2e_ms: float  # raw text in, label out: normalisation and tokenization included
    teacher_latency_ms: float  # the fp32 teacher network in PyTorch, timed in the same blocks
    teacher_onnx_latency_ms: float  # ... and in ONNX Runtime
    speedup: float  # median over blocks of teacher (PyTorch) / candidate
    speedup_ci: tuple[float, float]
    relative_latency: float  # median over blocks of candidate / teacher (PyTorch): the study's latency objective
    relative_latency_ci: tuple[float, float]
    speedup_onnx: float  # median over blocks of teacher (its faster fp32 runtime in that block) / candidate
    speedup_onnx_ci: tuple[float, float]
    blocks: int
    coverage: float  # of the speed-up intervals
    pid: int  # of the timing process
    process_task: int  # the how-many-th artifact that process timed

    def as_metrics(self) -> dict[str, float]:
        return {"latency_ms": self.latency_ms, "latency_iqr_ms": self.latency_iqr_ms, "latency_cv": self.latency_cv,
                "throughput_per_s": self.throughput_per_s, "latency_e2e_ms": self.latency_e2e_ms,
                "teacher_latency_ms_paired": self.teacher_latency_ms,
                "teacher_onnx_latency_ms_paired": self.teacher_onnx_latency_ms,
                "latency_vs_teacher": self.relative_latency,
                "latency_vs_teacher_ci_low": self.relative_latency_ci[0],
                "latency_vs_teacher_ci_high": self.relative_latency_ci[1],
                "speedup_vs_teacher": self.speedup, "speedup_vs_teacher_ci_low": self.speedup_ci[0],
                "speedup_vs_teacher_ci_high": self.speedup_ci[1], "speedup_vs_teacher_onnx": self.speedup_onnx,
                "speedup_vs_teacher_onnx_ci_low": self.speedup_onnx_ci[0],
                "speedup_vs_teacher_onnx_ci_high": self.speedup_onnx_ci[1], "timing_blocks": float(self.blocks),
                "timing_process_task": float(self.process_task)}


# -- inside the timing process -------------------------------------------------------------------------

_loaded: dict[str, object] = {}  # the teacher's bundles, loaded once per timing process
_warmed: set[tuple[str, int]] = set()  # ... and fully warmed up once per timing process (folder, threads)
_tasks_done = 0


def _bundle(directory: str, threads: int, keep: bool):
    from objectives.bundle import load_bundle

    if directory in _loaded:
        return _loaded[directory]
    bundle = load_bundle(directory, threads=threads)
    if keep:
        _loaded[directory] = bundle
    return bundle


def _singles(bundle, texts: list[str], fixed_length: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each text tokenized by the bundle's own tokenizer, at its own length (or padded to ``fixed_length``)."""
    from study.core.textnorm import normalize_text

    out = []
    for text in texts:
        enc = bundle.tokenizer([normalize_text(text)], truncation=True, max_length=bundle.meta["max_length"],
                               padding="max_length" if fixed_length else False,
                               **({"max_length": fixed_length} if fixed_length else {}),
                               return_tensors="np", return_token_type_ids=False)
        out.append((enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)))
    return out


def _batches(bundle, texts: list[str], size: int, count: int, fixed_length: int | None):
    from study.core.textnorm import normalize_text

    batches = []
    for start in range(0, min(len(texts), size * count), size):
        chunk = [normalize_text(t) for t in texts[start:start + size]]
        enc = bundle.tokenizer(chunk, truncation=True, padding="max_length" if fixed_length else True,
                               max_length=fixed_length or bundle.meta["max_length"], return_tensors="np",
                               return_token_type_ids=False)
        batches.append((enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)))
    return batches


def time_in_this_process(candidate: str, teacher_torch: str, teacher_onnx: str, texts: list[str],
                         settings: MeasureSettings) -> PairedTiming:
    """Load ``candidate`` from its bundle folder and time it in blocks with the teacher's two bundles."""
    global _tasks_done
    _tasks_done += 1
    threads = settings.threads
    models = {"teacher": _bundle(teacher_torch, threads, keep=True),
              "teacher_onnx": _bundle(teacher_onnx, threads, keep=True),
              "candidate": _bundle(candidate, threads, keep=candidate in (teacher_torch, teacher_onnx))}
    latency_texts = texts[:settings.latency_examples]
    calls = {name: _latency_call(bundle, latency_texts, settings) for name, bundle in models.items()}
    warmed = {name for name, directory in (("teacher", teacher_torch), ("teacher_onnx", teacher_onnx))
              if (directory, threads) in _warmed}
    with timing_exclusive(), steady_timing(threads):
        medians, candidate_times = _paired_blocks(calls, settings, warmed)
        _warmed.update({(teacher_torch, threads), (teacher_onnx, threads)})
        rate, e2e_times = _candidate_throughput_and_e2e(models["candidate"], calls["candidate"][0], texts,
                                                         latency_texts, settings)
    return _paired_timing(medians, candidate_times, rate, e2e_times, settings)


def _latency_call(bundle, latency_texts: list[str], settings: MeasureSettings):
    """The bundle's network as a call on one tokenized text, and the latency texts tokenized by its tokenizer."""
    bundle.predictor.set_threads(settings.threads)
    return (lambda x: bundle.predictor.logits(*x)), _singles(bundle, latency_texts, settings.fixed_length)


def _paired_blocks(calls: dict, settings: MeasureSettings,
                   warmed: set[str] = frozenset()) -> tuple[dict[str, list[float]], list[float]]:
    """Warm each model up (those in ``warmed`` were warmed up on an earlier artifact: ``settings.warmup`` calls
    are enough for them), then time blocks, one latency pass per model in each (who goes first rotated from
    block to block): ``settings.paired_blocks`` of them, then more, up to ``settings.max_paired_blocks``, while
    the interval of the candidate's latency relative to the teacher is wider than ``settings.interval_tolerance``
    of its median on either side. Returns each model's pass medians, block by block, and every timed call of the
    candidate."""
    order = list(calls)
    medians: dict[str, list[float]] = {name: [] for name in order}
    candidate_times: list[float] = []
    for name in order:
        call, singles = calls[name]
        if name in warmed:  # its kernels are built and its allocator settled: settle the CPU only
            for i in range(settings.warmup):
                call(singles[i % len(singles)])
        else:
            warm_up(call, singles, settings)
    block = 0
    while block < settings.paired_blocks or (block < settings.max_paired_blocks and not _tight(medians, settings)):
        for name in order[block % 3:] + order[:block % 3]:  # rotate who goes first
            call, singles = calls[name]
            times = latency_pass(call, singles, settings.min_pass_seconds)
            medians[name].append(statistics.median(times))
            if name == "candidate":
                candidate_times.extend(times)
        block += 1
    return medians, candidate_times


def _tight(medians: dict[str, list[float]], settings: MeasureSettings) -> bool:
    """Whether the interval of the median of the blocks' candidate/teacher ratios so far lies within
    ``settings.interval_tolerance`` of that median on both sides."""
    relative = [c / t for t, c in zip(medians["teacher"], medians["candidate"])]
    low, high, _ = median_interval(relative)
    return relative_half_width(low, high, statistics.median(relative)) <= settings.interval_tolerance


def relative_half_width(low: float, high: float, middle: float) -> float:
    """The wider side of the interval [low, high] around ``middle``, as a share of ``middle``: what the stopping
    rule compares with ``interval_tolerance``."""
    return max(high - middle, middle - low) / middle


def _candidate_throughput_and_e2e(bundle, call, texts: list[str], latency_texts: list[str],
                                  settings: MeasureSettings) -> tuple[float, list[float]]:
    """The candidate's throughput at the batch size of the protocol, and its batch-1 times from raw text (as
    many passes as ``steady_passes`` takes)."""
    batches = _batches(bundle, texts, settings.throughput_batch_size, settings.throughput_batches,
                       settings.fixed_length)
    rate = throughput(call, batches, [len(b[0]) for b in batches], settings)
    e2e = lambda item: bundle.predict(item)  # noqa: E731 - raw texts in, labels out
    raw = [[t] for t in latency_texts]
    warm_up(e2e, raw, replace(settings, warmup_seconds=0.0))  # its network is warm from the blocks: tokenizer only
    e2e_times: list[float] = []

    def one_pass() -> float:
        times = latency_pass(e2e, raw, settings.min_pass_seconds)
        e2e_times.extend(times)
        return statistics.median(times)

    steady_passes(one_pass, settings)
    return rate, e2e_times


def _paired_timing(medians: dict[str, list[float]], candidate_times: list[float], rate: float,
                   e2e_times: list[float], settings: MeasureSettings) -> PairedTiming:
    """The block-by-block ratios to the teacher, their medians and intervals, as one ``PairedTiming``."""
    ratios = [t / c for t, c in zip(medians["teacher"], medians["candidate"])]
    ratios_best = [min(t, o) / c for t, o, c in zip(medians["teacher"], medians["teacher_onnx"], medians["candidate"])]
    low, high, coverage = median_interval(ratios)
    relative = [c / t for t, c in zip(medians["teacher"], medians["candidate"])]
    low_relative, high_relative, _ = median_interval(relative)
    low_onnx, high_onnx, _ = median_interval(ratios_best)
    return PairedTiming(
        latency_ms=statistics.median(candidate_times), latency_iqr_ms=iqr(candidate_times),
        latency_cv=cv(medians["candidate"]), throughput_per_s=rate, batch_size=settings.throughput_batch_size,
        threads=settings.threads, latency_e2e_ms=statistics.median(e2e_times),
        teacher_latency_ms=statistics.median(medians["teacher"]),
        teacher_onnx_latency_ms=statistics.median(medians["teacher_onnx"]), speedup=statistics.median(ratios),
        speedup_ci=(low, high), relative_latency=statistics.median(relative),
        relative_latency_ci=(low_relative, high_relative), speedup_onnx=statistics.median(ratios_best),
        speedup_onnx_ci=(low_onnx, high_onnx), blocks=len(ratios), coverage=coverage, pid=os.getpid(),
        process_task=_tasks_done)


def _start_timing_process() -> None:
    """Initialiser of the timing process: tokenizers stay single-threaded, and the process ends when the study's
    process is gone (killed with -9, a pool worker would wait for work forever: it holds its queue's write end)."""
    import threading
    import time

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


# -- in the study's process ----------------------------------------------------------------------------

class PairedTimer:
    """Times exported bundles in a separate, recycled process against the fp32 teacher's two bundles.

    Args:
        teacher_torch: bundle folder of the teacher's fp32 network served by PyTorch.
        teacher_onnx: the same network exported to ONNX (fp32), served by ONNX Runtime.
        texts: the texts to time on (the first ``settings.latency_examples`` at batch 1).
        settings: the measurement protocol (threads, passes, blocks, recycling).
    """

    def __init__(self, teacher_torch: Path, teacher_onnx: Path, texts: tuple[str, ...], settings: MeasureSettings):
        self.teacher_torch, self.teacher_onnx = str(teacher_torch), str(teacher_onnx)
        self.texts = list(texts[:max(settings.latency_examples,
                                     settings.throughput_batch_size * settings.throughput_batches)])
        self.settings = settings
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing

            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                             max_tasks_per_child=self.settings.timing_process_tasks,
                                             initializer=_start_timing_process)
        return self._pool

    def time(self, bundle_dir: Path) -> PairedTiming:
        """Time the bundle in ``bundle_dir`` (a fresh timing process is started if the last one died)."""
        for attempt in (1, 2):
            try:
                future = self._executor().submit(time_in_this_process, str(bundle_dir), self.teacher_torch,
                                                 self.teacher_onnx, self.texts, self.settings)
                return future.result()
            except BrokenProcessPool:
                self.close()
                if attempt == 2:
                    raise RuntimeError(f"the timing process died twice while timing {bundle_dir}") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
