"""A real (tiny) pareto study through the CLI into temporary Optuna and MLflow stores."""

import csv

import optuna
import pytest
from mlflow.tracking import MlflowClient

from study.run import main


def _dominates(a, b):
    return (a[0] >= b[0] and a[1] <= b[1] and a[2] <= b[2]) and (a[0] > b[0] or a[1] < b[1] or a[2] < b[2])


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    return {"root": root, "storage": f"sqlite:///{root}/optuna.db", "tracking": f"sqlite:///{root}/mlflow.db",
            "cache": str(root / "cache")}


def _run(stores, n_trials, *extra):
    return main(["--objective", "pareto", "--n-trials", str(n_trials), "--quick", "--study-name", "e2e",
                 "--students", "scratch-tiny", "--storage", stores["storage"], "--tracking-uri", stores["tracking"],
                 "--cache-dir", stores["cache"], "--seed", "5", *extra])


@pytest.fixture(scope="module")
def two_trial_study(stores):
    assert _run(stores, 2) == 0
    return stores


def test_two_trial_study_is_fully_tracked(two_trial_study, capsys):
    stores = two_trial_study
    client = MlflowClient(tracking_uri=stores["tracking"])
    exp = client.get_experiment_by_name("e2e")
    assert exp is not None
    study_runs = client.search_runs([exp.experiment_id], "tags.role = 'study'")
    trial_runs = client.search_runs([exp.experiment_id], "tags.role = 'trial'")
    assert len(study_runs) == 1 and len(trial_runs) == 2
    parent = study_runs[0]
    assert parent.data.tags["optuna.study_name"] == "e2e.scratch-base.scratch-tiny"
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["teacher_latency_ms"] > 0
    # the scratch teacher is an ensemble with a TF-IDF member (weight chosen on validation) by default; its
    # network's own macro-F1 is logged beside the ensemble's
    weight = parent.data.metrics["teacher_tfidf_weight"]
    assert 0.0 <= weight <= 1.0 and parent.data.params["teacher_tfidf_weight"] == str(weight)
    assert 0.0 < parent.data.metrics["teacher_network_macro_f1"] <= 1.0
    if weight == 0.0:
        assert parent.data.metrics["teacher_macro_f1"] == parent.data.metrics["teacher_network_macro_f1"]
    assert parent.data.metrics["teacher_validation_macro_f1"] >= parent.data.metrics["teacher_network_validation_macro_f1"]
    for run in trial_runs:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["optuna.study_name"] == "e2e.scratch-base.scratch-tiny"
        assert run.data.tags["pareto"] in ("true", "false")
        for p in ("teacher", "student", "temperature", "kd_lambda", "prune_ratio", "quant_scheme", "seed",
                  "data_sha256", "data_rows", "data_class_counts"):
            assert p in run.data.params, p
        assert run.data.params["teacher"] == "scratch-base" and run.data.params["student"] == "scratch-tiny"
        m = run.data.metrics
        assert 0.0 <= m["macro_f1"] <= 1.0 and 0.0 <= m["accuracy"] <= 1.0
        assert m["latency_ms"] > 0 and m["throughput_per_s"] > 0 and m["size_mb"] > 0
        assert m["nonzero_params"] > 1000
        assert 1.0 <= float(run.data.params["temperature"]) <= 10.0
    # Optuna and MLflow reconcile through the stored run id.
    study = optuna.load_study(study_name="e2e.scratch-base.scratch-tiny", storage=stores["storage"])
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in trial_runs}
    assert sorted(by_number) == [t.number for t in study.trials]
    for t in study.trials:
        assert t.user_attrs["mlflow_run_id"] == by_number[t.number].info.run_id
        assert t.values[0] == pytest.approx(by_number[t.number].data.metrics["macro_f1"])


def test_pareto_tag_is_exactly_the_non_dominated_set(two_trial_study, tmp_path):
    client = MlflowClient(tracking_uri=two_trial_study["tracking"])
    exp = client.get_experiment_by_name("e2e")
    runs = client.search_runs([exp.experiment_id], "tags.role = 'trial'")
    points = {r.info.run_id: (r.data.metrics["macro_f1"], r.data.metrics["latency_ms"], r.data.metrics["size_mb"])
              for r in runs}
    expected = {rid for rid, p in points.items() if not any(_dominates(q, p) for q in points.values())}
    tagged = {r.info.run_id for r in runs if r.data.tags["pareto"] == "true"}
    assert tagged == expected and tagged
    parent = client.search_runs([exp.experiment_id], "tags.role = 'study'")[0]
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto_front.csv", "pareto_front.html"} <= names
    local = client.download_artifacts(parent.info.run_id, "pareto_front.csv", str(tmp_path))
    with open(local) as fh:
        rows = list(csv.DictReader(fh))
    assert {r["run_id"] for r in rows} == expected
    assert {"trial_number", "temperature", "kd_lambda", "prune_ratio", "quant_scheme", "macro_f1", "latency_ms",
            "size_mb"} <= set(rows[0])
    html = client.download_artifacts(parent.info.run_id, "pareto_front.html", str(tmp_path))
    assert "plotly" in open(html).read(200000).lower()


