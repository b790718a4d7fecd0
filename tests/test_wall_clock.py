"""benchmarks.samplers --wall-clock (benchmarks/wall_clock.py) and the helpers it shares with benchmarks.throughput:
the budget rule, the two arms, the paired summary, the cold student cache; one real run on the demo corpus."""

from __future__ import annotations

import json
import math
import statistics
from datetime import datetime, timedelta

import pytest
from optuna.trial import FrozenTrial, TrialState

T0 = datetime(2025, 1, 1, 12, 0, 0)


def _trial(number, start_s, end_s, state=TrialState.COMPLETE, values=(0.5, 0.5, 1.0), hit=None, variant_of=None):
    metrics = {} if hit is None else {"distill_cache_hit": float(hit)}
    attrs = {"metrics": metrics, **({} if variant_of is None else {"variant_of": variant_of})}
    return FrozenTrial(number=number, state=state, value=None,
                       datetime_start=None if start_s is None else T0 + timedelta(seconds=start_s),
                       datetime_complete=None if end_s is None else T0 + timedelta(seconds=end_s),
                       params={}, distributions={}, user_attrs=attrs, system_attrs={}, intermediate_values={},
                       trial_id=number, values=list(values) if state == TrialState.COMPLETE else None)


def test_only_trials_completed_within_the_budget_of_the_first_start_count():
    from benchmarks.wall_clock import within_budget

    trials = [_trial(0, 2, 5, state=TrialState.FAIL),  # the search starts with it, at 2 s
              _trial(1, 5, 20), _trial(2, 20, 32),  # done 30 s after the start: counted
              _trial(3, 32, 33),  # 31 s after the start: the overrun of the study's between-trials timeout check
              _trial(4, 33, None, state=TrialState.RUNNING), _trial(5, None, None, state=TrialState.WAITING)]
    assert [t.number for t in within_budget(trials, 30)] == [1, 2]
    assert [t.number for t in within_budget(trials, 31)] == [1, 2, 3]
    assert [t.number for t in within_budget(trials, 10)] == []
    assert within_budget([], 30) == [] and within_budget(trials[-1:], 30) == []


def test_a_run_counts_its_distillations_variants_and_hypervolume_within_the_budget():
    from benchmarks.samplers import hypervolume
    from benchmarks.wall_clock import summarize_run

    trials = [_trial(0, 0, 10, values=(0.6, 0.5, 2.0), hit=0),  # distils, then 2 variants load its student
              _trial(1, 10, 12, values=(0.5, 0.4, 1.0), hit=1, variant_of=0),
              _trial(2, 12, 14, values=(0.7, 0.8, 3.0), hit=1, variant_of=0),
              _trial(3, 14, 24, values=(0.4, 0.2, 0.5), hit=0),  # a new T and lambda
              _trial(4, 24, 30, state=TrialState.FAIL, hit=0),
              _trial(5, 30, 45, values=(0.9, 0.1, 0.1), hit=0)]  # past the 40 s budget: not counted
    row = summarize_run("reuse", 1000, trials, 40, teacher_size_mb=4.0)
    assert (row["counted"], row["completed"], row["failed"]) == (4, 5, 1)
    assert (row["distillations"], row["cache_hits"], row["variants"], row["distillations_completed"]) == (2, 2, 2, 3)
    counted = [(0.6, 0.5, 2.0), (0.5, 0.4, 1.0), (0.7, 0.8, 3.0), (0.4, 0.2, 0.5)]
    assert row["values"] == counted
    assert row["hypervolume"] == pytest.approx(hypervolume(counted, {"teacher_size_mb": 4.0}))
    # the overrunning trial dominates everything: counting it would change the result
    assert row["hypervolume"] < hypervolume(counted + [(0.9, 0.1, 0.1)], {"teacher_size_mb": 4.0})
    # the second objective is already relative to the teacher; only the size is divided by the teacher's
    assert summarize_run("reuse", 1, trials[:1], 40, 4.0)["hypervolume"] == pytest.approx(0.6 * 0.5 * 0.5)
    assert summarize_run("reuse", 1, [], 40, 4.0)["hypervolume"] == 0.0


