"""``python -m benchmarks.timing``: the study's isolated, paired timing checked two ways: the same artifact
timed over and over through one PairedTimer (its timing process recycled on the way), and the same artifact
timed alone and while worker processes train, in the timing process (machine-wide lock) and, for contrast,
in this process without the lock."""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from benchmarks.common import benchmark_parser, data_path, finish, load_split, names, study_config
from study.core.config import MeasureSettings, TrainSettings
from study.core.errors import UserError
from study.reporting.progress import say

CANDIDATES = ("onnx_dynamic_int8", "none")  # the teacher's network int8 in ONNX Runtime, and fp32 in PyTorch eager
GOAL = 0.10  # issue #16: a timing under training load within 10% of the same timing alone


# -- 1. the same artifact timed again and again through one PairedTimer -------------------------------------

def timing_row(timing, candidate: str, task: int, seconds: float) -> dict:
    """A PairedTiming as a JSON row, with the candidate's name, the task's number and its wall time."""
    row = asdict(timing)
    row["speedup_ci"], row["speedup_onnx_ci"] = list(timing.speedup_ci), list(timing.speedup_onnx_ci)
    return {"candidate": candidate, "task": task, **row, "seconds": seconds}


def repeated_timings(timer, bundle: Path, candidate: str, tasks: int) -> list[dict]:
    """``bundle`` timed ``tasks`` times through ``timer`` (its process recycled as its settings say)."""
    rows = []
    for task in range(1, tasks + 1):
        start = time.perf_counter()
        timing = timer.time(bundle)
        rows.append(timing_row(timing, candidate, task, time.perf_counter() - start))
        say(f"[bench] {candidate:<18} task {task:>3}: pid {timing.pid} #{timing.process_task}  "
            f"{timing.latency_ms:.3f} ms  teacher {timing.teacher_latency_ms:.3f} ms  speed-up {timing.speedup:.3f}")
    return rows


def processes(rows: list[dict]) -> list[list[dict]]:
    """The rows in runs of one timing process (consecutive rows with the same pid)."""
    runs: list[list[dict]] = []
    for row in rows:
        if runs and runs[-1][-1]["pid"] == row["pid"]:
            runs[-1].append(row)
        else:
            runs.append([row])
    return runs


def drift_summary(rows: list[dict]) -> dict:
    """How the repeated timings of one artifact moved: within each timing process (its last task against its
    first) and over all tasks (max / min), and whether the speed-ups stay inside each other's intervals."""
    per_process = []
    for run in processes(rows):
        first, last = run[0], run[-1]
        per_process.append({
            "pid": first["pid"], "tasks": len(run), "process_tasks": [r["process_task"] for r in run],
            "first_latency_ms": first["latency_ms"], "last_latency_ms": last["latency_ms"],
            "latency_last_over_first": last["latency_ms"] / first["latency_ms"],
            "teacher_last_over_first": last["teacher_latency_ms"] / first["teacher_latency_ms"],
            "speedup_last_over_first": last["speedup"] / first["speedup"]})
    latency = [r["latency_ms"] for r in rows]
    teacher = [r["teacher_latency_ms"] for r in rows]
    speedup = [r["speedup"] for r in rows]
    lows, highs = [r["speedup_ci"][0] for r in rows], [r["speedup_ci"][1] for r in rows]
    # a pair (i, j), i != j, is outside when task i's speed-up lies outside task j's interval
    outside = sum(not (lows[j] <= speedup[i] <= highs[j]) for i in range(len(rows)) for j in range(len(rows)) if i != j)
    return {"tasks": len(rows), "processes": per_process,
            "latency_max_over_min": max(latency) / min(latency),
            "teacher_latency_max_over_min": max(teacher) / min(teacher),
            "speedup_min": min(speedup), "speedup_max": max(speedup),
            "speedup_max_over_min": max(speedup) / min(speedup),
            "speedup_median": statistics.median(speedup),
            "intervals_common": [max(lows), min(highs)],  # empty when the first exceeds the second
            "speedup_pairs_outside": outside, "speedup_pairs": len(rows) * (len(rows) - 1),
            "speedups_within_intervals": outside == 0}


