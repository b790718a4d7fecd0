"""Figures of finished studies (fronts, history, hypervolume, importances, parallel coordinates) as HTML."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import optuna
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from objectives.trial import DIRECTIONS, OBJECTIVES
from study.core.budgets import Budgets
from study.reporting.front import completed, pareto_trials
from study.reporting.front import _fit_pane  # the layout every figure gets: legible in MLflow's artifact pane

LABELS = {"macro_f1_validation": "macro-F1 (validation)", "macro_f1": "macro-F1 (test)",
          "latency_vs_teacher": "latency / fp32 teacher's (batch 1, paired)", "latency_ms": "latency ms (batch 1)",
          "latency_e2e_ms": "ms from raw text (batch 1, tokenization included)", "size_mb": "size MB"}
REFERENCES = (("teacher", "fp32 teacher", "star", "black"), ("baseline", "TF-IDF + LR baseline", "diamond", "red"))


def reference_points(metrics: dict[str, float]) -> list[tuple[str, dict[str, float], str, str]]:
    """(name, {objective: value}, marker, colour) for the teacher and baseline found in ``metrics``.

    The baseline takes raw text, so it has no network-only latency: its ``latency_ms`` is from raw text and its
    ``latency_vs_teacher`` is against the teacher's from raw text (its name says so); ``latency_e2e_ms`` is on
    one footing for every model."""
    points = []
    for prefix, name, marker, colour in REFERENCES:
        values = {o: metrics.get(f"{prefix}_{o}") for o in (*OBJECTIVES, "latency_ms", "latency_e2e_ms")}
        if prefix == "teacher" and metrics.get("teacher_tfidf_weight"):
            # its macro-F1 is the ensemble's (network + TF-IDF member), its latency and size the network's
            name = f"{name} (macro-F1 with its TF-IDF member, weight {metrics['teacher_tfidf_weight']:g})"
        if prefix == "baseline":
            name = f"{name} (latency from raw text)"
        if all(values[o] is not None for o in OBJECTIVES):
            points.append((name, values, marker, colour))
    return points


def _add_references(fig: go.Figure, refs, axes: Sequence[str]) -> None:
    for name, values, marker, colour in refs:
        coords = [values.get(a) for a in axes]
        if any(c is None for c in coords):  # not measured on these axes
            continue
        label = name.split(" (", 1)[0]  # the short name beside the marker; the legend has the whole one
        if len(axes) == 3:
            fig.add_trace(go.Scatter3d(x=[coords[0]], y=[coords[1]], z=[coords[2]], mode="markers+text", text=[label],
                                       name=name, showlegend=True,
                                       marker={"symbol": "diamond", "size": 7, "color": colour}))
        else:
            # left of the marker: the teacher sits at the right edge (best F1, slowest), the label stays inside
            fig.add_trace(go.Scatter(x=[coords[0]], y=[coords[1]], mode="markers+text", text=[label],
                                     textposition="middle left", cliponaxis=False, name=name, showlegend=True,
                                     marker={"symbol": marker, "size": 14, "color": colour}))


def _placeholder(title: str, reason: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=reason, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(title=title, xaxis={"visible": False}, yaxis={"visible": False})
    return fig


def study_figures(study: optuna.Study, metrics: dict[str, float]) -> list[tuple[str, go.Figure]]:
    """Every figure of one pair study; reference points drawn on every front."""
    from optuna import visualization as vis

    refs = reference_points(metrics)
    trials = completed(study)
    figs: list[tuple[str, go.Figure]] = []
    for a, b in ((0, 1), (0, 2)):
        fig = vis.plot_pareto_front(study, targets=lambda t, a=a, b=b: (t.values[a], t.values[b]),
                                    target_names=[LABELS[OBJECTIVES[a]], LABELS[OBJECTIVES[b]]])
        _add_references(fig, refs, (OBJECTIVES[a], OBJECTIVES[b]))
        fig.update_layout(title=f"Pareto front: {LABELS[OBJECTIVES[a]]} vs {LABELS[OBJECTIVES[b]]}")
        figs.append((f"pareto_{OBJECTIVES[a]}_{OBJECTIVES[b]}", fig))
    fig = vis.plot_pareto_front(study, target_names=[LABELS[o] for o in OBJECTIVES])
    _add_references(fig, refs, OBJECTIVES)
    fig.update_layout(title="Pareto front, all three objectives")
    figs.append(("pareto_3d", fig))
    for i, name in enumerate(OBJECTIVES):
        fig = vis.plot_optimization_history(study, target=lambda t, i=i: t.values[i], target_name=LABELS[name])
        fig.update_layout(title=f"Optimization history: {LABELS[name]}")
        figs.append((f"history_{name}", fig))
    if len(trials) >= 2:
        worst = [0.0, max(max(t.values[1] for t in trials) * 1.1, 1.0), max(t.values[2] for t in trials) * 1.1]
        with warnings.catch_warnings():
            # experimental since Optuna 3.3 (its interface may change): the one warning it gives, known
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning,
                                    message=".*plot_hypervolume_history is experimental")
            fig = vis.plot_hypervolume_history(study, reference_point=worst)
        fig.update_layout(title=f"Hypervolume over trials (reference point: F1 0, latency {worst[1]:.3g}x the teacher's, "
                                f"size {worst[2]:.3g} MB)")
    else:
        fig = _placeholder("Hypervolume over trials", "needs at least 2 completed trials")
    figs.append(("hypervolume", fig))
    for i, name in enumerate(OBJECTIVES):
        figs.append((f"importance_{name}", _importance_figure(study, i, name)))
    fig = vis.plot_parallel_coordinate(study, target=lambda t: t.values[0], target_name=LABELS["macro_f1_validation"])
    fig.update_layout(title="Parallel coordinates (colour: validation macro-F1)")
    figs.append(("parallel_coordinates", fig))
    return [(name, _fit_pane(fig)) for name, fig in figs]


PED_ANOVA_LOW_TARGET = "PedAnovaImportanceEvaluator computes the importances of params to achieve low `target`"
EQUAL_IMPORTANCES = "Parameter importances will be equal"


def _importance_figure(study: optuna.Study, i: int, name: str) -> go.Figure:
    """Parameter importances for objective ``i`` (Optuna's default evaluator, PED-ANOVA: which parameters
    the best trials share). PED-ANOVA takes lower ``target`` values as better, so a maximized objective
    (macro-F1) is passed negated, as its warning asks; a study too small for it to tell parameters apart gets
    a placeholder saying so."""
    from optuna import visualization as vis

    title = f"Parameter importances for {LABELS[name]}"
    sign = -1.0 if DIRECTIONS[i] == "maximize" else 1.0
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # recorded here, then answered or re-issued below
            fig = vis.plot_param_importances(study, target=lambda t: sign * t.values[i], target_name=LABELS[name])
    except (RuntimeError, ValueError, ZeroDivisionError) as exc:
        return _placeholder(title, f"not computable yet: {exc}")
    for warning in caught:
        text = str(warning.message)
        if EQUAL_IMPORTANCES in text:
            return _placeholder(title, f"not computable yet: {text}")
        if not text.startswith(PED_ANOVA_LOW_TARGET):  # answered: maximized objectives are negated
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    fig.update_layout(title=title)
    return fig


def merged_figure(studies: Sequence[optuna.Study], metrics: dict[str, float]) -> go.Figure:
    """All pairs' trials (validation F1 vs latency from raw text), the merged front marked, and the reference
    points."""
    all_trials = [t for s in studies for t in completed(s)]
    budgets = Budgets.of_study(studies[0]) if studies else Budgets()
    front = {(t.user_attrs.get("study"), t.number) for t in pareto_trials(all_trials, budgets=budgets)}
    fig = go.Figure()
    for study in studies:
        trials = completed(study)
        on = [t for t in trials if (t.user_attrs.get("study"), t.number) in front]
        off = [t for t in trials if (t.user_attrs.get("study"), t.number) not in front]
        pair = study.study_name.split(".", 1)[-1]
        for group, opacity, suffix in ((on, 1.0, " (merged front)"), (off, 0.35, "")):
            if group:
                fig.add_trace(go.Scatter(
                    x=[t.user_attrs.get("metrics", {}).get("latency_e2e_ms") for t in group],
                    y=[t.values[0] for t in group],
                    mode="markers", name=pair + suffix,
                    legendgroup=pair, opacity=opacity, marker={"size": 11 if suffix else 8},
                    text=[f"{pair} trial {t.number}, {t.values[2]:.2f} MB" for t in group], hoverinfo="text+x+y"))
    # from raw text: the one latency every model has on the same footing (the baseline has no network-only one)
    _add_references(fig, reference_points(metrics), ("latency_e2e_ms", "macro_f1_validation"))
    fig.update_layout(title="Merged Pareto front across teacher/student pairs", xaxis_title=LABELS["latency_e2e_ms"],
                      yaxis_title=LABELS["macro_f1_validation"])
    return _fit_pane(fig)


def write_html(figures: Sequence[tuple[str, go.Figure]], path: Path, title: str, intro: str = "") -> Path:
    """One self-contained HTML file (plotly.js inlined once), one <div id=NAME> per figure."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>",
             f"<script type='text/javascript'>{get_plotlyjs()}</script>",
             "<style>body{font-family:sans-serif;margin:2em} .figure{margin-bottom:2em}</style></head><body>",
             f"<h1>{title}</h1><p>{intro}</p>"]
    for name, fig in figures:
        parts.append(f"<div class='figure' id='{name}'>{fig.to_html(full_html=False, include_plotlyjs=False)}</div>")
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def publish(study_name: str, studies: Sequence[optuna.Study], tracker, out: Path | None = None,
            log=print, reference: Path | None = None) -> list[Path]:
    """Write each pair study's report and the merged front, and log them to MLflow.

    Each pair's ``report.html`` goes to its parent run (``report/``); the merged front across pairs
    (``merged_front.html``, ``merged_front.csv``) to the experiment's ``role=report`` run, with
    ``front_vs_reference.md`` (best points next to the ``reference`` table's) when one is given.
    """
    import tempfile

    experiment_id = tracker.find_experiment(study_name)
    if experiment_id is None:
        from study.core.errors import UserError

        raise UserError(f"no MLflow experiment {study_name!r} in {tracker.uri}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(out) if out is not None else Path(tmp)
        written, reference_metrics = _publish_pair_reports(studies, tracker, experiment_id, folder)
        merged = [s for s in studies if completed(s)]
        if merged:
            files = _write_merged_front(study_name, merged, reference_metrics, folder, log, reference)
            report_run = tracker.report_run(experiment_id, study_name)
            for path in files:
                tracker.log_artifact(report_run, path)
            written += files
        if out is not None:
            for path in written:
                log(f"[report] wrote {path}")
    return written


def _publish_pair_reports(studies: Sequence[optuna.Study], tracker, experiment_id: str,
                          folder: Path) -> tuple[list[Path], dict[str, float]]:
    """Each pair study's figures as ``<study>.html``, logged to its parent run under ``report/``. Returns the
    files and the reference metrics (teacher, baseline) of the first pair study whose parent run has any."""
    written: list[Path] = []
    all_metrics: dict[str, float] = {}
    for study in studies:
        parent = tracker.find_study_run(experiment_id, study.study_name)
        metrics = dict(parent.data.metrics) if parent else {}
        all_metrics = all_metrics or metrics
        if not completed(study):
            continue
        path = write_html(study_figures(study, metrics), folder / f"{study.study_name}.html",
                          f"Study {study.study_name}",
                          f"{len(completed(study))} completed trials. Reference points: the fp32 teacher and the "
                          "TF-IDF + logistic-regression baseline, measured in the study's own run.")
        written.append(path)
        if parent:
            tracker.log_artifact(parent.info.run_id, path, "report")
    return written, all_metrics


def _write_merged_front(study_name: str, merged: Sequence[optuna.Study], metrics: dict[str, float], folder: Path,
                        log, reference: Path | None) -> list[Path]:
    """The merged front across pairs: its figure, its CSV, one pick per rule (also logged to the console) and,
    with a ``reference`` table, the comparison with it."""
    from study.reporting.front import front_frame

    path = write_html([("merged_front", merged_figure(merged, metrics))], folder / "merged_front.html",
                      f"Merged front of {study_name}", "Every completed trial of every teacher/student pair; "
                      "the merged Pareto front in full colour.")
    csv = folder / "merged_front.csv"
    budgets = Budgets.of_study(merged[0])
    everything = [t for s in merged for t in completed(s)]
    front = pareto_trials(everything, budgets=budgets)
    front_frame(front).to_csv(csv, index=False)
    picks = folder / "picks.md"
    picks.write_text(picks_markdown(everything, budgets), encoding="utf-8")
    log(picks.read_text(encoding="utf-8"))
    files = [path, csv, picks]
    if reference is not None:
        files.append(_write_comparison(front, reference, folder / "front_vs_reference.md"))
    return files


def _write_comparison(trials, reference: Path, path: Path) -> Path:
    from objectives.measure import machine_facts
    from study.reporting.compare import comparison_markdown, our_points, reference_points

    facts = machine_facts()
    text = comparison_markdown(our_points(trials), reference_points(reference),
                               f"{facts['cpu']} ({facts['cpu_count']} cores)")
    path.write_text(f"# Best points of the front next to {reference.name}\n\n{text}\n")
    return path


def picks_markdown(trials, budgets: Budgets) -> str:
    """Every pick rule's model as a table: chosen on validation, reported with test numbers and intervals."""
    from study.reporting.compare import noise_note
    from study.reporting.picks import DEFAULT_TABLE_RULES, loss_points, pick_each

    feasible = [t for t in trials if budgets.feasible(t)]
    among = (f"{len(feasible)} of {len(trials)} completed trials meet the budgets ({budgets.describe()})" if budgets
             else f"{len(trials)} completed trials, no budgets")
    lines = ["# One model per rule", "",
             f"Picks made on validation numbers among {among}; test numbers reported with 95% bootstrap intervals, "
             "speed-up paired with the fp32 teacher in its faster runtime; 'within noise' where an interval holds "
             "no change (Δ 0, speed-up 1). Export one with "
             "`python -m study.export --study-name S --pick RULE`.", "",
             "| rule | pair | trial | validation macro-F1 | points below teacher (validation) | latency vs teacher | "
             "size MB | test macro-F1 (95% CI) | Δ F1 vs teacher, test (95% CI) | speed-up (95% CI) |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def num(m, key, digits):
        value = m.get(key)
        return "n/a" if value is None else f"{value:.{digits}f}"

    def noise(m, key, no_change):
        return noise_note(m.get(f"{key}_ci_low"), m.get(f"{key}_ci_high"), no_change)

    for rule, trial, why in (pick_each(feasible, DEFAULT_TABLE_RULES) if feasible else []):
        if trial is None:
            lines.append(f"| `{rule.text}` | — | — | {why.split(': ', 1)[-1]} | | | | | | |")
            continue
        m = trial.user_attrs.get("metrics", {})
        pair = str(trial.user_attrs.get("study", "")).split(".", 1)[-1]
        lines.append(
            f"| `{rule.text}` | {pair} | {trial.number} | {trial.values[0]:.4f} | {loss_points(trial):.2f} | "
            f"{trial.values[1]:.3f} | {trial.values[2]:.2f} | {num(m, 'macro_f1', 4)} ({num(m, 'macro_f1_ci_low', 4)}-"
            f"{num(m, 'macro_f1_ci_high', 4)}) | {num(m, 'macro_f1_delta_vs_teacher', 4)} "
            f"({num(m, 'macro_f1_delta_vs_teacher_ci_low', 4)} to {num(m, 'macro_f1_delta_vs_teacher_ci_high', 4)}"
            f"{noise(m, 'macro_f1_delta_vs_teacher', 0.0)}) | "
            f"{num(m, 'speedup_vs_teacher_onnx', 2)}x ({num(m, 'speedup_vs_teacher_onnx_ci_low', 2)}-"
            f"{num(m, 'speedup_vs_teacher_onnx_ci_high', 2)}{noise(m, 'speedup_vs_teacher_onnx', 1.0)}) |")
    if not feasible:
        lines.append(f"| (none) | | | {budgets.nothing_meets(trials, 'this study')} | | | | | | |")
    return "\n".join(lines) + "\n"