def test_rerun_resumes_up_to_the_total(two_trial_study):
    stores = two_trial_study
    assert _run(stores, 3) == 0
    study = optuna.load_study(study_name="e2e.scratch-base.scratch-tiny", storage=stores["storage"])
    assert len(study.trials) == 3
    assert _run(stores, 3) == 0  # already there: nothing new
    study = optuna.load_study(study_name="e2e.scratch-base.scratch-tiny", storage=stores["storage"])
    assert len(study.trials) == 3
    client = MlflowClient(tracking_uri=stores["tracking"])
    exp = client.get_experiment_by_name("e2e")
    runs = client.search_runs([exp.experiment_id], "tags.role = 'trial'")
    numbers = sorted(int(r.data.tags["optuna.trial_number"]) for r in runs)
    assert numbers == [0, 1, 2]
    assert len(client.search_runs([exp.experiment_id], "tags.role = 'study'")) == 1


def test_resume_keeps_the_sampler(two_trial_study, capsys):
    assert _run(two_trial_study, 3, "--sampler", "random") == 2
    assert "resume it with the same sampler" in capsys.readouterr().err
    study = optuna.load_study(study_name="e2e.scratch-base.scratch-tiny", storage=two_trial_study["storage"])
    assert study.user_attrs["sampler"] == "tpe"


def test_resume_keeps_the_teacher(two_trial_study, capsys):
    study = optuna.load_study(study_name="e2e.scratch-base.scratch-tiny", storage=two_trial_study["storage"])
    before = len(study.trials)
    assert study.user_attrs["teacher_identity"].startswith("scratch-base-")
    assert study.user_attrs["teacher_identity"].endswith("tfidf member auto")
    for other in (["--teacher-tfidf-weight", "0"], ["--teacher-baseline-kd", "0"]):
        assert _run(two_trial_study, before + 1, *other) == 2
        assert "was run with another teacher" in capsys.readouterr().err
    study = optuna.load_study(study_name="e2e.scratch-base.scratch-tiny", storage=two_trial_study["storage"])
    assert len(study.trials) == before


def test_bad_input_exits_2_and_creates_nothing(tmp_path, capsys):
    storage, tracking = tmp_path / "o.db", tmp_path / "m.db"
    common = ["--storage", f"sqlite:///{storage}", "--tracking-uri", f"sqlite:///{tracking}",
              "--cache-dir", str(tmp_path / "c"), "--quick"]
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,y\nhello,joy\n")
    for args, message in (
        (["--data", str(tmp_path / "missing.csv")], "does not exist"),
        (["--data", str(bad)], "no label column found"),
        (["--students", "no-such-student"], "unknown model 'no-such-student'"),
        (["--students", "teacher-l9"], "teacher 'scratch-base' has 4"),
        (["--teacher-baseline-kd", "2"], "must be in [0, 1]"),
        (["--teacher-tfidf-weight", "-0.5"], "--teacher-tfidf-weight must be in [0, 1]"),
        (["--teacher-mlm-epochs", "-1"], "0 or more"),
        (["--n-trials", "0"], "at least 1"),
        (["--space", "nope"], "search space 'nope' not found"),
    ):
        trials = [] if "--n-trials" in args else ["--n-trials", "1"]
        assert main(common + trials + args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, err
    assert not storage.exists() and not tracking.exists() and not (tmp_path / "c").exists()


def test_a_student_made_of_the_teachers_layers_runs_a_tracked_trial(tmp_path):
    stores = {"storage": f"sqlite:///{tmp_path}/o.db", "tracking": f"sqlite:///{tmp_path}/m.db"}
    assert main(["--objective", "pareto", "--n-trials", "1", "--quick", "--study-name", "layers", "--students",
                 "teacher-l1", "--storage", stores["storage"], "--tracking-uri", stores["tracking"],
                 "--cache-dir", str(tmp_path / "cache"), "--seed", "5", "--quiet"]) == 0
    client = MlflowClient(tracking_uri=stores["tracking"])
    (run,) = client.search_runs([client.get_experiment_by_name("layers").experiment_id], "tags.role = 'trial'")
    assert run.info.status == "FINISHED" and run.data.params["student"] == "teacher-l1"
    assert run.data.tags["optuna.study_name"] == "layers.scratch-base.teacher-l1"
    # one of the teacher's 4 layers: far fewer non-zero parameters than the teacher
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert run.data.metrics["nonzero_params"] < 0.8 * parent.data.metrics["teacher_nonzero_params"]
    assert 0.0 <= run.data.metrics["macro_f1"] <= 1.0