# -- 2. training load: worker processes running study.core.training.fit --------------------------------------------

@dataclass(frozen=True)
class LoadJob:
    """What a training worker trains, over and over: ``student`` on these texts with these settings."""

    train_texts: tuple[str, ...]
    train_labels: np.ndarray
    validation_texts: tuple[str, ...]
    validation_labels: np.ndarray
    label_names: tuple[str, ...]
    tokenizer_dir: Path  # the scratch tokenizer (scratch students)
    settings: TrainSettings
    student: str = "scratch-tiny"
    learning_rate: float = 5e-4
    threads: int = 1  # per worker, as a study with that many workers splits the cores


class _Halt(Exception):
    """Raised inside a worker's loss function to leave ``fit`` at the next step."""


def _train_worker(job: LoadJob, index: int, run, stop, ready, steps, busy, deadline: float, max_fits: int) -> None:
    """A training worker: while ``run`` is set, fit ``job.student`` again and again (every step inside
    ``training_step()``, as in a study); idle while it is clear; gone when ``stop`` is set, at the
    ``deadline`` (time.monotonic, machine-wide on Linux) or after ``max_fits`` fits."""
    from study.core.libraries import quiet_libraries

    quiet_libraries()
    import torch.nn.functional as F

    from study.core.models import build_model, load_tokenizer, resolve_model
    from study.core.training import encode, fit, set_compute_threads

    set_compute_threads(job.threads)
    spec = resolve_model(job.student)
    tokenizer = load_tokenizer(spec, job.tokenizer_dir)
    train = encode(tokenizer, job.train_texts, job.settings.max_length)
    validation = encode(tokenizer, job.validation_texts, job.settings.max_length)
    ready.value = 1  # imported and tokenized: from here on it only trains while ``run`` is set

    def halted() -> bool:
        return stop.is_set() or not run.is_set() or time.monotonic() > deadline

    def loss(logits, labels, _index):
        if halted():
            raise _Halt
        with steps.get_lock():
            steps.value += 1
        return F.cross_entropy(logits, labels)

    fits = 0
    while fits < max_fits and not stop.is_set() and time.monotonic() < deadline:
        busy.value = 1  # before looking at ``run``: whoever clears it and then sees 0 knows no fit is starting
        if not run.is_set():
            busy.value = 0
            run.wait(0.5)
            continue
        try:
            model = build_model(spec, job.label_names, vocab_size=len(tokenizer), seed=1000 * index + fits)
            fit(model, train=train, train_labels=job.train_labels, validation=validation,
                validation_labels=job.validation_labels, loss_fn=loss, settings=job.settings,
                learning_rate=job.learning_rate, pad_id=tokenizer.pad_token_id, seed=1000 * index + fits)
        except _Halt:
            pass
        finally:
            busy.value = 0
        fits += 1


