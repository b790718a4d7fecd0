"""The commands and links that open a study's runs in the MLflow UI and the Optuna dashboard."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from urllib.parse import quote, urlencode

MLFLOW_UI = "http://127.0.0.1:5000"  # where `mlflow ui` listens by default
DASHBOARD_UI = "http://127.0.0.1:8080"  # where `optuna-dashboard` listens by default
# MLflow 3 opens an experiment on its GenAI (traces) view; this query parameter selects the "Model training" view,
# where our runs, their metric columns and the nesting of trials under their pair study are.
WORKFLOW_TYPE = "machine_learning"
PARETO_FILTER = "tags.pareto = 'true'"  # the trials on their pair study's Pareto front (set when a study ends)


def runs_link(base_url: str, experiment_id: str, search_filter: str | None = None) -> str:
    """The MLflow UI's run list of an experiment in the model-training view, optionally filtered (a search
    expression like those of ``MlflowClient.search_runs``)."""
    query = {"workflowType": WORKFLOW_TYPE}
    if search_filter:
        query["searchFilter"] = search_filter
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{urlencode(query, quote_via=quote)}"


def dashboard_link(base_url: str, study_id: int) -> str:
    """The Optuna dashboard's page of one study (its history, Pareto front, trials and user attributes)."""
    return f"{base_url.rstrip('/')}/dashboard/studies/{study_id}"


def _program(name: str) -> str | None:
    """The console script ``name`` installed beside this Python (``.venv/bin/mlflow`` when run from the repo),
    or None when this environment lacks it."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        return None
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _is_server(uri: str) -> bool:
    return uri.split(":", 1)[0] in ("http", "https")


def mlflow_lines(tracking_uri: str, experiment_name: str) -> list[str]:
    """How to open the experiment's runs: the ``mlflow ui`` command for a database or folder store (an http(s)
    tracking URI is a running server: its own address), then the run list and its Pareto-only filter."""
    from study.reporting.tracking import experiment_location

    lines = ["MLflow UI:"]
    if _is_server(tracking_uri):
        base = tracking_uri
        lines.append(f"  served by the tracking server {tracking_uri}")
    else:
        base = MLFLOW_UI
        command = [_program("mlflow") or "mlflow", "ui", "--backend-store-uri", tracking_uri]
        lines.append(f"  start it:    {shlex.join(command)}")
    try:
        experiment = experiment_location(tracking_uri, experiment_name)
    except Exception as exc:  # the study has ended; a link we cannot make must not fail it
        lines.append(f"  (experiment {experiment_name!r} could not be looked up: {str(exc).splitlines()[0]})")
        return lines
    if experiment is None:
        lines.append(f"  (no experiment {experiment_name!r} in {tracking_uri})")
        return lines
    experiment_id, artifact_location = experiment
    if not _is_server(tracking_uri) and artifact_location.startswith("mlflow-artifacts:"):
        # Created through a tracking server that proxies artifacts: `mlflow ui` must serve the same folder.
        lines[-1] += " --artifacts-destination <the folder that server stored artifacts in>"
    lines.append(f"  runs:        {runs_link(base, experiment_id)}")
    lines.append(f"  pareto runs: {runs_link(base, experiment_id, PARETO_FILTER)}")
    return lines


def dashboard_lines(storage: str, study_name: str) -> list[str]:
    """The ``optuna-dashboard`` command for the Optuna storage and a link to each pair study's page."""
    program = _program("optuna-dashboard")
    lines = ["Optuna dashboard" + ("" if program else " (install it: pip install optuna-dashboard, or the "
                                                      "project's [dashboard] extra)") + ":",
             f"  start it:    {shlex.join([program or 'optuna-dashboard', storage])}"]
    try:
        import optuna

        from study.reporting.front import pair_studies

        names = pair_studies(storage, study_name)  # first: it creates no database where there is none
        store = optuna.storages.get_storage(storage)
        for name in names:
            lines.append(f"  {name}: {dashboard_link(DASHBOARD_UI, store.get_study_id_from_name(name))}")
    except Exception as exc:  # as above: only the links are lost
        lines.append(f"  (studies could not be listed: {str(exc).splitlines()[0]})")
    return lines


def ui_lines(tracking_uri: str, storage: str, study_name: str) -> list[str]:
    """Printable lines: the commands that start the MLflow UI and the Optuna dashboard on the stores of study
    ``study_name`` (the MLflow experiment; pair studies ``<study_name>.<teacher>.<student>``), and the links that
    open its runs, its Pareto-optimal runs and each pair study."""
    return [*mlflow_lines(tracking_uri, study_name), *dashboard_lines(storage, study_name)]
