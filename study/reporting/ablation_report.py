"""The ablation report: the paper's Tables 4-8 measured here, as CSV, Markdown and a self-contained HTML."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from study.reporting.compare import noise_note
from study.reporting.report import write_html

METRICS = (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("latency_ms", "latency ms (batch 1)"),
           ("speedup", "speedup vs teacher"), ("nonzero_params", "non-zero params"), ("size_mb", "size MB"),
           ("compression_ratio", "compression vs teacher"))
FIGURES = ["bars_" + m for m, _ in METRICS] + ["f1_vs_speedup", "per_class", "confusion_matrix"]
# each with its 95% interval in a row's run: shown for one repeat (over several, the spread across seeds is)
INTERVALS = {"macro_f1_delta": "macro_f1_delta_vs_teacher", "speedup": "speedup_vs_teacher"}


def aggregate(rows: list[dict]) -> pd.DataFrame:
    """Mean and std over repeats per (teacher, technique, model), in grid order."""
    frame = pd.DataFrame(rows)
    keys = ["teacher", "technique", "model"]
    order = frame.drop_duplicates(keys)[keys]
    names = [m for m, _ in METRICS if m in frame]
    names += [m for m in ("macro_f1_validation", "macro_f1_delta") if m in frame]
    names += [f"{base}_ci_{end}" for base in INTERVALS.values() for end in ("low", "high")
              if f"{base}_ci_{end}" in frame]
    mean = frame.groupby(keys, sort=False)[names].mean()
    std = frame.groupby(keys, sort=False)[names].std(ddof=0).add_suffix("_std")
    out = order.merge(mean.join(std).reset_index(), on=keys, how="left")
    out.insert(3, "repeats", frame.groupby(keys, sort=False).size().values)
    return out


def markdown(table: pd.DataFrame, reference: pd.DataFrame | None, repeats: int) -> str:
    def cell(row, name, digits):
        value = row.get(name)
        if value is None or pd.isna(value):
            return ""
        text = f"{value:+.{digits}f}" if name == "macro_f1_delta" else f"{value:.{digits}f}"
        std = row.get(f"{name}_std")
        if repeats > 1:
            return text + (f" ± {std:.{digits}f}" if std is not None and not pd.isna(std) else "")
        low, high = (row.get(f"{INTERVALS[name]}_ci_{end}") if name in INTERVALS else None for end in ("low", "high"))
        if low is None or high is None or pd.isna(low) or pd.isna(high):
            return text
        no_change = 1.0 if name == "speedup" else 0.0  # a ratio of 1, a delta of 0
        return text + f" ({low:.{digits}f} to {high:.{digits}f}{noise_note(low, high, no_change)})"

    lines = ["# Ablation: the paper's technique grid, measured on this machine", "",
             f"{'Mean ± std over ' + str(repeats) + ' seeds' if repeats > 1 else 'One seed, with 95% intervals'}; "
             "test macro-F1; Δ F1 against the teacher the students learn from (paired bootstrap over the same test "
             "texts); speedup = median of paired batch-1 ratios against the fp32 teacher, timed side by side in the "
             "serving runtime (its interval: order statistics of the ratios); a difference is a finding only where "
             "its interval excludes no change ('within noise' otherwise); latency = median ms/example at batch 1.", "",
             "| teacher | technique | model | accuracy | macro-F1 | Δ F1 vs teacher | latency ms | speedup | "
             "non-zero params (M) | size MB | compression |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        params = "" if pd.isna(r.get("nonzero_params")) else f"{r['nonzero_params'] / 1e6:.2f}"
        lines.append(f"| {r['teacher'] or '—'} | {r['technique']} | {r['model']} | {cell(r, 'accuracy', 4)} | "
                     f"{cell(r, 'macro_f1', 4)} | {cell(r, 'macro_f1_delta', 4)} | {cell(r, 'latency_ms', 3)} | "
                     f"{cell(r, 'speedup', 2)} | {params} | {cell(r, 'size_mb', 2)} | {cell(r, 'compression_ratio', 2)} |")
    if reference is not None:
        cols = list(reference.columns)
        lines += ["", "## Reference figures (from the given CSV — NOT measured here)", "",
                  "| " + " | ".join(f"reference {c}" for c in cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |"
                  for row in reference.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _bars(table: pd.DataFrame, metric: str, title: str) -> go.Figure:
    fig = go.Figure()
    for teacher, group in table.groupby("teacher", sort=False):
        labels = [f"{t} / {m}" for t, m in zip(group["technique"], group["model"])]
        std = group.get(f"{metric}_std")
        fig.add_trace(go.Bar(x=labels, y=group[metric], name=teacher or "baseline",
                             error_y={"type": "data", "array": std.fillna(0).tolist()} if std is not None else None))
    fig.update_layout(title=title, barmode="group", xaxis_tickangle=-35)
    return fig


def _scatter(table: pd.DataFrame, front: pd.DataFrame | None) -> go.Figure:
    fig = go.Figure()
    rows = table[table["technique"] != "baseline"]
    for teacher, group in rows.groupby("teacher", sort=False):
        fig.add_trace(go.Scatter(x=group["speedup"], y=group["macro_f1"], mode="markers+text", name=teacher,
                                 text=[f"{t} {m}" for t, m in zip(group["technique"], group["model"])],
                                 textposition="top center", marker={"size": 11}))
    base = table[table["technique"] == "baseline"]
    if not base.empty:
        fig.add_hline(y=float(base["macro_f1"].iloc[0]), line_dash="dot", annotation_text="TF-IDF + LR baseline")
    if front is not None and not front.empty:
        fig.add_trace(go.Scatter(x=front["speedup"], y=front["macro_f1"], mode="markers", name="pareto study front",
                                 marker={"symbol": "x", "size": 10, "color": "black"}))
    fig.update_layout(title="test macro-F1 vs speedup over the teacher (front: trials chosen on validation)",
                      xaxis_title="speedup (batch 1, paired with the fp32 teacher)", yaxis_title="test macro-F1",
                      xaxis_type="log")
    return fig


def _pareto_front(storage: str, study_name: str) -> pd.DataFrame | None:
    """Pareto-optimal trials of an existing pareto study of the same name, if any (for the overlay)."""
    try:
        import optuna

        from study.reporting.front import completed, pair_studies, pareto_trials

        names = [n for n in pair_studies(storage, study_name) if n.count(".") >= 2]
    except Exception:
        return None
    points = []
    for name in names:
        for t in pareto_trials(completed(optuna.load_study(study_name=name, storage=storage))):
            m = t.user_attrs.get("metrics", {})
            if "speedup_vs_teacher" in m and "macro_f1" in m:  # chosen on validation, plotted on test like the rows
                points.append({"study": name, "macro_f1": m["macro_f1"], "speedup": m["speedup_vs_teacher"]})
    return pd.DataFrame(points) if points else None


def _per_class(labels, truth, predicted, title) -> tuple[go.Figure, go.Figure]:
    p, r, f, support = precision_recall_fscore_support(truth, predicted, labels=range(len(labels)), zero_division=0)
    table = go.Figure(go.Table(header={"values": ["class", "precision", "recall", "F1", "support"]},
                               cells={"values": [list(labels), np.round(p, 4), np.round(r, 4), np.round(f, 4),
                                                 support]}))
    table.update_layout(title=f"Per-class report (test) of the compressed model best on validation: {title}")
    cm = confusion_matrix(truth, predicted, labels=range(len(labels)))
    heat = go.Figure(go.Heatmap(z=cm, x=list(labels), y=list(labels), colorscale="Blues", text=cm,
                                texttemplate="%{text}"))
    heat.update_layout(title=f"Confusion matrix: {title}", xaxis_title="predicted", yaxis_title="true",
                       yaxis_autorange="reversed")
    return table, heat


def write_report(rows, predictions, labels, test_labels, cfg, ab, tracker, out: Path | None) -> list[Path]:
    folder = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="ablation-report-"))
    folder.mkdir(parents=True, exist_ok=True)
    table = aggregate(rows)
    reference = pd.read_csv(ab.reference) if ab.reference is not None else None
    pd.DataFrame(rows).to_csv(folder / "ablation_runs.csv", index=False)
    table.to_csv(folder / "ablation.csv", index=False)
    if reference is not None:
        reference.add_prefix("reference_").to_csv(folder / "reference_table.csv", index=False)
    (folder / "ablation.md").write_text(markdown(table, reference, ab.repeats), encoding="utf-8")
    figures = [(f"bars_{m}", _bars(table, m, title)) for m, title in METRICS if m in table]
    figures.append(("f1_vs_speedup", _scatter(table, _pareto_front(cfg.storage, cfg.study_name))))
    compressed = [r for r in rows if r["repeat"] == 0 and r["technique"] not in ("teacher", "baseline")]
    best = max(compressed, key=lambda r: r["macro_f1_validation"])  # chosen on validation, shown on test
    key = (0, best["teacher"], best["technique"], best["model"])
    per_class, heat = _per_class(labels, test_labels, predictions[key],
                                 f"{best['teacher']} {best['technique']} {best['model']}")
    figures += [("per_class", per_class), ("confusion_matrix", heat)]
    if reference is not None:
        figures.append(("reference_table", go.Figure(go.Table(
            header={"values": [f"reference: {c}" for c in reference.columns]},
            cells={"values": [reference[c].tolist() for c in reference.columns]}))
            .update_layout(title="Reference table from the given CSV (NOT measured here)")))
    html = write_html(figures, folder / "ablation.html", "Ablation report",
                      "Every number measured in this run on this machine, except the clearly labelled reference "
                      "table. The TF-IDF + logistic-regression baseline is what compressed models must beat.")
    return [folder / "ablation.csv", folder / "ablation_runs.csv", folder / "ablation.md", html] + (
        [folder / "reference_table.csv"] if reference is not None else [])
