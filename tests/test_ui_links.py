"""The commands and links a study prints at its end (the browser tests open them: test_browser, test_dashboard)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import optuna
from mlflow.tracking import MlflowClient

from study.reporting.ui_links import PARETO_FILTER, dashboard_link, runs_link, ui_lines


def test_runs_link_opens_the_model_training_view_and_encodes_the_filter():
    assert runs_link("http://127.0.0.1:5000", "7") == \
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
    link = runs_link("http://host:5000/", "7", PARETO_FILTER)
    assert link == ("http://host:5000/#/experiments/7/runs?workflowType=machine_learning"
                    "&searchFilter=tags.pareto%20%3D%20%27true%27")
    query = parse_qs(urlsplit(urlsplit(link).fragment).query)  # the UI reads the query of its hash route
    assert query == {"workflowType": ["machine_learning"], "searchFilter": ["tags.pareto = 'true'"]}
    assert dashboard_link("http://127.0.0.1:8080", 3) == "http://127.0.0.1:8080/dashboard/studies/3"


def test_ui_lines_name_the_stores_the_experiment_and_each_pair_study(tmp_path):
    tracking, storage = f"sqlite:///{tmp_path}/mlflow.db", f"sqlite:///{tmp_path}/optuna.db"
    experiment_id = MlflowClient(tracking_uri=tracking).create_experiment("demo")
    for pair in ("demo.scratch-base.scratch-tiny", "demo.scratch-base.teacher-l2", "demolition.a.b"):
        optuna.create_study(study_name=pair, storage=storage, directions=["maximize", "minimize", "minimize"])
    ids = {n: optuna.storages.get_storage(storage).get_study_id_from_name(n) for n in optuna.get_all_study_names(storage)}
    text = "\n".join(ui_lines(tracking, storage, "demo"))
    assert f"mlflow ui --backend-store-uri {tracking}\n" in text
    assert f"runs:        {runs_link('http://127.0.0.1:5000', experiment_id)}\n" in text
    assert f"pareto runs: {runs_link('http://127.0.0.1:5000', experiment_id, PARETO_FILTER)}\n" in text
    assert f"optuna-dashboard {storage}\n" in text
    for pair in ("demo.scratch-base.scratch-tiny", "demo.scratch-base.teacher-l2"):
        assert f"  {pair}: http://127.0.0.1:8080/dashboard/studies/{ids[pair]}" in text
    assert "demolition" not in text  # another study whose name merely starts alike


def test_ui_lines_never_fail_a_finished_study(tmp_path):
    """A store that cannot be read costs the links, never the run: the commands are still printed."""
    tracking, storage = f"sqlite:///{tmp_path}/mlflow.db", f"sqlite:///{tmp_path}/none.db"
    lines = ui_lines(tracking, storage, "missing")
    assert any("no experiment 'missing'" in line for line in lines)
    assert any(line.endswith(f"optuna-dashboard {storage}") for line in lines)
    assert any("studies could not be listed" in line for line in lines)
    assert not (tmp_path / "none.db").exists()  # looking did not create an Optuna database


def test_a_tracking_server_is_linked_at_its_own_address(monkeypatch):
    class Experiment:
        experiment_id, artifact_location = "12", "mlflow-artifacts:/12"

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", lambda self, name: Experiment())
    lines = ui_lines("https://mlflow.example.org/", "sqlite:///unused.db", "demo")
    assert "  served by the tracking server https://mlflow.example.org/" in lines
    assert not any("mlflow ui" in line for line in lines)  # nothing to start
    assert "  runs:        https://mlflow.example.org/#/experiments/12/runs?workflowType=machine_learning" in lines
