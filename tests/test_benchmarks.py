"""The benchmarks on the demo corpus with tiny budgets: real runs, real numbers, checked for sense."""

import json

import pytest


def test_hypervolume_is_the_dominated_box_volume_against_the_teacher():
    from benchmarks.samplers import hypervolume

    teacher = {"teacher_latency_ms": 10.0, "teacher_size_mb": 4.0}
    # one point at half the teacher's latency and size with macro-F1 0.5: a box of 0.5 x 0.5 x 0.5
    assert hypervolume([(0.5, 5.0, 2.0)], teacher) == pytest.approx(0.125)
    # a point slower than the teacher lies outside the reference box and adds nothing
    assert hypervolume([(0.5, 5.0, 2.0), (0.9, 12.0, 1.0)], teacher) == pytest.approx(0.125)
    # a second, non-dominated point adds only the volume the first does not cover
    both = hypervolume([(0.5, 5.0, 2.0), (0.8, 9.0, 2.0)], teacher)
    assert both == pytest.approx(0.125 + 0.8 * 0.1 * 0.5 - 0.5 * 0.1 * 0.5)
    assert hypervolume([], teacher) == 0.0


def test_samplers_benchmark_runs_every_sampler_at_the_same_budget(tmp_path, capsys):
    from benchmarks.samplers import main

    out = tmp_path / "samplers.json"
    assert main(["--quick", "--teacher", "scratch-tiny", "--samplers", "random,tpe", "--seeds", "2",
                 "--n-trials", "2", "--cache-dir", str(tmp_path / "cache"), "--json-out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [(r["sampler"], r["seed"]) for r in result["rows"]] == [("random", 1000), ("random", 1001),
                                                                    ("tpe", 1000), ("tpe", 1001)]
    assert all(r["completed"] + r["failed"] == 2 for r in result["rows"])
    assert all(0.0 <= r["hypervolume"] <= 1.0 for r in result["rows"])
    assert any(r["hypervolume"] > 0 for r in result["rows"])  # some compressed model beats the teacher's box
    # every run's hypervolume is taken against one teacher timing: the median over the runs' own processes
    from benchmarks.samplers import hypervolume
    import statistics

    common = result["teacher_reference"]
    assert common["teacher_latency_ms"] == statistics.median(r["teacher_reference"]["teacher_latency_ms"]
                                                             for r in result["rows"])
    for r in result["rows"]:
        assert len(r["values"]) == r["completed"]
        assert r["hypervolume"] == pytest.approx(hypervolume([tuple(v) for v in r["values"]], common))
        assert r["hypervolume_own_reference"] == pytest.approx(hypervolume([tuple(v) for v in r["values"]],
                                                                           r["teacher_reference"]))
    assert set(result["summary"]) == {"random", "tpe"}
    # the paired comparison: tpe minus random at each seed
    paired = result["paired"]["tpe"]
    gains = [t["hypervolume"] - r["hypervolume"] for r, t in zip(result["rows"][:2], result["rows"][2:])]
    assert paired["gains"] == pytest.approx(gains)
    assert paired["mean_gain"] == pytest.approx(statistics.fmean(gains))
    assert paired["standard_error"] == pytest.approx(statistics.stdev(gains) / 2 ** 0.5)
    assert paired["seeds_won"] == sum(g > 0 for g in gains) and paired["seeds"] == 2
    assert set(result["paired"]) == {"tpe"}
    printed = capsys.readouterr().out
    assert "mean HV" in printed and "random" in printed and "tpe minus random at the same seed" in printed


def test_samplers_benchmark_rejects_unknown_samplers(capsys):
    from benchmarks.samplers import main

    assert main(["--samplers", "random,grid"]) == 2
    assert "grid" in capsys.readouterr().err


def test_throughput_benchmark_reports_trials_per_hour_and_stages(tmp_path, capsys):
    from benchmarks.throughput import STAGES, main

    out = tmp_path / "throughput.json"
    assert main(["--quick", "--teacher", "scratch-tiny", "--students", "scratch-tiny", "--n-trials", "2",
                 "--cache-dir", str(tmp_path / "cache"), "--json-out", str(out)]) == 0
    result = json.loads(out.read_text())
    (quick,) = result["settings"]
    assert quick["setting"] == "quick" and quick["trials"] == 2
    assert quick["trials_per_hour"] == pytest.approx(3600.0 / quick["mean_trial_s"])
    staged = sum(quick["stage_mean_s"][s] for s in STAGES)
    assert 0 < staged <= quick["mean_trial_s"]  # the stages are parts of the trial's time
    assert quick["stage_mean_s"]["distil"] > 0 and quick["stage_mean_s"]["measure"] > 0
    assert "trials/h" in capsys.readouterr().out


def test_compression_benchmark_rows_are_ratios_against_the_fp32_teacher(tmp_path, capsys):
    from benchmarks.compression import main

    out = tmp_path / "compression.json"
    assert main(["--quick", "--teacher", "scratch-tiny", "--kinds", "none,heads_ffn", "--schemes",
                 "none,onnx_dynamic_int8", "--cache-dir", str(tmp_path / "cache"), "--json-out", str(out)]) == 0
    rows = {(r["prune_kind"], r["scheme"]): r for r in json.loads(out.read_text())["rows"]}
    base = rows[("none", "none")]
    int8 = rows[("none", "onnx_dynamic_int8")]
    # the ratios recomputed from the rows' own measurements: in kind none's process the first row (the fp32
    # teacher, no pruning, no quantization) is the reference the int8 row is timed against
    assert base["prune_ratio"] == 0.0 and int8["reference_latency_ms"] == base["latency_ms"]
    assert int8["speedup_batch1"] == pytest.approx(base["latency_ms"] / int8["latency_ms"])
    assert int8["throughput_ratio"] == pytest.approx(int8["throughput_per_s_allcores"]
                                                     / base["throughput_per_s_allcores"])
    assert int8["size_ratio"] == pytest.approx(base["size_mb"] / int8["size_mb"])
    assert int8["macro_f1_delta"] == pytest.approx(int8["macro_f1"] - base["macro_f1"])
    assert int8["size_ratio"] > 2.0  # int8 weights: well under half the fp32 bytes
    pruned = rows[("heads_ffn", "none")]
    assert pruned["nonzero_params"] < base["nonzero_params"]
    assert 0 <= base["latency_cv"] < 1.0
    # the teacher is timed again before the heads_ffn rows, and their speed ratios use that timing
    references = json.loads(out.read_text())["references"]
    assert [r["before"] for r in references] == ["none", "heads_ffn"]
    assert references[0]["latency_ms"] == base["latency_ms"] and references[1]["macro_f1"] == base["macro_f1"]
    assert pruned["reference_latency_ms"] == references[1]["latency_ms"]
    assert pruned["speedup_batch1"] == references[1]["latency_ms"] / pruned["latency_ms"]
    assert "speedup" in capsys.readouterr().out