def test_the_per_trial_arm_is_the_same_study_with_no_student_cache(tmp_path):
    from dataclasses import asdict

    from benchmarks.wall_clock import ARMS, UNBOUNDED_TRIALS, arm_config
    from objectives.student_cache import student_cache
    from study.core.config import StudyConfig, quick_overrides

    base = quick_overrides(StudyConfig(students=("teacher-l2",), quick=True))
    arms = {arm: arm_config(base, arm, seconds=30.0, sampler_seed=1001, workdir=tmp_path / arm,
                            cache_dir=tmp_path / "cache") for arm in ARMS}
    reuse, per_trial = arms["reuse"], arms["per-trial"]
    assert reuse.distill_cache_gb == base.distill_cache_gb > 0 and per_trial.distill_cache_gb == 0.0
    assert reuse.variants_per_distillation == base.variants_per_distillation == "auto"  # the study's default
    # every trial of the per-trial arm distils: its trial contexts get no student cache (pair_study.pair_contexts),
    # so objectives.student.distilled_student trains in memory and pair_study.work queues no variants
    assert student_cache(per_trial.cache_dir, per_trial.distill_cache_gb) is None
    assert student_cache(reuse.cache_dir, reuse.distill_cache_gb) is not None
    for cfg in arms.values():
        assert (cfg.timeout, cfg.n_trials, cfg.sampler_seed, cfg.seed) == (30.0, UNBOUNDED_TRIALS, 1001, base.seed)
        assert (cfg.quiet, cfg.keep_models, cfg.students, cfg.sampler) == (True, "none", ("teacher-l2",), "tpe")
    assert reuse.storage != per_trial.storage and reuse.tracking_uri != per_trial.tracking_uri
    differ = {k for k, v in asdict(reuse).items() if asdict(per_trial)[k] != v}
    assert differ == {"distill_cache_gb", "storage", "tracking_uri"}  # nothing else tells the arms apart
    with pytest.raises(ValueError):
        arm_config(base, "two-level", seconds=1, sampler_seed=1, workdir=tmp_path, cache_dir=tmp_path)


def _rows(reuse, per_trial):
    rows = [{"arm": "reuse", "seed": 1000 + i, "hypervolume": hv} for i, hv in enumerate(reuse)]
    return rows + [{"arm": "per-trial", "seed": 1000 + i, "hypervolume": hv} for i, hv in enumerate(per_trial)]


def test_the_paired_summary_is_reuse_minus_per_trial_at_each_seed():
    from benchmarks.samplers import paired_p_values
    from benchmarks.wall_clock import paired_difference

    reuse, per_trial = [0.30, 0.32, 0.35, 0.31, 0.40, 0.34], [0.25, 0.30, 0.36, 0.20, 0.30, 0.31]
    seeds = list(range(1000, 1006))
    p = paired_difference(_rows(reuse, per_trial), seeds)
    gains = [a - b for a, b in zip(reuse, per_trial)]
    assert p["gains"] == pytest.approx(gains) and p["mean_gain"] == pytest.approx(statistics.fmean(gains))
    assert p["standard_error"] == pytest.approx(statistics.stdev(gains) / math.sqrt(6))
    assert (p["seeds_won"], p["seeds"]) == (5, 6)
    expected = paired_p_values(reuse, per_trial)
    assert (p["wilcoxon_p"], p["paired_t_p"]) == pytest.approx((expected["wilcoxon_p"], expected["paired_t_p"]))
    assert p["wilcoxon_smallest_p"] == pytest.approx(2 / 64)
    # differences +.05 +.02 -.01 +.11 +.10 +.03: the negative one has rank 1, so p = 2 x 2/64 (sums 0 and 1)
    assert p["wilcoxon_p"] == pytest.approx(4 / 64) and not p["beats"]
    better = [x + 0.01 * (i + 1) for i, x in enumerate(per_trial)]  # distinct gains: no ties in the ranks
    ahead = paired_difference(_rows(better, per_trial), seeds)
    assert ahead["wilcoxon_p"] == pytest.approx(2 / 64) and ahead["beats"]  # 6 of 6 ahead: p = 1/32 < 0.05
    five = paired_difference(_rows(better[:5], per_trial[:5]), seeds[:5])
    assert five["wilcoxon_p"] == pytest.approx(2 / 32) and not five["beats"]  # 5 seeds cannot get below 0.0625
    behind = paired_difference(_rows(per_trial, better), seeds)
    assert behind["wilcoxon_p"] == pytest.approx(2 / 64) and not behind["beats"]  # significant, the wrong way


def test_the_table_gives_each_arm_the_difference_and_the_verdict():
    from benchmarks.wall_clock import paired_difference, table

    seeds = [1000, 1001]
    rows = _rows([0.3, 0.4], [0.2, 0.1])
    for r in rows:
        r.update(counted=3, completed=4, distillations=1 if r["arm"] == "reuse" else 3)
    result = {"wall_clock_s": 20.0, "teacher": "scratch-tiny", "student": "scratch-tiny", "sampler": "tpe",
              "machine": "Some CPU (2 cores)",
              "variants_per_distillation": 4, "seeds": seeds, "rows": rows, "paired": paired_difference(rows, seeds),
              "summary": {"reuse": {"mean": 0.35, "std": 0.05, "runs": 2, "mean_counted": 3, "mean_distillations": 1},
                          "per-trial": {"mean": 0.15, "std": 0.05, "runs": 2, "mean_counted": 3,
                                        "mean_distillations": 3}}}
    text = table(result)
    assert "reuse minus per-trial at the same sampler seed: +0.2000" in text and "ahead at 2 of 2 seeds" in text
    assert "0.3000 (3/4, 1)" in text and "0.1000 (3/4, 3)" in text
    assert "Verdict: reuse does not beat per-trial at 20 s per search" in text and "cannot fall below 0.5" in text
    assert "on Some CPU (2 cores)" in text