class TrainingLoad:
    """``workers`` spawned processes training (see ``_train_worker``), switched on and off with ``on()`` /
    ``off()``. Bounded whatever happens: each worker stops itself after ``max_seconds`` or ``max_fits``
    fits, and leaving the ``with`` block stops them (asked, then terminated, then killed)."""

    def __init__(self, job: LoadJob, workers: int, max_seconds: float, max_fits: int = 10_000):
        self.job, self.workers, self.max_seconds, self.max_fits = job, workers, max_seconds, max_fits
        self._ctx = multiprocessing.get_context("spawn")
        self.processes: list = []
        self.exitcodes: list[int | None] | None = None  # once closed

    def __enter__(self) -> TrainingLoad:
        ctx = self._ctx
        self.run, self.stop = ctx.Event(), ctx.Event()
        self._steps = [ctx.Value("l", 0) for _ in range(self.workers)]
        self._busy = [ctx.Value("i", 0) for _ in range(self.workers)]
        self._ready = [ctx.Value("i", 0) for _ in range(self.workers)]
        self.deadline = time.monotonic() + self.max_seconds
        try:
            for i in range(self.workers):
                p = ctx.Process(target=_train_worker, name=f"bench-timing-load-{i}", daemon=True,
                                args=(self.job, i, self.run, self.stop, self._ready[i], self._steps[i], self._busy[i],
                                      self.deadline, self.max_fits))
                p.start()
                self.processes.append(p)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wait_ready(self, timeout: float = 300.0) -> float:
        """Wait until every worker has imported and tokenized (their start-up is load too, so nothing is timed
        before); returns the seconds waited."""
        start = time.monotonic()
        while not all(r.value for r in self._ready):
            self._check()
            if time.monotonic() > start + timeout:
                raise RuntimeError(f"the training workers did not start within {timeout:.0f} s")
            time.sleep(0.05)
        return time.monotonic() - start

    def steps(self) -> list[int]:
        return [s.value for s in self._steps]

    def _check(self) -> None:
        for i, p in enumerate(self.processes):
            if not p.is_alive():
                raise RuntimeError(f"training worker {i} (pid {p.pid}) is gone (exit code {p.exitcode})")
        if time.monotonic() > self.deadline:
            raise UserError(f"the training load reached its --load-seconds bound ({self.max_seconds:.0f} s) "
                            "before the timings under load were done; raise --load-seconds")

    def on(self, timeout: float = 300.0) -> None:
        """Start the workers training and return once every one of them has made a step since."""
        before = self.steps()
        self.run.set()
        limit = time.monotonic() + timeout
        while any(now <= was for now, was in zip(self.steps(), before)):
            self._check()
            if time.monotonic() > limit:
                raise RuntimeError(f"the training workers made no step in {timeout:.0f} s")
            time.sleep(0.05)

    def off(self, timeout: float = 120.0) -> None:
        """Stop the workers training (each leaves its fit at its next step) and return once all are idle."""
        self.run.clear()
        limit = time.monotonic() + timeout
        while any(b.value for b in self._busy):
            if time.monotonic() > limit or not all(p.is_alive() for p in self.processes):
                raise RuntimeError("the training workers did not stop training")
            time.sleep(0.02)

    def alive(self) -> bool:
        return bool(self.processes) and all(p.is_alive() for p in self.processes)

    def close(self) -> None:
        if not self.processes:
            return
        self.stop.set()
        self.run.set()  # wakes idle workers so they see ``stop``
        for p in self.processes:
            p.join(15)
        for p in self.processes:
            if p.is_alive():
                p.terminate()
                p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
        self.exitcodes = [p.exitcode for p in self.processes]
        self.processes = []


def in_process_speed(predictor, encoded, pad_id: int, settings: MeasureSettings) -> dict:
    """The study's in-process protocol (``measure_speed``: no timing process, no lock) as a JSON dict."""
    from objectives.measure import measure_speed

    speed = measure_speed(predictor, encoded, pad_id, settings)
    return {**speed.as_metrics(), "runtime": speed.runtime}


