"""Pareto fronts of finished studies: which trials are non-dominated, as a table and a plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from objectives.trial import DIRECTIONS, OBJECTIVES
from search_spaces import PARAMETERS
from study.core.budgets import Budgets
from study.core.errors import UserError
from study.reporting.stores import check_driver
from study.reporting.tracking import RUN_ID_ATTR

PARAM_COLUMNS = tuple(PARAMETERS)  # the search space's parameter names, in its order
# test-split numbers (reported, never used to choose) and the paired speed-ups, shown beside the objectives
EXTRA_METRICS = ("macro_f1", "macro_f1_ci_low", "macro_f1_ci_high", "latency_ms", "speedup_vs_teacher",
                 "speedup_vs_teacher_onnx",
                 "latency_e2e_ms", "accuracy", "throughput_per_s", "nonzero_params", "latency_iqr_ms",
                 "size_compressed_mb")
NO_PRUNING = "no pruning"


def pruning_label(kind, ratio, fmt: str = "{:.0%}") -> str:
    """A trial's pruning as text: ``"<kind> <ratio>"``, or "no pruning" for a ratio of 0 (or none), whatever the
    kind (a 0% l1_unstructured trial pruned nothing)."""
    value = 0.0 if ratio is None or ratio != ratio else float(ratio)
    return NO_PRUNING if value == 0 else f"{kind} {fmt.format(value)}"


def pair_studies(storage: str, study_name: str) -> list[str]:
    """Names of the pair studies ``<study_name>.<teacher>.<student>`` (or ``study_name`` itself) in storage."""
    if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///"):]).expanduser().exists():
        raise UserError(f"Optuna storage {storage!r}: the database file does not exist")
    check_driver(storage, "Optuna storage")
    try:
        names = optuna.get_all_study_names(storage=storage)
    except Exception as exc:
        raise UserError(f"Optuna storage {storage!r} is not usable: {exc}") from None
    found = sorted(n for n in names if n == study_name or n.startswith(study_name + "."))
    if not found:
        raise UserError(f"no study named {study_name!r} (or {study_name}.<teacher>.<student>) in {storage}")
    return found


def completed(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def pareto_trials(trials: Sequence[FrozenTrial], directions: Sequence[str] = DIRECTIONS,
                  budgets: Budgets | None = None) -> list[FrozenTrial]:
    """The non-dominated trials among ``trials`` (any mix of studies), by Optuna's own front logic; with
    ``budgets``, among the trials that meet them (the budgets given now, not those a trial ran under)."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and (not budgets or budgets.feasible(t))]
    if not done:
        return []
    scratch = optuna.create_study(directions=list(directions), storage=optuna.storages.InMemoryStorage())
    # bare copies: a stored trial's constraint values (its budgets when it ran) must not filter this front
    scratch.add_trials([optuna.trial.create_trial(values=list(t.values)) for t in done])  # numbered 0..n-1
    return [done[t.number] for t in sorted(scratch.best_trials, key=lambda t: t.number)]


def _value(t: FrozenTrial, name: str):
    if name in t.params:
        return t.params[name]
    return t.user_attrs.get(f"fixed.{name}", t.user_attrs.get("resolved_params", {}).get(name))


def front_frame(trials: Sequence[FrozenTrial]) -> pd.DataFrame:
    """One row per trial: ids, teacher/student, params, objectives and test numbers (sorted by validation
    macro-F1, best first)."""
    rows = []
    for t in trials:
        metrics = t.user_attrs.get("metrics", {})
        row = {"study": t.user_attrs.get("study"), "trial_number": t.number, "run_id": t.user_attrs.get(RUN_ID_ATTR),
               "teacher": t.user_attrs.get("teacher"), "student": t.user_attrs.get("student")}
        row.update({p: _value(t, p) for p in PARAM_COLUMNS})
        row.update(dict(zip(OBJECTIVES, t.values)))
        row.update({m: metrics.get(m) for m in EXTRA_METRICS})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["study", "trial_number", "run_id", "teacher", "student", *PARAM_COLUMNS,
                                        *OBJECTIVES, *EXTRA_METRICS])
    return frame.sort_values([OBJECTIVES[0], OBJECTIVES[1]], ascending=[False, True], ignore_index=True)


