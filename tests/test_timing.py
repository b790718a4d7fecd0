"""Isolated, paired timing: the interval for a median, the machine-wide lock, and the timing process."""

from __future__ import annotations

import multiprocessing
import os
import time
from dataclasses import replace

import pytest

from objectives.timing import PairedTimer, median_interval
from study.core.config import MeasureSettings


def test_median_interval_uses_the_widest_order_statistics_that_reach_95_percent():
    low, high, coverage = median_interval([6.0, 1.0, 5.0, 2.0, 4.0, 3.0])
    assert (low, high) == (1.0, 6.0) and coverage == pytest.approx(1 - 2 / 64)
    # n = 10: the 2nd smallest/largest cover the median with 1 - 2 * (1 + 10) / 1024 = 97.9%; the 3rd only 89.1%
    low, high, coverage = median_interval([float(v) for v in range(10, 0, -1)])
    assert (low, high) == (2.0, 9.0) and coverage == pytest.approx(1 - 22 / 1024)
    low, high, coverage = median_interval([2.0, 1.0, 3.0])  # too few blocks for 95%: the range, stated as 75%
    assert (low, high, coverage) == (1.0, 3.0, 0.75)


def _hold_the_timing_lock(directory: str, seconds: float = 0.5) -> None:
    os.environ["STUDY_TIMING_LOCK_DIR"] = directory
    from study.core.timing_lock import timing_exclusive

    with timing_exclusive():
        open(os.path.join(directory, "locked"), "w").close()
        time.sleep(seconds)
        open(os.path.join(directory, "released"), "w").close()