def load_comparison(timer, candidates: dict[str, Path], test_texts: tuple[str, ...], settings: MeasureSettings,
                    load: TrainingLoad, rounds: int) -> dict:
    """Each candidate timed alone and under ``load``, in phases alone, loaded, alone, ... (``rounds`` loaded
    phases, an alone phase before and after each): through ``timer`` (the timing process, which holds the
    machine-wide lock) and in this process with ``measure_speed`` (no lock). ``load`` must be entered."""
    from objectives.bundle import load_bundle
    from study.core.training import encode

    local = {}
    for name, directory in candidates.items():
        bundle = load_bundle(directory, threads=settings.threads)
        local[name] = (bundle.predictor, encode(bundle.tokenizer, test_texts, bundle.meta["max_length"]),
                       bundle.tokenizer.pad_token_id)
    phases = []
    for index, loaded in enumerate([i % 2 == 1 for i in range(2 * rounds + 1)]):
        label = "loaded" if loaded else "alone"
        if loaded:
            say(f"[bench] phase {index + 1}: starting the training load ...")
            load.on()
        say(f"[bench] phase {index + 1}: timing {label} ...")
        start, steps0 = time.perf_counter(), load.steps()
        paired = {}
        for name, directory in candidates.items():
            t0 = time.perf_counter()
            timing = timer.time(directory)
            paired[name] = timing_row(timing, name, index + 1, time.perf_counter() - t0)
        middle, steps1 = time.perf_counter(), load.steps()
        in_process = {name: in_process_speed(*local[name], settings) for name in candidates}
        end, steps2 = time.perf_counter(), load.steps()
        held = load.alive()
        if loaded:
            load.off()
        phase = {"phase": index + 1, "kind": label, "paired": paired, "in_process": in_process,
                 "paired_seconds": middle - start, "in_process_seconds": end - middle,
                 "worker_steps_paired": [b - a for a, b in zip(steps0, steps1)],
                 "worker_steps_in_process": [b - a for a, b in zip(steps1, steps2)]}
        if loaded:  # every worker still there and stepping during both parts of the phase
            phase["load_held"] = held and all(s > 0 for part in ("paired", "in_process")
                                              for s in phase[f"worker_steps_{part}"])
        phases.append(phase)
        for name in candidates:
            p, q = paired[name], in_process[name]
            say(f"[bench]   {name:<18} paired {p['latency_ms']:.3f} ms (speed-up {p['speedup']:.3f}), in-process "
                f"{q['latency_ms']:.3f} ms; worker steps {phase['worker_steps_paired']} / "
                f"{phase['worker_steps_in_process']}")
    return {"rounds": rounds, "phases": phases, "summary": load_summary(phases, list(candidates))}


def load_summary(phases: list[dict], candidates: list[str]) -> dict:
    """Per candidate: the medians over the alone and over the loaded phases, and loaded / alone."""
    out = {}
    for name in candidates:
        def median(kind: str, part: str, key: str) -> float:
            return statistics.median(p[part][name][key] for p in phases if p["kind"] == kind)

        row = {}
        for part, key in (("paired", "latency_ms"), ("paired", "speedup"), ("paired", "teacher_latency_ms"),
                          ("in_process", "latency_ms")):
            alone, loaded = median("alone", part, key), median("loaded", part, key)
            row[f"{part}_{key}_alone"], row[f"{part}_{key}_loaded"] = alone, loaded
            row[f"{part}_{key}_ratio"] = loaded / alone
        row["paired_within_goal"] = all(abs(row[f"paired_{k}_ratio"] - 1) <= GOAL for k in ("latency_ms", "speedup"))
        out[name] = row
    return out


# -- the benchmark ------------------------------------------------------------------------------------------

def export_candidates(model, tokenizer, out: Path, max_length: int, labels: tuple[str, ...],
                      schemes: list[str]) -> tuple[Path, Path, dict[str, Path]]:
    """The teacher's fp32 network as the two reference bundles (PyTorch, ONNX Runtime) and one candidate
    bundle per scheme (a folder of its own, so the timing process loads it afresh for every task)."""
    from objectives.trial import export_bundle

    torch_dir, onnx_dir = out / "teacher-torch", out / "teacher-onnx"
    export_bundle(copy.deepcopy(model), tokenizer, "none", torch_dir, max_length, labels)
    export_bundle(copy.deepcopy(model), tokenizer, "onnx_fp32", onnx_dir, max_length, labels)
    candidates = {}
    for scheme in schemes:
        candidates[scheme] = out / f"candidate-{scheme}"
        export_bundle(copy.deepcopy(model), tokenizer, scheme, candidates[scheme], max_length, labels)
    return torch_dir, onnx_dir, candidates


