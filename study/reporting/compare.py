"""The front's best points next to a reference table's (e.g. the paper's Tables 5-7), picked by the same rules."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
from optuna.trial import FrozenTrial

from study.core.errors import UserError
from study.reporting.front import pruning_label

REFERENCE_COLUMNS = ("table", "teacher", "model", "technique", "macro_f1", "speedup", "compression_ratio")

# (name, which points qualify, which qualifying point is best): points are dicts with select_f1 (points of
# macro-F1 against the point's own teacher, on what may be used to choose: our validation texts, the paper's
# published numbers), speedup and compression (x against that teacher).
Rule = tuple[str, Callable[[dict], bool], Callable[[dict], float]]
RULES: tuple[Rule, ...] = (
    ("most accurate, >= 4x faster and >= 4x smaller", lambda p: p["speedup"] >= 4 and p["compression"] >= 4,
     lambda p: p["select_f1"]),
    ("fastest, losing <= 3 F1 points", lambda p: p["select_f1"] >= -3, lambda p: p["speedup"]),
    ("smallest, losing <= 3 F1 points", lambda p: p["select_f1"] >= -3, lambda p: p["compression"]),
    ("fastest overall", lambda p: True, lambda p: p["speedup"]),
)


def our_points(trials: Sequence[FrozenTrial]) -> list[dict]:
    """Points of completed trials, from what each trial logged against its study's teacher: chosen by validation
    macro-F1, reported with test macro-F1 and intervals; speed-up against the teacher's faster fp32 runtime."""
    points = []
    for t in trials:
        m = t.user_attrs.get("metrics", {})
        if "speedup_vs_teacher_onnx" not in m or "macro_f1_validation_delta_vs_teacher" not in m:
            continue
        params = t.user_attrs.get("resolved_params", t.params)
        points.append({"model": f"{t.user_attrs.get('teacher')} -> {t.user_attrs.get('student')} "
                                f"({pruning_label(params.get('prune_kind'), params.get('prune_ratio'))}, "
                                f"{params.get('quant_scheme')})",
                       "select_f1": 100 * m["macro_f1_validation_delta_vs_teacher"],
                       "macro_f1": 100 * m["macro_f1"], "delta_f1": 100 * m["macro_f1_delta_vs_teacher"],
                       "macro_f1_ci": (100 * m["macro_f1_ci_low"], 100 * m["macro_f1_ci_high"]),
                       "delta_f1_ci": (100 * m["macro_f1_delta_vs_teacher_ci_low"],
                                       100 * m["macro_f1_delta_vs_teacher_ci_high"]),
                       "speedup": m["speedup_vs_teacher_onnx"],
                       "speedup_ci": (m["speedup_vs_teacher_onnx_ci_low"], m["speedup_vs_teacher_onnx_ci_high"]),
                       "compression": m["compression_vs_teacher"]})
    return points


def reference_points(path: Path) -> list[dict]:
    """Compressed rows of Tables 5-7 of a reference CSV (columns as in paper_tables.csv), with their deltas
    against the teacher row of the same teacher."""
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"--reference {path}: cannot read it as CSV ({exc})") from None
    missing = [c for c in REFERENCE_COLUMNS if c not in table.columns]
    if missing:
        raise UserError(f"--reference {path}: missing column(s) {', '.join(missing)}; expected "
                        f"{', '.join(REFERENCE_COLUMNS)}")
    table = table[table["table"].isin([5, 6, 7])]
    teachers = table[table["technique"] == "teacher"].set_index("teacher")["macro_f1"]
    points = []
    for row in table[table["technique"] != "teacher"].itertuples():
        if row.teacher not in teachers:
            continue
        points.append({"model": f"{row.teacher} -> {row.model} ({row.technique}, Table {row.table})",
                       "macro_f1": float(row.macro_f1), "delta_f1": float(row.macro_f1 - teachers[row.teacher]),
                       "select_f1": float(row.macro_f1 - teachers[row.teacher]),
                       "speedup": float(row.speedup), "compression": float(row.compression_ratio)})
    return points


def _pick(points: list[dict], rule: Rule) -> dict | None:
    _, qualifies, score = rule
    eligible = [p for p in points if qualifies(p)]
    return max(eligible, key=score) if eligible else None


def noise_note(low: float | None, high: float | None, no_change: float = 0.0) -> str:
    """", within noise" when the interval [low, high] holds ``no_change`` (0 for a difference, 1 for a ratio):
    a difference is a finding only when its interval excludes no change; "" otherwise or without an interval."""
    return ", within noise" if low is not None and high is not None and low <= no_change <= high else ""


def _cells(point: dict | None) -> list[str]:
    if point is None:
        return ["none qualifies", "", "", "", ""]

    def ci(key: str, fmt: str) -> str:
        return f" ({fmt.format(point[key][0])} to {fmt.format(point[key][1])})" if key in point else ""

    delta = f"{point['delta_f1']:+.2f}{ci('delta_f1_ci', '{:+.2f}')}"
    if "delta_f1_ci" in point:
        delta += noise_note(*point["delta_f1_ci"])
    return [point["model"], f"{point['macro_f1']:.2f}{ci('macro_f1_ci', '{:.2f}')}", delta,
            f"{point['speedup']:.2f}x{ci('speedup_ci', '{:.2f}')}", f"{point['compression']:.2f}x"]


def comparison_markdown(ours: list[dict], reference: list[dict], machine: str) -> str:
    """One row per rule: our best point and the reference's best point, in separate columns."""
    head = ("| pick | ours: model | ours: test macro-F1 (95% CI) | ours: Δ F1 (95% CI) | ours: speedup (95% CI) | "
            "ours: smaller | paper: model | paper: macro-F1 | paper: Δ F1 | paper: speedup | paper: smaller |")
    lines = [head, "|" + "---|" * 11]
    for rule in RULES:
        lines.append("| " + " | ".join([rule[0], *_cells(_pick(ours, rule)), *_cells(_pick(reference, rule))]) + " |")
    lines.append("")
    lines.append(f"Ours: the study's completed trials, measured on {machine}. Each pick is made on the validation "
                 "texts (its macro-F1 loss against the teacher's validation macro-F1) and reported on the test texts, "
                 "with 95% bootstrap intervals (Δ F1: paired with the teacher's predictions on the same resampled "
                 "texts; 'within noise' when the interval holds zero). Δ F1 is against the teacher's macro-F1 (with "
                 "its TF-IDF member, if it has one); speedup is the median of paired batch-1 ratios against the "
                 "teacher's fp32 network in its faster runtime (PyTorch or ONNX Runtime), timed in one process "
                 "(interval: order statistics of the ratios); smaller is artifact bytes against the fp32 network. "
                 "Paper: the reference table's numbers as published (its own teachers, hardware and protocol), not "
                 "re-measured here.")
    return "\n".join(lines)