def printable(frame: pd.DataFrame) -> str:
    shown = frame.drop(columns=["run_id", "study"], errors="ignore").copy()
    if "prune_kind" in shown and "prune_ratio" in shown:  # a 0 ratio pruned nothing, whatever kind was drawn
        unpruned = shown["prune_ratio"].map(lambda r: r is not None and r == r and float(r) == 0)
        shown["prune_kind"] = shown["prune_kind"].where(~unpruned, NO_PRUNING)
    for col, fmt in (("size_compressed_mb", "{:.2f}"), ("temperature", "{:.2f}"), ("kd_lambda", "{:.2f}"), ("prune_ratio", "{:.2f}"),
                     ("macro_f1", "{:.4f}"), ("macro_f1_validation", "{:.4f}"), ("macro_f1_ci_low", "{:.4f}"),
                     ("macro_f1_ci_high", "{:.4f}"), ("speedup_vs_teacher", "{:.2f}"),
                     ("speedup_vs_teacher_onnx", "{:.2f}"), ("latency_e2e_ms", "{:.3f}"),
                     ("latency_ms", "{:.3f}"), ("latency_vs_teacher", "{:.3f}"), ("size_mb", "{:.2f}"),
                     ("accuracy", "{:.4f}"), ("throughput_per_s", "{:.0f}"), ("nonzero_params", "{:.0f}"),
                     ("latency_iqr_ms", "{:.3f}")):
        if col in shown:
            shown[col] = shown[col].map(lambda v, f=fmt: "" if v is None or v != v else f.format(v))
    return shown.to_string(index=False)


def pareto_figure(study: optuna.Study):
    """Optuna's 3-objective Pareto plot (plotly): the front in reds, dominated trials in blues (colour: trial
    number), laid out for MLflow's artifact pane."""
    from optuna.visualization import plot_pareto_front

    fig = plot_pareto_front(study, target_names=["macro-F1 (validation)", "latency / fp32 teacher's (batch 1, paired)", "size MB"],
                            include_dominated_trials=True)
    fig.update_layout(title=f"Pareto front of {study.study_name}")
    return _fit_pane(fig)


def _fit_pane(fig, width: int = 540):
    """Lay ``fig`` out to read at the size of MLflow's artifact pane (about 900x600 px, and still at 650x450):
    the title (broken in lines) and the legend (in rows) above the plot, with the top margin sized for both on a
    plot ``width`` px wide; the colour bars side by side right of the plot, a fixed number of pixels apart, so they
    overlap neither each other nor the legend at any width; and a 3-D scene seen from further away, with its axis
    titles broken in lines, so they stay inside its box. Returns ``fig``."""
    bars = [t for t in fig.data if getattr(getattr(t, "marker", None), "colorbar", None) is not None
            and t.marker.colorbar.title.text]
    for i, trace in enumerate(bars):
        trace.marker.update(showscale=True, colorbar={
            "x": 1.0, "xref": "paper", "xanchor": "left", "xpad": 12 + 78 * i, "y": 0.5, "yanchor": "middle",
            "len": 0.9, "thickness": 14, "title": {"side": "top", "font": {"size": 12}}, "tickfont": {"size": 11}})
    title = _wrap(fig.layout.title.text, 56)
    title_lines = title.count("<br>") + 1 if title else 0
    names = [t.name for t in fig.data if getattr(t, "showlegend", False) is not False and getattr(t, "name", None)]
    shown = fig.layout.showlegend if fig.layout.showlegend is not None else len(names) >= 2 or any(
        getattr(t, "showlegend", False) for t in fig.data)
    legend_px = 22 * _legend_rows(names, width) + 8 if shown and names else 6
    fig.update_layout(  # from the top: title, legend, plot; the title's last line just above the legend
        title={"text": title, "x": 0.01, "xanchor": "left", "xref": "container", "yref": "paper", "y": 1.0,
               # plotly anchors a title's first line: the lines below it need their room too
               "yanchor": "bottom", "pad": {"b": legend_px + 22 * max(title_lines - 1, 0)}, "font": {"size": 16}},
        legend={"orientation": "h", "traceorder": "normal", "x": 0.0, "xanchor": "left", "y": 1.0,
                "yanchor": "bottom", "font": {"size": 11}},
        margin={"l": 60, "r": 20 + 78 * len(bars), "t": 12 + 22 * title_lines + legend_px, "b": 50,
                "autoexpand": True})
    if any(getattr(t, "type", None) == "scatter3d" for t in fig.data):
        fig.update_layout(margin={"l": 0, "b": 0}, scene={
            "camera": {"eye": {"x": 1.7, "y": 1.7, "z": 1.1}, "center": {"x": 0, "y": 0, "z": -0.1}},
            **{axis: {"title": {"text": _wrap(fig.layout.scene[axis].title.text, 24), "font": {"size": 11}}}
               for axis in ("xaxis", "yaxis", "zaxis")}})
    return fig


def _wrap(text: str | None, width: int) -> str | None:
    """``text`` broken at spaces into lines of at most about ``width`` characters (plotly's ``<br>``)."""
    if not text or len(text) <= width or "<br>" in text:
        return text
    lines = [""]
    for word in text.split(" "):
        if lines[-1] and len(lines[-1]) + 1 + len(word) > width:
            lines.append(word)
        else:
            lines[-1] = f"{lines[-1]} {word}".strip()
    return "<br>".join(lines)


def _legend_rows(names: Sequence[str], width: int) -> int:
    """How many rows a horizontal legend of ``names`` (11 px font) takes in ``width`` px (an upper estimate)."""
    rows, used = 1, 0
    for name in names:
        item = 50 + 7 * len(name)  # symbol, gaps and text
        if used and used + item > width:
            rows, used = rows + 1, 0
        used += item
    return rows