def measure(torch_dir: Path, onnx_dir: Path, candidates: dict[str, Path], test_texts: tuple[str, ...],
            settings: MeasureSettings, tasks: int, load: TrainingLoad, rounds: int) -> dict:
    """Both checks on exported bundles, once ``load``'s workers (entered, idle) have started: every candidate
    ``tasks`` times through a PairedTimer of its own (recycled every ``settings.timing_process_tasks``), then
    each alone vs under ``load`` (see ``load_comparison``)."""
    from objectives.timing import PairedTimer

    waited = load.wait_ready()
    drift = []
    for name, directory in candidates.items():
        say(f"[bench] drift: {name} timed {tasks} times, a fresh timing process every "
            f"{settings.timing_process_tasks} ...")
        start = time.perf_counter()
        timer = PairedTimer(torch_dir, onnx_dir, test_texts, settings)
        try:
            rows = repeated_timings(timer, directory, name, tasks)
        finally:
            timer.close()
        drift.append({"candidate": name, "rows": rows, "summary": drift_summary(rows),
                      "seconds": time.perf_counter() - start})
    # one timing process for the whole comparison (no recycling between its phases)
    timer = PairedTimer(torch_dir, onnx_dir, test_texts,
                        replace(settings, timing_process_tasks=(2 * rounds + 1) * len(candidates)))
    try:
        comparison = load_comparison(timer, candidates, test_texts, settings, load, rounds)
    finally:
        timer.close()
    comparison.update(workers=load.workers, student=load.job.student, worker_threads=load.job.threads,
                      load_seconds_bound=load.max_seconds, worker_start_wait_s=waited)
    return {"tasks": tasks, "process_tasks": settings.timing_process_tasks, "drift": drift, "load": comparison}