def test_a_training_step_waits_while_another_process_times(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDY_TIMING_LOCK_DIR", str(tmp_path))
    from study.core.timing_lock import training_step

    timing = multiprocessing.get_context("spawn").Process(target=_hold_the_timing_lock, args=(str(tmp_path),))
    timing.start()
    deadline = time.monotonic() + 60
    while not (tmp_path / "locked").exists():
        assert time.monotonic() < deadline and timing.is_alive(), "the timing process never took the lock"
        time.sleep(0.01)
    with training_step():
        assert (tmp_path / "released").exists()  # the step could only start once the timing had finished
    timing.join(30)
    assert timing.exitcode == 0


def test_a_lock_folder_that_does_not_exist_yet_is_made(tmp_path, monkeypatch):
    """$STUDY_TIMING_LOCK_DIR naming a folder not made yet (e.g. one shared by studies started side by side)."""
    folder = tmp_path / "not" / "made"
    monkeypatch.setenv("STUDY_TIMING_LOCK_DIR", str(folder))
    from study.core.timing_lock import timing_exclusive, training_step

    with timing_exclusive():
        pass
    with training_step():
        pass
    assert sorted(p.name for p in folder.iterdir()) == ["bert-compress-study-timing.gate.lock",
                                                        "bert-compress-study-timing.work.lock"]


def test_scoring_and_exporting_wait_while_another_process_times(trained_tiny, demo_split, tmp_path, monkeypatch):
    """Not only optimizer steps: scoring the served artifact (every core) and exporting it wait too."""
    import copy

    from objectives.measure import evaluate
    from objectives.trial import export_bundle
    from study.core.training import encode, torch_logits

    monkeypatch.setenv("STUDY_TIMING_LOCK_DIR", str(tmp_path))
    model, tok = trained_tiny
    texts, labels = demo_split.test.texts[:16], demo_split.test.labels[:16]
    enc = encode(tok, texts, 64)
    work = {
        "torch_logits": lambda: torch_logits(model, enc, tok.pad_token_id),
        "export": lambda: export_bundle(copy.deepcopy(model), tok, "onnx_dynamic_int8", tmp_path / "bundle", 64,
                                        demo_split.label_names),
        "evaluate": lambda: evaluate(export_bundle(copy.deepcopy(model), tok, "none", tmp_path / "torch", 64,
                                                   demo_split.label_names).predictor, enc, labels, tok.pad_token_id),
    }
    hold = 3.0
    for name, job in work.items():
        start = time.monotonic()
        job()  # nobody times: it runs at once, well within the hold below
        alone = time.monotonic() - start
        assert alone < hold / 2, (name, alone)
        for marker in ("locked", "released"):
            (tmp_path / marker).unlink(missing_ok=True)
        timing = multiprocessing.get_context("spawn").Process(target=_hold_the_timing_lock,
                                                              args=(str(tmp_path), hold))
        timing.start()
        deadline = time.monotonic() + 60
        while not (tmp_path / "locked").exists():
            assert time.monotonic() < deadline and timing.is_alive(), "the timing process never took the lock"
            time.sleep(0.01)
        start = time.monotonic()
        job()
        waited = time.monotonic() - start
        # it could only run once the timing had finished: it took the rest of the hold, not its own time
        assert (tmp_path / "released").exists() and waited > hold / 2 > alone, (name, waited, alone)
        timing.join(30)
        assert timing.exitcode == 0


@pytest.fixture(scope="module")
def bundles(trained_tiny, demo_split, tmp_path_factory):
    import copy

    from objectives.trial import export_bundle

    model, tok = trained_tiny
    root = tmp_path_factory.mktemp("timing")
    out = {}
    for name, scheme in (("teacher", "none"), ("teacher_onnx", "onnx_fp32"), ("candidate", "onnx_dynamic_int8")):
        export_bundle(copy.deepcopy(model), tok, scheme, root / name, 64, demo_split.label_names)
        out[name] = root / name
    return out


@pytest.mark.slow
def test_paired_timing_in_a_recycled_process(bundles, demo_split, monkeypatch, tmp_path):
    monkeypatch.setenv("STUDY_TIMING_LOCK_DIR", str(tmp_path))
    settings = replace(MeasureSettings(), warmup=2, warmup_seconds=0.0, latency_examples=8, repeats=2,
                       min_pass_seconds=0.01, throughput_batches=2, throughput_batch_size=4, paired_blocks=3,
                       max_paired_blocks=3, timing_process_tasks=2)
    timer = PairedTimer(bundles["teacher"], bundles["teacher_onnx"], demo_split.test.texts, settings)
    try:
        first, second, third = (timer.time(bundles["candidate"]) for _ in range(3))
    finally:
        timer.close()
    for t in (first, second, third):
        assert t.pid != os.getpid() and t.blocks == 3 and t.coverage == 0.75
        assert t.speedup_ci[0] <= t.speedup <= t.speedup_ci[1]
        assert t.speedup_onnx_ci[0] <= t.speedup_onnx <= t.speedup_onnx_ci[1]
        assert t.speedup_onnx <= t.speedup  # against the teacher's faster runtime, block by block
        assert t.latency_e2e_ms > 0.5 * t.latency_ms > 0 and t.teacher_latency_ms > 0 and t.throughput_per_s > 0
        metrics = t.as_metrics()
        assert metrics["speedup_vs_teacher_onnx"] == t.speedup_onnx and metrics["latency_ms"] == t.latency_ms
    # recycled after 2 artifacts: the third is timed by a fresh process
    assert (first.pid, first.process_task, second.process_task) == (second.pid, 1, 2)
    assert third.pid != first.pid and third.process_task == 1


def _time_forever(bundle_dirs, texts, lock_dir, pid_file):
    os.environ["STUDY_TIMING_LOCK_DIR"] = lock_dir
    timer = PairedTimer(bundle_dirs["teacher"], bundle_dirs["teacher_onnx"], texts,
                        replace(MeasureSettings(), warmup=1, warmup_seconds=0.0, latency_examples=4, repeats=1,
                                min_pass_seconds=0.01, throughput_batches=1, throughput_batch_size=2, paired_blocks=1,
                                max_paired_blocks=1))
    timing = timer.time(bundle_dirs["candidate"])
    with open(pid_file, "w") as fh:
        fh.write(str(timing.pid))
    time.sleep(600)  # killed with -9 by the test


@pytest.mark.slow
def test_the_timing_process_ends_when_the_study_process_is_killed(bundles, demo_split, tmp_path):
    import signal

    study = multiprocessing.get_context("spawn").Process(
        target=_time_forever, args=({k: str(v) for k, v in bundles.items()}, list(demo_split.test.texts[:8]),
                                    str(tmp_path), str(tmp_path / "pid")))
    study.start()
    deadline = time.monotonic() + 300
    while not (tmp_path / "pid").exists():
        assert time.monotonic() < deadline and study.is_alive(), "the study process never timed anything"
        time.sleep(0.1)
    timing_pid = int((tmp_path / "pid").read_text())
    os.kill(study.pid, signal.SIGKILL)
    study.join(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(timing_pid, 0)
        except ProcessLookupError:
            return  # gone
        time.sleep(0.2)
    os.kill(timing_pid, signal.SIGKILL)
    pytest.fail("the timing process outlived the killed study process by 30 s")


def _scripted(candidate_medians: list[float]):
    """A stand-in for ``latency_pass``: the teacher's passes take 1 ms a call, the candidate's pass medians
    follow ``candidate_medians`` (then repeat its last)."""
    given = iter(candidate_medians)
    last = [candidate_medians[-1]]

    def latency_pass(call, singles, min_seconds):
        if call == "candidate":
            last[0] = next(given, last[0])
            return [last[0]]
        return [1.0]

    return latency_pass


def _scripted_calls():
    return {"teacher": ("teacher", [0]), "candidate": ("candidate", [0]), "teacher_onnx": ("teacher_onnx", [0])}


def test_blocks_stop_at_the_minimum_when_the_interval_is_tight_and_add_more_while_it_is_wide(monkeypatch):
    import objectives.timing as timing

    monkeypatch.setattr(timing, "warm_up", lambda *a: None)
    settings = replace(MeasureSettings(), warmup=0, paired_blocks=6, max_paired_blocks=10, interval_tolerance=0.10)
    monkeypatch.setattr(timing, "latency_pass", _scripted([0.20, 0.21, 0.20, 0.19, 0.20, 0.205]))
    medians, _ = timing._paired_blocks(_scripted_calls(), settings)
    assert len(medians["candidate"]) == 6  # within +-10% after 6 blocks: the protocol's minimum, no more
    monkeypatch.setattr(timing, "latency_pass", _scripted([0.10, 0.30, 0.20, 0.12, 0.28, 0.20]))
    medians, _ = timing._paired_blocks(_scripted_calls(), settings)
    assert len(medians["candidate"]) == 10  # 0.12..0.28 around 0.20 stays wider than +-10%: up to the maximum


def test_the_default_stopping_rule_stops_at_6_blocks_within_15_percent_and_never_runs_a_10th(monkeypatch):
    """The shipped defaults (#18): 6 blocks at least, at most 9, tight at +-15% of the median ratio; 9 is where
    the interval of the median first drops the extremes (2nd..8th smallest)."""
    import objectives.timing as timing

    monkeypatch.setattr(timing, "warm_up", lambda *a: None)
    settings = replace(MeasureSettings(), warmup=0)
    assert (settings.paired_blocks, settings.max_paired_blocks, settings.interval_tolerance) == (6, 9, 0.15)
    # 0.175..0.225 around 0.20 is within +-15% (not +-10%, the rule before #18): the minimum, 6 blocks
    monkeypatch.setattr(timing, "latency_pass", _scripted([0.20, 0.225, 0.175, 0.21, 0.19, 0.20]))
    medians, _ = timing._paired_blocks(_scripted_calls(), settings)
    assert len(medians["candidate"]) == 6
    # 0.10..0.30 stays wider than +-15% however many blocks: up to 9, never a 10th
    monkeypatch.setattr(timing, "latency_pass", _scripted([0.10, 0.30, 0.20, 0.12, 0.28, 0.20, 0.10, 0.30, 0.20]))
    medians, _ = timing._paired_blocks(_scripted_calls(), settings)
    assert len(medians["candidate"]) == 9
    ordered = sorted(medians["candidate"])
    low, high, coverage = timing.median_interval(medians["candidate"])
    assert (low, high) == (ordered[1], ordered[7]) and coverage == pytest.approx(1 - 2 * 10 / 512)  # 96.1%
    assert timing.median_interval(ordered[:8])[:2] == (ordered[0], ordered[7])  # at 8 blocks: still min..max


def test_a_teacher_is_warmed_up_fully_once_per_timing_process(monkeypatch):
    import objectives.timing as timing

    full = []
    monkeypatch.setattr(timing, "warm_up", lambda call, singles, settings: full.append(call))
    monkeypatch.setattr(timing, "latency_pass", _scripted([0.2]))
    calls = {name: ((lambda item, name=name: None), [0]) for name in ("teacher", "candidate", "teacher_onnx")}
    settings = replace(MeasureSettings(), warmup=3, paired_blocks=1, max_paired_blocks=1)
    timing._paired_blocks(calls, settings)
    assert full == [calls["teacher"][0], calls["candidate"][0], calls["teacher_onnx"][0]]
    full.clear()
    timing._paired_blocks(calls, settings, warmed={"teacher", "teacher_onnx"})
    assert full == [calls["candidate"][0]]  # the candidate is new every time: always the whole warm-up


def test_throughput_and_end_to_end_passes_stop_once_steady():
    from objectives.measure import steady_passes

    settings = replace(MeasureSettings(), repeats=5, min_repeats=3, stop_cv=0.03)
    steady = iter([100.0, 101.0, 100.5, 99.0, 100.0])
    assert steady_passes(lambda: next(steady), settings) == [100.0, 101.0, 100.5]
    unsteady = iter([100.0, 130.0, 90.0, 100.0, 120.0])
    assert steady_passes(lambda: next(unsteady), settings) == [100.0, 130.0, 90.0, 100.0, 120.0]
    settling = iter([100.0, 130.0, 100.0, 101.0, 100.0])  # CV of 4 passes > 3%: all 5 passes
    assert len(steady_passes(lambda: next(settling), settings)) == 5
