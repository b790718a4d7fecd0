"""Pareto fronts of finished studies: which trials are non-dominated, as a table and a plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from objectives.trial import DIRECTIONS, OBJECTIVES
from study.errors import UserError
from study.tracking import RUN_ID_ATTR

PARAM_COLUMNS = ("temperature", "kd_lambda", "prune_kind", "prune_ratio", "quant_scheme", "calibration")
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


def pareto_trials(trials: Sequence[FrozenTrial], directions: Sequence[str] = DIRECTIONS) -> list[FrozenTrial]:
    """The non-dominated trials among ``trials`` (any mix of studies), by Optuna's own front logic."""
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if not done:
        return []
    scratch = optuna.create_study(directions=list(directions), storage=optuna.storages.InMemoryStorage())
    scratch.add_trials(done)  # renumbered 0..n-1 in this order
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
    """Optuna's 3-objective Pareto plot (plotly), dominated trials shown greyed."""
    from optuna.visualization import plot_pareto_front

    fig = plot_pareto_front(study, target_names=["macro-F1 (validation)", "latency / fp32 teacher's (batch 1, paired)", "size MB"],
                            include_dominated_trials=True)
    fig.update_layout(title=f"Pareto front of {study.study_name}")
    return fig
