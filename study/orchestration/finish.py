"""The end of a pair study: tags, the front's table and plot, bundles of dominated trials deleted."""

from __future__ import annotations

import tempfile
from pathlib import Path

import optuna

from study.core.budgets import BUDGETS_ATTR, PARETO_AMONG_TAG, Budgets
from study.reporting.progress import say
from study.reporting.front import completed, front_frame, pareto_figure, pareto_trials, printable
from study.reporting.callbacks import delete_dominated_bundles
from study.reporting.tracking import PARETO_TAG, RUN_ID_ATTR, Tracker


def finish_study(study: optuna.Study, study_name: str, tracker: Tracker, parent: str, status: str,
                 keep_models: str = "pareto", budgets: Budgets = Budgets()) -> list:
    """Tag every completed trial's run feasible and pareto (the front is among the trials meeting ``budgets``,
    or among all without any), log the front's table and plot, and (with ``keep_models="pareto"``) delete the
    model bundles of trials on neither that front nor the unconstrained one. Returns the front."""
    trials = completed(study)
    front = pareto_trials(trials, budgets=budgets)
    on_front = {t.number for t in front}
    for t in trials:
        run_id = t.user_attrs.get(RUN_ID_ATTR)
        if run_id:  # recomputed each session: a study resumed under other budgets is re-tagged
            tracker.set_tags(run_id, {PARETO_TAG: "true" if t.number in on_front else "false",
                                      **budgets.tags(t.user_attrs.get("metrics", {}))})
    tracker.set_tags(parent, {PARETO_AMONG_TAG: "feasible" if budgets else "all", BUDGETS_ATTR: budgets.as_json()})
    if keep_models == "pareto":  # a dominated trial stays dominated; other budgets may pick another front
        kept = on_front | {t.number for t in pareto_trials(trials)}
        delete_dominated_bundles(tracker, trials, kept)
    if trials:
        feasible = sum(budgets.feasible(t) for t in trials)
        tracker.log_metrics(parent, {"completed_trials": len(trials), "pareto_trials": len(front),
                                     "feasible_trials": feasible})
        if budgets and not front:
            say(f"\n[{study_name}] {budgets.nothing_meets(trials, study_name)}")
        else:
            frame = front_frame(front)
            with tempfile.TemporaryDirectory() as tmp:
                csv = Path(tmp) / "pareto_front.csv"
                frame.to_csv(csv, index=False)
                tracker.log_artifact(parent, csv)
                html = Path(tmp) / "pareto_front.html"
                pareto_figure(study).write_html(str(html), include_plotlyjs=True)
                tracker.log_artifact(parent, html)
            among = (f"among the {feasible} trials meeting the budgets ({budgets.describe()})" if budgets
                     else "among all trials")
            say(f"\nPareto front of {study_name} ({len(front)} of {len(trials)} completed trials, {among}; chosen on "
                f"validation macro-F1, latency_vs_teacher (batch 1, paired with the fp32 teacher in one process) and "
                f"size; macro_f1 is the test score with its 95% interval):")
            say(printable(frame))
    tracker.end_study(parent, status)
    return front