def run(args: argparse.Namespace) -> dict:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from objectives.measure import machine_facts
    from objectives.quantize import SCHEMES
    from study.core.timing_lock import LOCK_DIR_ENV
    from study.core.models import resolve_model
    from study.core.teacher import prepare_teacher, scratch_tokenizer

    cfg = study_config(args)
    settings = cfg.measure
    process_tasks = args.process_tasks or (2 if args.quick else settings.timing_process_tasks)
    tasks = args.tasks or 2 * process_tasks
    rounds = args.rounds or (1 if args.quick else 2)
    load_seconds = args.load_seconds or (400.0 if args.quick else 3600.0)
    schemes = names(args.schemes)
    if unknown := [s for s in schemes if s not in SCHEMES]:
        raise UserError(f"unknown scheme(s): {', '.join(unknown)}; known: {', '.join(SCHEMES)}")
    if not schemes:
        raise UserError("--schemes names no scheme")
    if process_tasks < 2 or tasks < 2:
        raise UserError("--process-tasks and --tasks must be at least 2 (a process's last task against its first)")
    if args.workers < 1 or rounds < 1 or load_seconds <= 0:
        raise UserError("--workers and --rounds must be at least 1, --load-seconds positive")
    student = resolve_model(args.load_student)
    settings = replace(settings, timing_process_tasks=process_tasks)
    corpus, split = load_split(cfg, data_path(args))
    spec = resolve_model(cfg.teacher)
    teacher = prepare_teacher(spec, split, cfg.train, cfg.cache_dir, cfg.seed, log=say)
    tokenizer = AutoTokenizer.from_pretrained(str(teacher.tokenizer_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(teacher.model_dir)).eval()
    job = LoadJob(split.train.texts, split.train.labels, split.validation.texts, split.validation.labels,
                  split.label_names, scratch_tokenizer(split, cfg.cache_dir) if student.from_scratch else None,
                  cfg.train, student=student.name,
                  learning_rate=cfg.train.learning_rate_scratch if student.from_scratch
                  else cfg.train.learning_rate_pretrained,
                  threads=max(1, (os.cpu_count() or 1) // args.workers))
    # the workers start (import, tokenize) while the bundles are exported; they train only when switched on
    with tempfile.TemporaryDirectory(prefix="bench-timing-") as tmp, \
            TrainingLoad(job, args.workers, load_seconds) as load:
        torch_dir, onnx_dir, candidates = export_candidates(model, tokenizer, Path(tmp), cfg.train.max_length,
                                                            split.label_names, schemes)
        result = measure(torch_dir, onnx_dir, candidates, split.test.texts, settings, tasks, load, rounds)
    result["load"]["worker_exitcodes"] = load.exitcodes
    facts = machine_facts()
    return {"teacher": spec.name, "data": corpus.source, "data_sha256": corpus.sha256,
            "test_examples": len(split.test), "settings": asdict(settings),
            "lock_dir": os.environ.get(LOCK_DIR_ENV) or tempfile.gettempdir(),
            "machine": f"{facts['cpu']} ({facts['cpu_count']} cores)", "machine_facts": facts, **result}


def table(result: dict) -> str:
    lines = [f"1. One artifact timed {result['tasks']} times through one PairedTimer, a fresh timing process every "
             f"{result['process_tasks']} tasks (teacher {result['teacher']}, {result['test_examples']} test texts, "
             f"{result['settings']['paired_blocks']} blocks per timing)"]
    head = (f"{'candidate':<18} {'task':>4} {'pid':>8} {'#':>3} {'cand ms':>8} {'teacher ms':>10} {'onnx ms':>8} "
            f"{'speed-up':>8}  {'interval':<15} {'s':>5}")
    for block in result["drift"]:
        lines += ["", head, "-" * len(head)]
        for r in block["rows"]:
            lines.append(f"{r['candidate']:<18} {r['task']:4d} {r['pid']:8d} {r['process_task']:3d} "
                         f"{r['latency_ms']:8.3f} "
                         f"{r['teacher_latency_ms']:10.3f} {r['teacher_onnx_latency_ms']:8.3f} {r['speedup']:8.3f}  "
                         f"[{r['speedup_ci'][0]:.3f}, {r['speedup_ci'][1]:.3f}] {r['seconds']:5.1f}")
        s = block["summary"]
        for p in s["processes"]:
            lines.append(f"  pid {p['pid']} ({p['tasks']} tasks): last / first task: candidate "
                         f"{p['latency_last_over_first']:.3f}, teacher {p['teacher_last_over_first']:.3f}, "
                         f"speed-up {p['speedup_last_over_first']:.3f}")
        low, high = s["intervals_common"]
        lines.append(f"  all {s['tasks']} tasks: max / min candidate {s['latency_max_over_min']:.3f}, teacher "
                     f"{s['teacher_latency_max_over_min']:.3f}; speed-up {s['speedup_min']:.3f}-{s['speedup_max']:.3f} "
                     f"(max / min {s['speedup_max_over_min']:.3f}); speed-ups outside another task's interval: "
                     f"{s['speedup_pairs_outside']} of {s['speedup_pairs']} pairs; intervals' common part "
                     + (f"[{low:.3f}, {high:.3f}]" if low <= high else "empty"))
    load = result["load"]
    lines += ["", f"2. Alone vs under training load: {load['workers']} worker processes fitting {load['student']} "
                  f"({load['worker_threads']} thread(s) each, every step inside training_step()), phases "
                  + ", ".join(p["kind"] for p in load["phases"])]
    head = (f"{'candidate':<18} {'paired: ms alone':>16} {'loaded':>7} {'ratio':>6} {'speed-up alone':>14} "
            f"{'loaded':>7} {'ratio':>6} {'<=10%':>5} {'teacher ratio':>13} | {'in-process: ms alone':>20} "
            f"{'loaded':>7} {'ratio':>6}")
    lines += ["", head, "-" * len(head)]
    for name, r in load["summary"].items():
        lines.append(f"{name:<18} {r['paired_latency_ms_alone']:16.3f} {r['paired_latency_ms_loaded']:7.3f} "
                     f"{r['paired_latency_ms_ratio']:6.3f} {r['paired_speedup_alone']:14.3f} "
                     f"{r['paired_speedup_loaded']:7.3f} {r['paired_speedup_ratio']:6.3f} "
                     f"{'yes' if r['paired_within_goal'] else 'NO':>5} {r['paired_teacher_latency_ms_ratio']:13.3f} | "
                     f"{r['in_process_latency_ms_alone']:20.3f} {r['in_process_latency_ms_loaded']:7.3f} "
                     f"{r['in_process_latency_ms_ratio']:6.3f}")
    lines.append("")
    for p in load["phases"]:
        held = "" if p["kind"] == "alone" else f", load held: {'yes' if p['load_held'] else 'NO'}"
        lines.append(f"  phase {p['phase']} {p['kind']:<6}: " + ", ".join(
            f"{n} paired {p['paired'][n]['latency_ms']:.3f} ms x{p['paired'][n]['speedup']:.3f} / in-process "
            f"{p['in_process'][n]['latency_ms']:.3f} ms (cv {p['in_process'][n]['latency_cv']:.1%}, "
            f"{p['in_process'][n]['measure_attempts']:.0f} attempt(s))" for n in p["paired"])
            + f"; worker steps during paired {p['worker_steps_paired']} in {p['paired_seconds']:.0f} s, during "
              f"in-process {p['worker_steps_in_process']} in {p['in_process_seconds']:.0f} s{held}")
    lines.append(f"Ratios are loaded / alone of the medians over the phases of each kind; <=10%: both the paired "
                 "latency and speed-up ratios within 10% of 1 (issue #16's goal); teacher ratio: the fp32 teacher's "
                 "latency in the same paired timings; paired = timed in the "
                 f"timing process, which holds the machine-wide timing lock ({result['lock_dir']}) that training "
                 f"steps wait on; in-process = objectives.measure.measure_speed in this process, no lock. "
                 f"Latency: batch-1 median ms at {result['settings']['threads']} thread(s); speed-up = fp32 teacher "
                 f"(PyTorch) / candidate, median of paired blocks. Machine: {result['machine']}; other processes on "
                 "it were not controlled.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = benchmark_parser("python -m benchmarks.timing", __doc__)
    p.add_argument("--schemes", default=",".join(CANDIDATES),
                   help="candidates: the teacher's network exported with these schemes "
                        f"(default: {','.join(CANDIDATES)})")
    p.add_argument("--process-tasks", type=int, default=None,
                   help="artifacts a timing process times before it is replaced (default: the study's "
                        "timing_process_tasks; 2 with --quick)")
    p.add_argument("--tasks", type=int, default=None,
                   help="timings of each candidate in the drift check (default: 2 x --process-tasks)")
    p.add_argument("--workers", type=int, default=2, help="training worker processes for the load check")
    p.add_argument("--load-student", default="scratch-tiny", help="the model the workers train (default: scratch-tiny)")
    p.add_argument("--rounds", type=int, default=None,
                   help="loaded phases, each between two alone phases (default: 2; 1 with --quick)")
    p.add_argument("--load-seconds", type=float, default=None,
                   help="upper bound on the training workers' lifetime in seconds (default: 3600; 400 with --quick); "
                        "they start with the benchmark, train only in the loaded phases and are stopped as soon "
                        "as the timings under load are done")
    args = p.parse_args(argv)
    return finish(lambda: run(args), table, args.json_out)


if __name__ == "__main__":
    sys.exit(main())
