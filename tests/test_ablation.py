"""The ablation objective: the paper's grid, ratios from the same run, the report with every figure."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from study.orchestration.ablation import grid
from study.reporting.ablation_report import FIGURES
from study.run import main

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "paper_tables.csv"


def test_grid_is_exactly_the_papers_combinations():
    cells = grid(("bangla", "mbert"), ("s1", "s2", "s3", "s4"), "s4")
    assert len(cells) == 2 + 20  # two teacher rows and the paper's 20 compressed rows
    for teacher in ("bangla", "mbert"):
        mine = [(c.technique, c.student) for c in cells if c.teacher == teacher]
        assert mine == [("teacher", None), ("distil", "s1"), ("distil", "s2"), ("distil", "s3"), ("distil", "s4"),
                        ("prune", None), ("quant", None), ("prune+quant", None), ("distil+prune", "s4"),
                        ("distil+quant", "s4"), ("distil+prune+quant", "s4")]
    prune_quant = {(c.technique, c.prune, c.quant) for c in cells}
    assert ("distil+prune+quant", True, True) in prune_quant and ("distil", False, False) in prune_quant


@pytest.mark.skipif(not REFERENCE.exists(), reason="paper_tables.csv not present")
def test_grid_matches_the_reference_tables():
    paper = pd.read_csv(REFERENCE)
    compressed = paper[paper["table"].isin([5, 6, 7]) & (paper["technique"] != "teacher")]
    per_teacher = compressed.groupby("teacher")["technique"].apply(sorted).to_dict()
    cells = grid(("banglaBERT", "mBERT"), ("a", "b", "c", "d"), "d")
    ours = {t: sorted(c.technique for c in cells if c.teacher == t and c.technique != "teacher")
            for t in ("banglaBERT", "mBERT")}
    assert ours == per_teacher


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablation")
    tracking = f"sqlite:///{root}/mlflow.db"
    args = ["--objective", "ablation", "--quick", "--teachers", "scratch-base", "--students",
            "scratch-mini,scratch-tiny", "--study-name", "abl", "--storage", f"sqlite:///{root}/optuna.db",
            "--tracking-uri", tracking, "--cache-dir", str(root / "cache"), "--out", str(root / "out"), "--quiet",
            "--quant-scheme", "onnx_dynamic_int8"]
    if REFERENCE.exists():
        args += ["--reference", str(REFERENCE)]
    assert main(args) == 0
    return {"root": root, "tracking": tracking, "out": root / "out"}


@pytest.mark.slow
def test_every_row_is_a_finished_run_under_one_parent(ablation):
    client = MlflowClient(tracking_uri=ablation["tracking"])
    exp = client.get_experiment_by_name("abl")
    parents = client.search_runs([exp.experiment_id], "tags.role = 'ablation_study'")
    rows = client.search_runs([exp.experiment_id], "tags.role = 'ablation'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(rows) == 9 + 1  # teacher + 2 distil + 3 teacher compressions + 3 distil+X, and the baseline
    assert all(r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
               for r in rows)
    techniques = sorted(r.data.tags["technique"] for r in rows)
    assert techniques == sorted(["baseline", "teacher", "distil", "distil", "prune", "quant", "prune+quant",
                                 "distil+prune", "distil+quant", "distil+prune+quant"])
    # every row, the baseline too, has a latency from raw text: the one footing all models share
    assert all(r.data.metrics["latency_e2e_ms"] > 0 for r in rows)
    baseline = next(r for r in rows if r.data.tags["technique"] == "baseline").data.metrics
    assert baseline["latency_e2e_ms"] == baseline["latency_ms"]
    smallest = {r.data.tags["model"] for r in rows if r.data.tags["technique"].startswith("distil+")}
    assert smallest == {"scratch-tiny"}
    for r in rows:  # every row names the data parts it used (the runs table's Dataset column)
        assert sorted(i.tags[0].value for i in r.inputs.dataset_inputs) == ["test", "training", "validation"]
        digests = {i.tags[0].value: i.dataset.digest for i in r.inputs.dataset_inputs}
        assert digests["test"] == r.data.params["split_test_sha256"][:36]


@pytest.mark.slow
def test_ratios_come_from_the_same_runs_teacher(ablation):
    client = MlflowClient(tracking_uri=ablation["tracking"])
    exp = client.get_experiment_by_name("abl")
    rows = client.search_runs([exp.experiment_id], "tags.role = 'ablation' and tags.technique != 'baseline'")
    teacher = next(r for r in rows if r.data.tags["technique"] == "teacher").data.metrics
    # every row is timed in the timing process, paired with the fp32 teacher: the teacher row against itself
    assert teacher["speedup_vs_teacher_ci_low"] <= 1.0 <= teacher["speedup_vs_teacher_ci_high"] or \
        teacher["speedup"] == pytest.approx(1.0, rel=0.1)
    assert teacher["compression_ratio"] == pytest.approx(1.0)
    for r in rows:
        m = r.data.metrics
        assert m["speedup"] == m["speedup_vs_teacher"]
        assert m["speedup_vs_teacher_ci_low"] <= m["speedup"] <= m["speedup_vs_teacher_ci_high"]
        assert m["compression_ratio"] == pytest.approx(teacher["size_mb"] / m["size_mb"])
        # Δ F1 against the teacher the students learn from (its ensemble), paired on the same texts
        assert m["macro_f1_delta"] == pytest.approx(m["macro_f1"] - m["teacher_macro_f1"])
        assert m["macro_f1_delta_vs_teacher_ci_low"] <= m["macro_f1_delta"] <= m["macro_f1_delta_vs_teacher_ci_high"]
    quant = next(r for r in rows if r.data.tags["technique"] == "quant").data.metrics
    assert quant["compression_ratio"] > 2.5  # int8 really shrinks the artifact
    pruned = next(r for r in rows if r.data.tags["technique"] == "prune").data.metrics
    assert pruned["nonzero_params"] < teacher["nonzero_params"]


@pytest.mark.slow
def test_report_has_every_table_and_figure(ablation):
    out = ablation["out"]
    table = pd.read_csv(out / "ablation.csv")
    assert len(table) == 10 and "baseline" in set(table["technique"])
    html = (out / "ablation.html").read_text()
    for name in FIGURES:
        assert f"id='{name}'" in html, name
    md = (out / "ablation.md").read_text()
    assert "| scratch-base | prune | scratch-base |" in md
    if REFERENCE.exists():
        assert "NOT measured here" in md and "reference_table" in html


def test_repeats_are_aggregated_as_mean_and_std():
    from study.reporting.ablation_report import aggregate, markdown

    rows = [{"teacher": "t", "technique": "distil", "model": "s", "repeat": r, "macro_f1": f, "speedup": 2.0}
            for r, f in enumerate((0.4, 0.6))]
    table = aggregate(rows)
    assert table.loc[0, "macro_f1"] == pytest.approx(0.5) and table.loc[0, "macro_f1_std"] == pytest.approx(0.1)
    assert table.loc[0, "repeats"] == 2
    assert "0.5000 ± 0.1000" in markdown(table, None, repeats=2)


def test_one_repeat_shows_intervals_and_says_within_noise():
    from study.reporting.ablation_report import aggregate, markdown

    def row(technique, delta, low, high, speedup, s_low, s_high):
        return {"teacher": "t", "technique": technique, "model": "s", "repeat": 0, "macro_f1": 0.5 + delta,
                "macro_f1_delta": delta, "macro_f1_delta_vs_teacher_ci_low": low,
                "macro_f1_delta_vs_teacher_ci_high": high, "speedup": speedup,
                "speedup_vs_teacher_ci_low": s_low, "speedup_vs_teacher_ci_high": s_high}

    md = markdown(aggregate([row("distil", -0.02, -0.03, -0.01, 4.0, 3.5, 4.5),
                             row("quant", -0.004, -0.01, 0.002, 1.05, 0.9, 1.2)]), None, repeats=1)
    distil, quant = (next(line for line in md.splitlines() if f"| {t} |" in line) for t in ("distil", "quant"))
    assert "-0.0200 (-0.0300 to -0.0100) |" in distil and "4.00 (3.50 to 4.50) |" in distil
    assert "-0.0040 (-0.0100 to 0.0020, within noise)" in quant and "1.05 (0.90 to 1.20, within noise)" in quant


def test_kd_settings_come_from_the_best_pareto_trial(tmp_path):
    import optuna

    from study.orchestration.ablation import kd_from_study
    from study.core.errors import UserError

    storage = f"sqlite:///{tmp_path}/o.db"
    study = optuna.create_study(study_name="s.scratch-base.scratch-tiny", storage=storage,
                                directions=["maximize", "minimize", "minimize"])
    for values in ([0.5, 1.0, 1.0], [0.7, 2.0, 2.0], [0.4, 3.0, 3.0]):  # the 0.7-F1 trial is the best on the front
        trial = study.ask()
        trial.suggest_float("temperature", 1, 10)
        trial.suggest_float("kd_lambda", 0, 1)
        study.tell(trial, values)
    got = kd_from_study(storage, "s", "scratch-base")
    best = max(study.trials, key=lambda t: t.values[0])
    assert got == (best.params["temperature"], best.params["kd_lambda"])
    with pytest.raises(UserError, match="no completed trials with teacher 'scratch-large'"):
        kd_from_study(storage, "s", "scratch-large")
