"""The front's best points next to a reference table's (e.g. the paper's Tables 5-7), picked by the same rules."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
from optuna.trial import FrozenTrial

from study.errors import UserError
from study.front import pruning_label

REFERENCE_COLUMNS = ("table", "teacher", "model", "technique", "macro_f1", "speedup", "compression_ratio")

# (name, which points qualify, which qualifying point is best): points are dicts with delta_f1 (points of
# macro-F1 against the point's own fp32 teacher), speedup and compression (x against that teacher).
Rule = tuple[str, Callable[[dict], bool], Callable[[dict], float]]
RULES: tuple[Rule, ...] = (
    ("most accurate, >= 4x faster and >= 4x smaller", lambda p: p["speedup"] >= 4 and p["compression"] >= 4,
     lambda p: p["delta_f1"]),
    ("fastest, losing <= 3 F1 points", lambda p: p["delta_f1"] >= -3, lambda p: p["speedup"]),
    ("smallest, losing <= 3 F1 points", lambda p: p["delta_f1"] >= -3, lambda p: p["compression"]),
    ("fastest overall", lambda p: True, lambda p: p["speedup"]),
)


def our_points(trials: Sequence[FrozenTrial]) -> list[dict]:
    """Points of completed trials, from the ratios each trial logged against its study's fp32 teacher."""
    points = []
    for t in trials:
        m = t.user_attrs.get("metrics", {})
        if "speedup_vs_teacher" not in m:
            continue
        params = t.user_attrs.get("resolved_params", t.params)
        points.append({"model": f"{t.user_attrs.get('teacher')} -> {t.user_attrs.get('student')} "
                                f"({pruning_label(params.get('prune_kind'), params.get('prune_ratio'))}, "
                                f"{params.get('quant_scheme')})",
                       "macro_f1": 100 * m["macro_f1"], "delta_f1": 100 * m["macro_f1_delta_vs_teacher"],
                       "speedup": m["speedup_vs_teacher"], "compression": m["compression_vs_teacher"]})
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
                       "speedup": float(row.speedup), "compression": float(row.compression_ratio)})
    return points


def _pick(points: list[dict], rule: Rule) -> dict | None:
    _, qualifies, score = rule
    eligible = [p for p in points if qualifies(p)]
    return max(eligible, key=score) if eligible else None


def _cells(point: dict | None) -> list[str]:
    if point is None:
        return ["none qualifies", "", "", "", ""]
    return [point["model"], f"{point['macro_f1']:.2f}", f"{point['delta_f1']:+.2f}", f"{point['speedup']:.2f}x",
            f"{point['compression']:.2f}x"]


def comparison_markdown(ours: list[dict], reference: list[dict], machine: str) -> str:
    """One row per rule: our best point and the reference's best point, in separate columns."""
    head = ("| pick | ours: model | ours: macro-F1 | ours: Δ F1 | ours: speedup | ours: smaller | "
            "paper: model | paper: macro-F1 | paper: Δ F1 | paper: speedup | paper: smaller |")
    lines = [head, "|" + "---|" * 11]
    for rule in RULES:
        lines.append("| " + " | ".join([rule[0], *_cells(_pick(ours, rule)), *_cells(_pick(reference, rule))]) + " |")
    lines.append("")
    lines.append(f"Ours: the study's completed trials, measured on {machine}; against the teacher measured in the "
                 "same run: Δ F1 against its macro-F1 (with its TF-IDF member, if it has one), speedup (batch-1 "
                 "latency) and smaller (artifact bytes) against its fp32 network. Paper: the reference table's "
                 "numbers as published (its own teachers, hardware and protocol), not re-measured here.")
    return "\n".join(lines)
