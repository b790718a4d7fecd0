"""Budgets as constraints (feasible tags, the front among feasible trials) and the rules that pick one model."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from study.core.budgets import Budgets
from study.core.errors import UserError
from study.reporting.front import pareto_trials
from study.reporting.picks import knee, parse_rule, pick, pick_each
from study.run import main
from study.reporting.tracking import RUN_ID_ATTR

DIRECTIONS = ["maximize", "minimize", "minimize"]


def _dominates(a, b):
    return (a[0] >= b[0] and a[1] <= b[1] and a[2] <= b[2]) and (a[0] > b[0] or a[1] < b[1] or a[2] < b[2])


def _study(points, extra=None, name="s"):
    """A study of completed trials with values ``points`` and the metrics budgets read (teacher F1 0.5)."""
    study = optuna.create_study(directions=DIRECTIONS)
    for i, (f1, rel, mb) in enumerate(points):
        t = study.ask()
        metrics = {"macro_f1_validation": f1, "latency_vs_teacher": rel, "size_mb": mb, "latency_ms": rel * 4.0,
                   "speedup_vs_teacher_onnx": 1.5 / rel, "compression_vs_teacher": 20.0 / mb,
                   "macro_f1_validation_delta_vs_teacher": f1 - 0.5, **(extra[i] if extra else {})}
        t.set_user_attr("metrics", metrics)
        t.set_user_attr("study", name)
        t.set_user_attr(RUN_ID_ATTR, f"run-{i}")
        study.tell(t, [f1, rel, mb])
    return study


def test_violations_in_each_budgets_unit():
    metrics = {"latency_ms": 2.5, "size_mb": 8.0, "macro_f1_validation": 0.46,
               "macro_f1_validation_delta_vs_teacher": -0.04, "speedup_vs_teacher_onnx": 3.0,
               "compression_vs_teacher": 2.5}
    b = Budgets.of(max_latency_ms=2.0, max_size_mb=10, min_macro_f1=0.5, max_f1_loss=3, min_speedup=4,
                   min_compression=2)
    got = b.violations(metrics)
    assert set(got) == {"max_latency_ms", "min_macro_f1", "max_f1_loss", "min_speedup"}
    assert got["max_latency_ms"] == pytest.approx(0.5)
    assert got["min_macro_f1"] == pytest.approx(0.04)
    assert got["max_f1_loss"] == pytest.approx(1.0)  # 4 points lost, 3 allowed
    assert got["min_speedup"] == pytest.approx(1.0)
    assert b.tags(metrics) == {"feasible": "false", "violated_budgets": "max_latency_ms,min_macro_f1,max_f1_loss,min_speedup"}
    assert Budgets.of(max_size_mb=10).tags(metrics) == {"feasible": "true", "violated_budgets": "none"}
    assert Budgets().tags(metrics) == {"feasible": "true", "violated_budgets": "none"}
    # Optuna constraint values: <= 0 where met, the miss where not; a metric never measured counts as missed
    assert b.constraints(metrics) == pytest.approx({"max_latency_ms": 0.5, "max_size_mb": -2.0, "min_macro_f1": 0.04,
                                                    "max_f1_loss": 1.0, "min_speedup": 1.0, "min_compression": -0.5})
    assert math.isinf(Budgets.of(max_latency_ms=1).violations({})["max_latency_ms"])


@pytest.mark.parametrize("flag, value", [("--max-size-mb", "0"), ("--min-macro-f1", "1.5"),
                                         ("--min-speedup", "-2"), ("--max-latency-ms", "nan")])
def test_an_impossible_budget_is_refused_before_anything_is_written(tmp_path, capsys, flag, value):
    assert main(["--quick", "--storage", f"sqlite:///{tmp_path}/o.db", "--tracking-uri", f"sqlite:///{tmp_path}/m.db",
                 flag, value]) == 2
    assert flag in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_front_with_budgets_is_the_brute_force_front_of_the_feasible_trials():
    rng = np.random.default_rng(3)
    rel, mb = rng.integers(1, 6, size=80) / 5, rng.integers(1, 8, size=80).astype(float)
    f1 = np.round((rel / 2 + mb / 16) + rng.integers(-1, 2, size=80) / 10, 1)  # a trade-off, with ties on purpose
    points = [(float(a), float(b), float(c)) for a, b, c in zip(f1, rel, mb)]
    study = _study(points)
    budgets = Budgets.of(max_f1_loss=20, max_size_mb=5)  # F1 >= 0.3 and <= 5 MB
    feasible = [i for i, p in enumerate(points) if p[0] >= 0.3 - 1e-12 and p[2] <= 5]
    expected = {i for i in feasible if not any(_dominates(points[j], points[i]) for j in feasible)}
    assert {t.number for t in pareto_trials(study.trials, budgets=budgets)} == expected
    unconstrained = {i for i, p in enumerate(points) if not any(_dominates(q, p) for q in points)}
    assert expected != unconstrained  # the budgets moved the front: the test means something
    assert {t.number for t in pareto_trials(study.trials)} == unconstrained


class FakeTracker:
    def __init__(self):
        self.tags, self.deleted, self.metrics, self.status = {}, [], {}, None

    def set_tags(self, run_id, tags):
        self.tags.setdefault(run_id, {}).update(tags)

    def delete_artifacts(self, run_id, path):
        self.deleted.append(run_id)
        return True

    def log_metrics(self, run_id, metrics):
        self.metrics.update(metrics)

    def log_artifact(self, run_id, path):
        pass

    def end_study(self, run_id, status):
        self.status = status


def test_finish_study_tags_feasibility_and_the_feasible_front(capsys):
    from study.orchestration.finish import finish_study

    points = [(0.60, 0.20, 9.0), (0.55, 0.10, 2.0), (0.40, 0.05, 1.0), (0.30, 0.50, 5.0), (0.58, 0.15, 3.0)]
    study = _study(points)
    tracker = FakeTracker()
    budgets = Budgets.of(max_f1_loss=5, max_size_mb=8)  # F1 >= 0.45, <= 8 MB: trials 1 and 4
    front = finish_study(study, "s", tracker, "parent", "FINISHED", "pareto", budgets)
    assert [t.number for t in front] == [1, 4]
    for i, (f1, _, mb) in enumerate(points):
        ok = f1 >= 0.45 and mb <= 8
        assert tracker.tags[f"run-{i}"]["feasible"] == ("true" if ok else "false")
        assert tracker.tags[f"run-{i}"]["pareto"] == ("true" if i in (1, 4) else "false")
    assert tracker.tags["run-0"]["violated_budgets"] == "max_size_mb"
    assert tracker.tags["run-2"]["violated_budgets"] == "max_f1_loss"
    assert tracker.tags["parent"]["pareto_among"] == "feasible"
    assert tracker.metrics["feasible_trials"] == 2
    # models kept: the feasible front and the unconstrained one (0, 1, 2, 4); trial 3 is dominated by both
    assert tracker.deleted == ["run-3"]
    assert "among the 2 trials meeting the budgets (--max-f1-loss 5, --max-size-mb 8)" in capsys.readouterr().out

    tracker = FakeTracker()  # re-run without budgets: the same runs re-tagged, the front among all trials
    front = finish_study(study, "s", tracker, "parent", "FINISHED", "pareto", Budgets())
    assert {t.number for t in front} == {0, 1, 2, 4}
    assert all(tags["feasible"] == "true" for run, tags in tracker.tags.items() if run != "parent")
    assert tracker.tags["parent"]["pareto_among"] == "all"


def test_budgets_nothing_meets_names_the_closest_trial(capsys):
    from study.orchestration.finish import finish_study

    study = _study([(0.40, 0.20, 9.0), (0.44, 0.30, 9.0), (0.30, 0.05, 1.0)])
    tracker = FakeTracker()
    budgets = Budgets.of(max_f1_loss=5)  # needs validation F1 >= 0.45: none has it; trial 1 misses by 1 point
    assert finish_study(study, "s", tracker, "parent", "FINISHED", "pareto", budgets) == []
    out = capsys.readouterr().out
    assert "no completed trial of s meets the budgets (--max-f1-loss 5); closest: s trial 1" in out
    assert "misses by 1" in out
    assert tracker.status == "FINISHED"


# -- picks on a hand-made front with ties (values: validation F1, latency vs teacher, MB; teacher F1 0.5) ----------
FRONT = [(0.50, 0.30, 8.0),  # 0: most accurate (tied on F1 with 1, faster)
         (0.50, 0.40, 8.0),  # 1: dominated by 0
         (0.48, 0.10, 6.0),  # 2: 2 points below; fastest within 3 (tied latency with 3, which is smaller... but
         (0.47, 0.10, 4.0),  #    3 is 3 points below and less accurate: 2 wins the latency tie on F1)
         (0.40, 0.05, 4.0),  # 4: fastest overall
         (0.40, 0.05, 4.0),  # 5: an exact tie with 4: the lower trial number wins
         (0.30, 0.20, 1.0)]  # 6: smallest


def test_each_rule_picks_the_expected_trial_with_ties_broken():
    trials = _study(FRONT).trials
    assert pick(trials, parse_rule("most-accurate")).number == 0
    assert pick(trials, parse_rule("fastest")).number == 4
    assert pick(trials, parse_rule("smallest")).number == 6
    assert pick(trials, parse_rule("fastest-within:3")).number == 2
    assert pick(trials, parse_rule("fastest-within:10")).number == 4
    assert pick(trials, parse_rule("smallest-within:3")).number == 3
    assert pick(trials, parse_rule("smallest-within:2.5")).number == 2
    assert pick(trials, parse_rule("smallest-within:0")).number == 0
    # knee: objectives scaled over the front (F1 0.30-0.50, latency 0.05-0.30, MB 1-8): trial 3 at
    # (0.15, 0.2, 0.43) is 0.50 from the ideal point; 4 is 0.66 away, 2 0.75, 6 1.17, 0 1.41
    assert knee(pareto_trials(trials)).number == 3
    assert pick(trials, parse_rule("knee")).number == 3
    front = {t.number for t in pareto_trials(trials)}
    for rule, trial, _ in pick_each(trials):
        assert trial.number in front, rule.text  # every pick is Pareto-optimal


def test_a_rule_with_no_trial_in_tolerance_names_the_closest():
    trials = _study([(0.40, 0.1, 1.0), (0.45, 0.2, 2.0)]).trials
    with pytest.raises(UserError, match=r"within 3 macro-F1 points.*trial 1, 5.00 points below"):
        pick(trials, parse_rule("fastest-within:3"))


@pytest.mark.parametrize("text", ["fastest-within", "within:3", "fastest-within:-1", "biggest", "knee:2"])
def test_unknown_rules_are_refused(text):
    with pytest.raises(UserError, match="--pick must be one of"):
        parse_rule(text)
