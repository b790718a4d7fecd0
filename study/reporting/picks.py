"""One rule picks one model from a front: ``most-accurate``, ``fastest``, ``smallest``, ``fastest-within:P``,
``smallest-within:P`` or ``knee``, on validation numbers only.

Rules read the three objectives (validation macro-F1, latency relative to the paired fp32 teacher, artifact
MB) and the validation macro-F1 difference to the teacher; never a test number. Ties are broken by the
other objectives in the order above, then by the lower trial number, so a pick is always Pareto-optimal
and the same front always gives the same pick.

The knee: each objective is scaled to [0, 1] over the front (0 the front's best value, 1 its worst; an
objective all front members share counts 0), and the knee is the member nearest (Euclidean) to the ideal
point (0, 0, 0), the point best in all three at once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from optuna.trial import FrozenTrial

from objectives.trial import DIRECTIONS
from study.core.errors import UserError
from study.reporting.front import pareto_trials

RULES = ("most-accurate", "fastest", "smallest", "fastest-within:P", "smallest-within:P", "knee")
_WITHIN = re.compile(r"^(fastest|smallest)-within:(\d+(?:\.\d+)?)$")
DELTA_METRIC = "macro_f1_validation_delta_vs_teacher"


@dataclass(frozen=True)
class Rule:
    text: str  # as given, e.g. "fastest-within:3"
    kind: str  # most-accurate | fastest | smallest | knee
    within_points: float | None = None  # macro-F1 points below the teacher (validation) allowed

    def describe(self) -> str:
        if self.kind == "knee":
            return "the knee of the front (nearest to the ideal point, objectives scaled over the front)"
        if self.within_points is not None:
            return (f"the {self.kind} model at most {self.within_points:g} macro-F1 points below the teacher "
                    "on validation")
        return {"most-accurate": "the model with the highest validation macro-F1",
                "fastest": "the model with the lowest latency relative to the paired teacher",
                "smallest": "the model with the smallest artifact"}[self.kind]


def parse_rule(text: str) -> Rule:
    text = text.strip()
    if text in ("most-accurate", "fastest", "smallest", "knee"):
        return Rule(text, text)
    m = _WITHIN.match(text)
    if m:
        return Rule(text, m.group(1), float(m.group(2)))
    raise UserError(f"--pick must be one of {', '.join(RULES)} (P: macro-F1 points, e.g. fastest-within:3); "
                    f"got {text!r}")


def _objectives(t: FrozenTrial) -> tuple[float, float, float]:
    """The trial's objectives turned so that smaller is better in each."""
    return tuple(-v if d == "maximize" else v for v, d in zip(t.values, DIRECTIONS))


def _order(t: FrozenTrial, first: int) -> tuple:
    """Sort key: objective ``first``, then the others in order, then the trial number (smaller is better)."""
    values = _objectives(t)
    rest = [values[i] for i in range(len(values)) if i != first]
    return (values[first], *rest, t.user_attrs.get("study", ""), t.number)


def knee(front: Sequence[FrozenTrial]) -> FrozenTrial:
    points = [_objectives(t) for t in front]
    lows = [min(p[i] for p in points) for i in range(3)]
    highs = [max(p[i] for p in points) for i in range(3)]

    def distance(t: FrozenTrial) -> float:
        p = _objectives(t)
        return math.sqrt(sum(((p[i] - lows[i]) / (highs[i] - lows[i]) if highs[i] > lows[i] else 0.0) ** 2
                             for i in range(3)))

    return min(front, key=lambda t: (distance(t), _order(t, 0)))


def pick(trials: Sequence[FrozenTrial], rule: Rule) -> FrozenTrial:
    """The one trial ``rule`` picks among ``trials`` (completed, and meeting any budgets: filter first).

    Raises UserError when no trial is within the rule's tolerance, naming the closest one.
    """
    if not trials:
        raise UserError("no completed trial to pick from")
    if rule.kind == "knee":
        return knee(pareto_trials(trials))
    pool = list(trials)
    if rule.within_points is not None:
        pool = [t for t in trials if loss_points(t) <= rule.within_points + 1e-9]
        if not pool:
            near = min(trials, key=lambda t: (loss_points(t), t.number))
            raise UserError(f"--pick {rule.text}: no trial is within {rule.within_points:g} macro-F1 points of the "
                            f"teacher on validation; the closest is {near.user_attrs.get('study', '')} trial "
                            f"{near.number}, {loss_points(near):.2f} points below")
    first = {"most-accurate": 0, "fastest": 1, "smallest": 2}[rule.kind]
    return min(pool, key=lambda t: _order(t, first))


DEFAULT_TABLE_RULES = ("most-accurate", "fastest", "smallest", "fastest-within:1", "fastest-within:3",
                       "smallest-within:1", "smallest-within:3", "knee")


def pick_each(trials: Sequence[FrozenTrial], rules: Sequence[str] = DEFAULT_TABLE_RULES
              ) -> list[tuple[Rule, FrozenTrial | None, str]]:
    """Every rule's pick (None and why, when a rule has none)."""
    out = []
    for text in rules:
        rule = parse_rule(text)
        try:
            out.append((rule, pick(trials, rule), ""))
        except UserError as exc:
            out.append((rule, None, str(exc)))
    return out


def loss_points(t: FrozenTrial) -> float:
    """Validation macro-F1 points below the teacher (negative: above it); inf when not recorded."""
    delta = t.user_attrs.get("metrics", {}).get(DELTA_METRIC)
    return math.inf if delta is None else -100.0 * delta
