"""Two workers share one study through PostgreSQL (Optuna storage and MLflow tracking store)."""

from __future__ import annotations

import os
import uuid
from collections import Counter

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from study.run import main

PG = os.environ.get("STUDY_TEST_POSTGRES")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not PG, reason="set STUDY_TEST_POSTGRES (eval \"$(bash scripts/postgres.sh start)\")")]


def test_two_workers_share_one_study(tmp_path):
    storage, tracking = f"{PG}/study_optuna", f"{PG}/study_mlflow"
    name = f"pg{uuid.uuid4().hex[:8]}"
    total = 4
    assert main(["--objective", "pareto", "--n-trials", str(total), "--quick", "--study-name", name,
                 "--students", "scratch-tiny", "--workers", "2", "--storage", storage, "--tracking-uri", tracking,
                 "--cache-dir", str(tmp_path / "cache"), "--heartbeat", "2"]) == 0
    study = optuna.load_study(study_name=f"{name}.scratch-base.scratch-tiny", storage=storage)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == total
    assert len({t.number for t in study.trials}) == len(study.trials)
    client = MlflowClient(tracking_uri=tracking)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], "tags.role = 'trial'", max_results=1000)
    finished = Counter(int(r.data.tags["optuna.trial_number"]) for r in runs if r.info.status == "FINISHED")
    assert sorted(finished) == sorted(t.number for t in complete)
    assert set(finished.values()) == {1}  # one finished run per completed trial
    workers = {t.user_attrs["worker"] for t in complete}
    assert len(workers) == 2, "both workers should have completed trials"
