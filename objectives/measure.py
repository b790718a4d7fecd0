"""The one measurement protocol: quality on the test split, batch-1 latency, batch throughput, size."""

from __future__ import annotations

import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
from sklearn.metrics import accuracy_score

from study.core.config import MeasureSettings
from study.core.devices import cpu_model
from study.core.timing_lock import training_step
from study.core.training import Encoded, macro_f1, ordered_batches, pad_batch, train_threads


@dataclass(frozen=True)
class Quality:
    macro_f1: float
    accuracy: float
    predictions: np.ndarray


@dataclass(frozen=True)
class Speed:
    """Timings in the serving runtime, at ``threads`` intra-op threads."""

    latency_ms: float  # median ms per example at batch size 1
    latency_iqr_ms: float  # interquartile range of those calls
    throughput_per_s: float  # examples per second at ``batch_size``, dynamic padding
    batch_size: int
    threads: int
    runtime: str

    latency_cv: float = 0.0  # run-to-run stability: std / mean of the per-pass medians
    attempts: int = 1  # measurements taken (more than one when an earlier one was unsteady: CV > max_cv)

    def as_metrics(self, suffix: str = "") -> dict[str, float]:
        return {f"latency_ms{suffix}": self.latency_ms, f"latency_iqr_ms{suffix}": self.latency_iqr_ms,
                f"latency_cv{suffix}": self.latency_cv, f"throughput_per_s{suffix}": self.throughput_per_s,
                f"measure_attempts{suffix}": float(self.attempts)}


def evaluate(predictor, test: Encoded, labels: np.ndarray, pad_id: int, batch_size: int = 64) -> Quality:
    """Macro-F1 and accuracy of the served model on every test example (all cores, no timing)."""
    predictor.set_threads(train_threads())
    order = np.argsort(test.lengths(), kind="stable")
    predictions = np.zeros(len(test), dtype=np.int64)
    for batch in ordered_batches(len(order), batch_size):
        index = order[batch]
        ids, mask = pad_batch(test, index, pad_id)
        with training_step():  # on every core: never while a study on this machine is timing
            predictions[index] = predictor.logits(ids, mask).argmax(axis=1)
    return Quality(macro_f1(labels, predictions), float(accuracy_score(labels, predictions)), predictions)