@pytest.mark.parametrize("flags, message", [
    (["--wall-clock", "0"], "--wall-clock must be a positive number of seconds"),
    (["--wall-clock", "-5"], "--wall-clock must be a positive number of seconds"),
    (["--wall-clock", "nan"], "--wall-clock must be a positive number of seconds"),
    (["--wall-clock", "20", "--student", "teacher"], "--student must name a student model"),
    (["--wall-clock", "20", "--seeds", "0"], "--seeds must be at least 1"),
])
def test_bad_wall_clock_flags_exit_2_before_anything_is_written(flags, message, tmp_path, capsys):
    from benchmarks.samplers import main

    assert main([*flags, "--cache-dir", str(tmp_path / "cache"), "--json-out", str(tmp_path / "out.json")]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no teacher trained, no JSON


def test_a_cold_student_cache_links_everything_but_the_students(tmp_path):
    from benchmarks.common import cold_student_cache

    shared = tmp_path / "shared"
    (shared / "students" / "abc").mkdir(parents=True)
    (shared / "teachers" / "t1").mkdir(parents=True)
    (shared / "notes.txt").write_text("kept")
    run = cold_student_cache(shared, tmp_path / "run" / "cache")
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt", "teachers", "tokenizers"]
    assert (shared / "tokenizers").is_dir()  # made in the shared dir, so what the run trains is kept there
    assert all(p.is_symlink() and p.resolve() == (shared / p.name).resolve() for p in run.iterdir())
    assert (run / "teachers" / "t1").is_dir() and (run / "notes.txt").read_text() == "kept"
    (run / "tokenizers" / "new").mkdir()
    assert (shared / "tokenizers" / "new").is_dir()
    (run / "students").mkdir()  # the run's students stay its own
    assert sorted(p.name for p in (shared / "students").iterdir()) == ["abc"]
    assert not (cold_student_cache(tmp_path / "fresh", tmp_path / "run2") / "students").exists()


def test_reuse_counts_read_the_trials_cache_hits_and_variants():
    from benchmarks.common import reuse_counts

    trials = [_trial(0, 0, 1, hit=0), _trial(1, 1, 2, hit=1, variant_of=0), _trial(2, 2, 3, hit=1, variant_of=0),
              _trial(3, 3, 4, hit=1)]  # a fresh draw of a T and lambda distilled before: a hit, not a variant
    assert reuse_counts(trials) == {"distillations": 1, "cache_hits": 3, "cache_hit_rate": 0.75, "variants": 2}
    assert math.isnan(reuse_counts([])["cache_hit_rate"])


@pytest.mark.slow
def test_wall_clock_benchmark_runs_both_arms_through_the_study(tmp_path, capsys):
    from benchmarks.samplers import main
    from benchmarks.wall_clock import ARMS

    out = tmp_path / "wall.json"
    # 60 s: a demo trial takes 7 s on 2 idle cores, but its distillation took 5 to 120 s on 2 cores shared with
    # other busy processes; a reuse run whose first trial (a distillation) ends within the budget starts a second
    # one, a queued variant
    # K = 2 fixed: under auto a demo distillation faster than the trial's timing queues no variant
    assert main(["--quick", "--teacher", "scratch-tiny", "--student", "scratch-tiny", "--wall-clock", "60",
                 "--seeds", "2", "--variants-per-distillation", "2", "--cache-dir", str(tmp_path / "cache"),
                 "--json-out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["mode"] == "wall_clock" and result["wall_clock_s"] == 60 and result["seeds"] == [1000, 1001]
    assert "cores)" in result["machine"] and result["student"] == "scratch-tiny"
    assert [(r["arm"], r["seed"]) for r in result["rows"]] == [(a, s) for s in (1000, 1001) for a in ARMS]
    for r in result["rows"]:
        assert r["counted"] <= r["completed"] and r["completed"] >= 1 and len(r["values"]) == r["counted"]
        assert 0.0 <= r["hypervolume"] <= 1.0 and r["teacher_size_mb"] > 0
        assert r["distillations"] <= r["counted"]
    per_trial = [r for r in result["rows"] if r["arm"] == "per-trial"]
    reuse = [r for r in result["rows"] if r["arm"] == "reuse"]
    # every trial of the per-trial arm distilled; the reuse arm's second trial is a variant that loaded its student
    assert all(r["distillations"] == r["counted"] and r["distillations_completed"] == r["completed"]
               and r["variants"] == 0 for r in per_trial)
    ran_on = [r for r in reuse if r["completed"] >= 2]
    assert ran_on and all(r["distillations_completed"] < r["completed"] for r in ran_on)
    assert set(result["summary"]) == set(ARMS) and result["paired"]["seeds"] == 2
    assert result["paired"]["gains"] == pytest.approx([a["hypervolume"] - b["hypervolume"]
                                                       for a, b in zip(reuse, per_trial)])
    assert not (tmp_path / "cache" / "students").exists()  # every run's students stayed in its own cold cache
    assert any((tmp_path / "cache" / "teachers").iterdir())  # the teacher, trained once, is shared
    printed = capsys.readouterr().out
    assert "reuse minus per-trial at the same sampler seed" in printed and "Verdict: reuse " in printed
