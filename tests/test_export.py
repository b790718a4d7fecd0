"""Export Pareto-optimal trials as bundles, reload them, serve them through MLflow and the predict CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from study.export import main as export_main
from study.run import main as run_main

pytestmark = pytest.mark.slow  # runs studies: skipped by the fast lane (pytest -m 'not slow')

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    stores = {"storage": f"sqlite:///{root}/optuna.db", "tracking": f"sqlite:///{root}/mlflow.db"}
    import objectives.quantize

    with pytest.MonkeyPatch.context() as patch:  # as on a CPU without AVX512-BF16: the same draws on every machine
        patch.setattr(objectives.quantize, "cpu_supports_bf16", lambda: False)
        assert run_main(["--n-trials", "2", "--quick", "--study-name", "exp", "--students", "scratch-tiny",
                         "--storage", stores["storage"], "--tracking-uri", stores["tracking"],
                         "--cache-dir", str(root / "cache"), "--seed", "11"]) == 0
    out = root / "models"
    assert export_main(["--study-name", "exp", "--storage", stores["storage"], "--tracking-uri",
                        stores["tracking"], "--out", str(out)]) == 0
    return {**stores, "root": root, "out": out}


def _trial_runs(tracking):
    client = MlflowClient(tracking_uri=tracking)
    exp = client.get_experiment_by_name("exp")
    return client, client.search_runs([exp.experiment_id], "tags.role = 'trial'")


def test_one_bundle_per_pareto_trial_with_card_and_matching_f1(exported):
    client, runs = _trial_runs(exported["tracking"])
    pareto = {int(r.data.tags["optuna.trial_number"]): r for r in runs if r.data.tags["pareto"] == "true"}
    folders = sorted(p for p in exported["out"].iterdir() if p.is_dir())
    assert [f.name for f in folders] == [f"exp.scratch-base.scratch-tiny.trial-{n}" for n in sorted(pareto)]
    for folder in folders:
        number = int(folder.name.rsplit("-", 1)[1])
        run = pareto[number]
        for part in ("bundle.json", "label_map.json", "model_card.md", "model", "tokenizer"):
            assert (folder / part).exists(), part
        card = (folder / "model_card.md").read_text()
        assert run.info.run_id in card and run.data.params["data_sha256"] in card
        assert "IQR" in card and "torch" in card and "distil scratch-tiny from scratch-base" in card
        import json

        verified = json.loads((folder / "provenance.json").read_text())["verified_macro_f1"]
        assert verified == pytest.approx(run.data.metrics["macro_f1"], abs=0.005)


def test_dominated_trials_lose_their_model_files_but_keep_metrics(exported):
    client, runs = _trial_runs(exported["tracking"])
    for run in runs:
        has_bundle = bool(client.list_artifacts(run.info.run_id, "bundle"))
        assert has_bundle == (run.data.tags["pareto"] == "true")
        assert "macro_f1" in run.data.metrics
    dominated = [r for r in runs if r.data.tags["pareto"] == "false"]
    if dominated:
        n = dominated[0].data.tags["optuna.trial_number"]
        assert export_main(["--study-name", "exp", "--storage", exported["storage"], "--tracking-uri",
                            exported["tracking"], "--out", str(exported["root"] / "x"), "--trials", n]) == 2


def test_registry_versions_load_as_pyfunc(exported):
    client = MlflowClient(tracking_uri=exported["tracking"], registry_uri=exported["tracking"])
    versions = client.search_model_versions("name = 'exp-pareto'")
    assert len(versions) == len([p for p in exported["out"].iterdir() if p.is_dir()])
    mlflow.set_tracking_uri(exported["tracking"])
    mlflow.set_registry_uri(exported["tracking"])
    uri = f"models:/exp-pareto/{versions[0].version}"
    local = Path(mlflow.artifacts.download_artifacts(uri))  # models from code: readable source, no pickled object
    assert (local / "pyfunc_model.py").exists() and not list(local.glob("**/python_model.pkl"))
    model = mlflow.pyfunc.load_model(uri)
    out = model.predict(pd.DataFrame({"text": ["I feel so happy after the match", "we feel furious at the news"]}))
    assert list(out.columns[:1]) == ["label"] and len(out) == 2
    assert set(out["label"]) <= {"anger", "joy", "sadness"}
    probs = out[[c for c in out.columns if c.startswith("prob_")]].to_numpy()
    assert probs.shape == (2, 3) and abs(probs.sum(axis=1) - 1).max() < 1e-4


def test_predict_cli_on_bengali_text_and_files(exported, tmp_path):
    folder = next(p for p in exported["out"].iterdir() if p.is_dir())
    texts = ["আমি খুব খুশি", "নাটকটি দেখে আমার রাগ হয়েছে"]
    done = subprocess.run([sys.executable, "-m", "study.predict", str(folder), *texts], cwd=tmp_path,
                          capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                                                               "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].endswith(texts[0])
    assert lines[0].split("\t")[0] in {"anger", "joy", "sadness"}
    src = tmp_path / "in.csv"
    pd.DataFrame({"text": texts * 5}).to_csv(src, index=False)
    out = tmp_path / "preds.csv"
    done = subprocess.run([sys.executable, "-m", "study.predict", str(folder), "--file", str(src), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    preds = pd.read_csv(out)
    assert len(preds) == 10 and {"label", "prob_joy"} <= set(preds.columns)


def test_predict_rejects_a_folder_that_is_not_a_bundle(tmp_path):
    done = subprocess.run([sys.executable, "-m", "study.predict", str(tmp_path), "hello"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "bundle.json is missing" in done.stderr


def test_pick_writes_exactly_one_bundle_stating_its_rule(exported, tmp_path):
    client, runs = _trial_runs(exported["tracking"])
    on_front = [r for r in runs if r.data.tags["pareto"] == "true"]
    fastest = min(on_front, key=lambda r: (r.data.metrics["latency_vs_teacher"], -r.data.metrics["macro_f1_validation"]))
    out = tmp_path / "picked"
    assert export_main(["--study-name", "exp", "--storage", exported["storage"], "--tracking-uri",
                        exported["tracking"], "--out", str(out), "--pick", "fastest-within:100"]) == 0
    folders = [p for p in out.iterdir() if p.is_dir()]
    assert [f.name for f in folders] == [f"exp.scratch-base.scratch-tiny.trial-{fastest.data.tags['optuna.trial_number']}"]
    card = (folders[0] / "model_card.md").read_text()
    assert "Picked by rule `fastest-within:100`" in card and "Reported on test: macro-F1" in card
    registry = MlflowClient(tracking_uri=exported["tracking"], registry_uri=exported["tracking"])
    newest = max(registry.search_model_versions("name = 'exp-pareto'"), key=lambda v: int(v.version))
    assert newest.run_id == fastest.info.run_id and "fastest-within:100" in newest.description
    assert subprocess.run([sys.executable, "-m", "study.predict", str(folders[0]), "খুব খুশি"], cwd=ROOT,
                          capture_output=True, text=True).returncode == 0


def test_pick_under_an_impossible_budget_writes_nothing(exported, tmp_path, capsys):
    out = tmp_path / "none"
    assert export_main(["--study-name", "exp", "--storage", exported["storage"], "--tracking-uri",
                        exported["tracking"], "--out", str(out), "--pick", "fastest", "--min-macro-f1", "0.999"]) == 2
    assert "meets the budgets (--min-macro-f1 0.999); closest:" in capsys.readouterr().err
    assert not out.exists()
