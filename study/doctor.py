"""``python -m study.doctor``: check (and with --repair fix) that Optuna and MLflow agree on a study."""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

import optuna
from optuna.trial import TrialState

from study.core.budgets import Budgets
from study.reporting.callbacks import KILLED_REASON, finish_run
from study.core.errors import EXIT_USER_ERROR, UserError
from study.reporting.front import completed, pair_studies, pareto_trials
from study.reporting.tracking import PARETO_TAG, RUN_ID_ATTR, TRIAL_TAG, Tracker


def check_study(study: optuna.Study, tracker: Tracker, experiment_id: str, repair: bool) -> list[str]:
    """Every mismatch between one Optuna study and its MLflow runs, one line each (repaired if asked)."""
    problems = []
    runs = tracker.trial_runs(experiment_id, study.study_name)
    by_number = defaultdict(list)
    for run in runs:
        by_number[int(run.data.tags.get(TRIAL_TAG, -1))].append(run)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    front = {t.number for t in pareto_trials(completed(study), budgets=Budgets.of_study(study))}
    for number, trial in sorted(trials.items()):
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        mine = [r for r in by_number.get(number, []) if r.info.run_id == run_id]
        others = [r for r in by_number.get(number, []) if r.info.run_id != run_id]
        for extra in others:
            if extra.info.status in ("RUNNING", "FINISHED"):
                problems.append(f"trial {number}: extra run {extra.info.run_id} ({extra.info.status}) "
                                f"is not the trial's run")
                if repair:
                    tracker.fail_trial(extra.info.run_id, "duplicate run of an Optuna trial (doctor)", "KILLED")
        if trial.state == TrialState.COMPLETE:
            if not mine:
                problems.append(f"trial {number}: COMPLETE in Optuna but has no MLflow run")
                continue
            run = mine[0]
            if run.info.status != "FINISHED" or "macro_f1" not in run.data.metrics:
                problems.append(f"trial {number}: COMPLETE in Optuna, run {run_id} is {run.info.status}")
                if repair:
                    finish_run(tracker, trial)
            want = "true" if number in front else "false"
            if run.data.tags.get(PARETO_TAG) != want:
                problems.append(f"trial {number}: tag pareto={run.data.tags.get(PARETO_TAG)} but should be {want}")
                if repair:
                    tracker.set_tags(run_id, {PARETO_TAG: want})
        elif trial.state == TrialState.FAIL and mine and mine[0].info.status in ("RUNNING", "FINISHED"):
            problems.append(f"trial {number}: FAIL in Optuna, run {run_id} is {mine[0].info.status}")
            if repair:
                tracker.fail_trial(run_id, trial.user_attrs.get("failure_reason", KILLED_REASON), "KILLED")
    for number, extra_runs in sorted(by_number.items()):
        if number not in trials:
            for run in extra_runs:
                problems.append(f"run {run.info.run_id} claims trial {number}, which Optuna does not have")
                if repair and run.info.status in ("RUNNING", "FINISHED"):
                    tracker.fail_trial(run.info.run_id, "no such Optuna trial (doctor)", "KILLED")
    return problems


def main(argv: list[str] | None = None) -> int:
    from study.core.config import add_store_flags

    p = argparse.ArgumentParser(prog="python -m study.doctor", description=__doc__.split(":", 1)[1].strip())
    add_store_flags(p)
    p.add_argument("--repair", action="store_true", help="fix what can be fixed (MLflow is made to follow Optuna)")
    args = p.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        names = pair_studies(args.storage, args.study_name)
        tracker = Tracker(args.tracking_uri)
        tracker.check()
        experiment_id = tracker.find_experiment(args.study_name)
        if experiment_id is None:
            raise UserError(f"no MLflow experiment {args.study_name!r} in {args.tracking_uri}")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    total = 0
    for name in names:
        study = optuna.load_study(study_name=name, storage=args.storage)
        problems = check_study(study, tracker, experiment_id, args.repair)
        total += len(problems)
        done = len(completed(study))
        print(f"{name}: {done} completed trial(s), {len(problems)} mismatch(es)"
              + (" (repaired)" if problems and args.repair else ""))
        for line in problems:
            print(f"  - {line}")
    return 0 if total == 0 or args.repair else 1


if __name__ == "__main__":
    sys.exit(main())