BOOTSTRAP_RESAMPLES = 1000


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def macro_f1_rows(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """Macro-F1 of every row of ``labels``/``predictions`` (2-D, one resample a row), as scikit-learn computes
    it (classes absent from both a row's labels and predictions are left out; F1 of 0 where undefined)."""
    rows = labels.shape[0]
    cells = (np.arange(rows)[:, None] * classes * classes + labels * classes + predictions).ravel()
    confusion = np.bincount(cells, minlength=rows * classes * classes).reshape(rows, classes, classes)
    tp = np.einsum("rkk->rk", confusion).astype(float)
    true_counts, predicted_counts = confusion.sum(axis=2), confusion.sum(axis=1)
    denominator = true_counts + predicted_counts
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    present = denominator > 0
    return (f1 * present).sum(axis=1) / present.sum(axis=1)


def bootstrap_macro_f1(labels: np.ndarray, predictions: np.ndarray, reference: np.ndarray | None = None,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[Interval, Interval | None]:
    """95% percentile-bootstrap intervals, resampling texts with replacement: of macro-F1, and (with
    ``reference``, another model's predictions on the same texts) of the paired difference
    macro-F1(predictions) - macro-F1(reference), both scored on the same resampled texts."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    classes = int(max(labels.max(), predictions.max(), -1 if reference is None else np.max(reference))) + 1
    index = np.random.default_rng(seed).integers(0, len(labels), size=(resamples, len(labels)))
    scores = macro_f1_rows(labels[index], predictions[index], classes)
    interval = Interval(*np.percentile(scores, [2.5, 97.5]).tolist())
    if reference is None:
        return interval, None
    delta = scores - macro_f1_rows(labels[index], np.asarray(reference)[index], classes)
    return interval, Interval(*np.percentile(delta, [2.5, 97.5]).tolist())


def measure_speed(predictor, test: Encoded, pad_id: int, settings: MeasureSettings) -> Speed:
    """Batch-1 latency over real test texts (their own lengths) and batch throughput, after warm-up.

    The first ``latency_examples`` test texts are each timed at batch size 1 in ``repeats`` passes (a pass
    sweeps over them as often as it takes to last ``min_pass_seconds``): the reported latency is the
    median of all those calls, its IQR their spread (texts differ in length), and the coefficient of
    variation that of the per-pass medians (how stable the measurement is). Throughput is the median over
    ``repeats`` passes (again at least ``min_pass_seconds`` each) over ``throughput_batches`` consecutive
    batches of ``throughput_batch_size`` test texts, each padded to its longest text (or to
    ``settings.fixed_length`` tokens when set).
    """
    predictor.set_threads(settings.threads)
    n = min(settings.latency_examples, len(test))
    width = settings.fixed_length
    singles = [pad_batch(test, np.array([i]), pad_id, width) for i in range(n)]
    bs = settings.throughput_batch_size
    batches = [pad_batch(test, np.arange(s, min(s + bs, len(test))), pad_id, width)
               for s in range(0, min(len(test), bs * settings.throughput_batches), bs)]
    return _timed(lambda x: predictor.logits(*x), singles, batches, [len(ids) for ids, _ in batches], settings,
                  predictor.runtime)


def measure_text_speed(predict: Callable[[list[str]], object], texts: tuple[str, ...], settings: MeasureSettings,
                       runtime: str) -> Speed:
    """The same protocol for a model that takes raw texts (e.g. the TF-IDF baseline in scikit-learn)."""
    from threadpoolctl import threadpool_limits

    n = min(settings.latency_examples, len(texts))
    singles = [[texts[i]] for i in range(n)]
    bs = settings.throughput_batch_size
    batches = [list(texts[s:s + bs]) for s in range(0, min(len(texts), bs * settings.throughput_batches), bs)]
    with threadpool_limits(limits=settings.threads):
        return _timed(predict, singles, batches, [len(b) for b in batches], settings, runtime)


@contextmanager
def steady_timing(threads: int):
    """While timing: garbage collection off (as ``timeit`` does) and, on Linux when fewer threads than cores
    are used, the timing thread pinned to that many cores, so the scheduler does not migrate it between
    cores (measured here: pass-to-pass CV from up to 16% down to under 7% at 1 thread). Not pinned when
    this process shares the machine with other workers (it would pin them all to the same core)."""
    pinned = None
    if hasattr(os, "sched_getaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        if threads < len(cores) <= train_threads():
            pinned = set(cores)
            os.sched_setaffinity(0, set(cores[-threads:]))
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        if pinned is not None:
            os.sched_setaffinity(0, pinned)


def _timed(call: Callable, singles: list, batches: list, batch_lengths: list[int], settings: MeasureSettings,
           runtime: str) -> Speed:
    """Time ``call``; when the passes disagree (CV above ``settings.max_cv``: the machine was disturbed for
    a stretch, e.g. by another tenant of the host) take the whole measurement again, up to
    ``settings.max_attempts`` times, and report the steadiest attempt with the number of attempts made."""
    best = None
    for attempt in range(1, max(1, settings.max_attempts) + 1):
        with steady_timing(settings.threads):
            speed = _timed_steady(call, singles, batches, batch_lengths, settings, runtime)
        if best is None or speed.latency_cv < best.latency_cv:
            best = speed
        if best.latency_cv <= settings.max_cv:
            break
    return replace(best, attempts=attempt)


def _timed_steady(call: Callable, singles: list, batches: list, batch_lengths: list[int], settings: MeasureSettings,
                  runtime: str) -> Speed:
    warm_up(call, singles, settings)
    times, pass_medians = [], []
    for _ in range(settings.repeats):
        this_pass = latency_pass(call, singles, settings.min_pass_seconds)
        times.extend(this_pass)
        pass_medians.append(statistics.median(this_pass))
    rate = throughput(call, batches, batch_lengths, settings)
    return Speed(latency_ms=statistics.median(times), latency_iqr_ms=iqr(times), throughput_per_s=rate,
                 batch_size=settings.throughput_batch_size, threads=settings.threads, runtime=runtime,
                 latency_cv=cv(pass_medians))


def warm_up(call: Callable, singles: list, settings: MeasureSettings) -> None:
    """At least ``settings.warmup`` calls lasting ``settings.warmup_seconds`` (the CPU and the allocator
    settle), then one untimed pass over every timed input, so that each input shape has been seen once
    (runtimes build and cache kernels per shape on first sight; timing those first calls made the first
    pass, and the first model timed in a process, look slower)."""
    start, i = time.perf_counter(), 0
    while i < settings.warmup or time.perf_counter() - start < settings.warmup_seconds:
        call(singles[i % len(singles)])
        i += 1
    for item in singles:
        call(item)


def latency_pass(call: Callable, singles: list, min_seconds: float) -> list[float]:
    """One timed pass: whole sweeps over the inputs, one call each, until the pass lasts ``min_seconds``
    (with a fast model one sweep takes a few tens of ms, and a disturbance that long, another process's
    time slice, moved a whole pass's median: CV up to 15% here for sub-millisecond models). Returns the
    calls' milliseconds."""
    this_pass, pass_start = [], time.perf_counter()
    while not this_pass or time.perf_counter() - pass_start < min_seconds:
        for item in singles:
            start = time.perf_counter()
            call(item)
            this_pass.append((time.perf_counter() - start) * 1000.0)
    return this_pass


def throughput(call: Callable, batches: list, batch_lengths: list[int], settings: MeasureSettings) -> float:
    """Examples per second: the median over passes of whole sweeps over ``batches`` (each pass lasting at least
    ``min_pass_seconds``; as many passes as ``steady_passes`` takes), after one warm-up call at every batch shape."""
    for item in batches:
        call(item)

    def one_pass() -> float:
        examples, start = 0, time.perf_counter()
        while examples == 0 or time.perf_counter() - start < settings.min_pass_seconds:
            for item in batches:
                call(item)
            examples += sum(batch_lengths)
        return examples / (time.perf_counter() - start)

    return statistics.median(steady_passes(one_pass, settings))


def steady_passes(one_pass: Callable[[], float], settings: MeasureSettings) -> list[float]:
    """The values of successive timed passes: at least ``settings.min_repeats`` and at most ``settings.repeats``,
    stopping as soon as their pass-to-pass CV is at most ``settings.stop_cv`` (further passes of a steady
    measurement would only confirm its median; an unsteady one gets every pass the protocol allows)."""
    values = []
    while len(values) < max(1, settings.repeats):
        values.append(one_pass())
        if len(values) >= settings.min_repeats and cv(values) <= settings.stop_cv:
            break
    return values


def iqr(times: list[float]) -> float:
    if len(times) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(times, n=4)
    return q3 - q1


def cv(values: list[float]) -> float:
    """Coefficient of variation (population std / mean); 0 for fewer than two values."""
    return statistics.pstdev(values) / statistics.fmean(values) if len(values) > 1 else 0.0


def machine_facts() -> dict[str, str]:
    """Where the timings were taken (logged with every run)."""
    import onnxruntime
    import torch

    return {"cpu": cpu_model(), "cpu_count": str(train_threads()), "torch_version": torch.__version__,
            "onnxruntime_version": onnxruntime.__version__, "python_version": platform.python_version()}
