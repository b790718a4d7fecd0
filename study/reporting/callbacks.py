"""Mirror Optuna trials into MLflow: a run opened when a trial starts, closed by a study callback."""

from __future__ import annotations

import shutil
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search_spaces import PARAMETERS
from study.core.data import PartInput
from study.reporting.tracking import RUN_ID_ATTR, Tracker

TRIAL_PARAMS = tuple(PARAMETERS)  # the search space's parameter names, in its order
BUNDLE_ARTIFACT = "bundle"  # run artifact folder holding the trial's deployable model bundle
KILLED_REASON = "the worker running this trial stopped sending heartbeats (killed or crashed)"


class TrialTracker:
    """One pair study's bridge between Optuna trials and nested MLflow runs.

    ``start`` is called by the objective wrapper as a trial begins (so a killed trial leaves a run
    that can be marked KILLED); ``__call__`` is the Optuna callback that closes the run with the
    trial's params, metrics and tags, or marks it FAILED with the reason.
    """

    def __init__(self, tracker: Tracker, experiment_id: str, parent_run_id: str, study_name: str,
                 base_params: dict[str, str], base_tags: dict[str, str], log: Callable[[str], None] = print,
                 bundle_dir: Callable[[int], Path] | None = None, keep_models: str = "pareto",
                 inputs: Sequence[PartInput] = ()):
        self.tracker = tracker
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.study_name = study_name
        self.base_params = base_params
        self.base_tags = base_tags
        self.log = log
        self.bundle_dir = bundle_dir
        self.keep_models = keep_models
        self.inputs = inputs  # the data parts every trial's run logs as MLflow dataset inputs

    def start(self, trial: optuna.Trial) -> str:
        run_id = self.tracker.start_trial(self.experiment_id, self.parent_run_id, self.study_name, trial.number,
                                          self.base_params, self.base_tags)
        self.tracker.log_inputs(run_id, self.inputs)
        trial.set_user_attr(RUN_ID_ATTR, run_id)
        return run_id

    def log_bundle(self, trial: optuna.Trial, folder: Path) -> None:
        """Store the trial's model bundle in its run before Optuna records the trial as complete, so a kill
        between the two never leaves a completed (possibly Pareto-optimal) trial without its model."""
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if run_id and self.keep_models != "none" and folder.exists():
            self.tracker.log_artifacts(run_id, folder, BUNDLE_ARTIFACT)

    def killed(self, trial: optuna.Trial, reason: str) -> None:
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if run_id:
            self.tracker.fail_trial(run_id, reason, status="KILLED")

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if run_id is None:
            return
        folder = self.bundle_dir(trial.number) if self.bundle_dir else None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        if trial.state == TrialState.COMPLETE:
            finish_run(self.tracker, trial)
        elif trial.state == TrialState.FAIL:
            reason = trial.user_attrs.get("failure_reason", "the objective returned invalid values (NaN?)")
            self.tracker.fail_trial(run_id, reason)
            self.log(f"[{self.study_name}] trial {trial.number} FAILED: {reason.splitlines()[0]}")


def trial_params(trial: FrozenTrial) -> dict[str, Any]:
    resolved = trial.user_attrs.get("resolved_params", {})
    return {k: resolved.get(k, trial.params.get(k)) for k in TRIAL_PARAMS}


def finish_run(tracker: Tracker, trial: FrozenTrial) -> None:
    """Log a completed trial's params/metrics/tags (kept on the Optuna trial) and close its run."""
    metrics = trial.user_attrs.get("metrics", {})
    record = {"study": trial.user_attrs.get("study"), "trial_number": trial.number,
              "params": trial.user_attrs.get("resolved_params", trial.params), "metrics": metrics,
              "values": trial.values}
    tags = {**trial.user_attrs.get("tags", {}), "worker": trial.user_attrs.get("worker", "")}
    tracker.finish_trial(trial.user_attrs[RUN_ID_ATTR], params=trial_params(trial), metrics=metrics,
                         tags=tags, record=record)


def failure_reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"[:5000]


def stale_trial_handler(tracker: Tracker) -> Callable[[optuna.Study, FrozenTrial], None]:
    """Heartbeat-stale trials: mark their MLflow run KILLED, then queue their params again."""
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)

    def handle(study: optuna.Study, trial: FrozenTrial) -> None:
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if run_id:
            tracker.fail_trial(run_id, KILLED_REASON, status="KILLED")
        retry(study, trial)

    return handle


def reconcile(study: optuna.Study, tracker: Tracker) -> list[str]:
    """Make MLflow agree with Optuna for one study; returns what was repaired, one line each.

    A COMPLETE trial whose run is not FINISHED gets its params/metrics logged and is closed; a
    FAIL trial whose run is still RUNNING is marked KILLED. (Live RUNNING trials are left alone.)
    """
    repaired = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if not run_id:
            continue
        status = tracker.run_status(run_id)
        if status is None:
            continue
        if trial.state == TrialState.COMPLETE and status != "FINISHED":
            finish_run(tracker, trial)
            repaired.append(f"trial {trial.number}: run {run_id} was {status}, now FINISHED with its metrics")
        elif trial.state == TrialState.FAIL and status == "RUNNING":
            tracker.fail_trial(run_id, trial.user_attrs.get("failure_reason", KILLED_REASON), status="KILLED")
            repaired.append(f"trial {trial.number}: run {run_id} was RUNNING, now KILLED")
    return repaired


def delete_dominated_bundles(tracker: Tracker, trials: list[FrozenTrial], front_numbers: set[int]) -> int:
    """Delete the model bundles of dominated trials (their metrics stay); returns how many were removed."""
    removed = 0
    for trial in trials:
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if run_id and trial.number not in front_numbers and tracker.delete_artifacts(run_id, BUNDLE_ARTIFACT):
            tracker.set_tags(run_id, {"model_kept": "false"})
            removed += 1
    return removed
