"""Budgets a model must meet (``--max-latency-ms`` ... ``--min-compression``), checked on a trial's measured numbers.

Every budget reads a number the search may choose by: validation macro-F1 (never the test split's), the
candidate's latency and the paired speed-up measured beside the teacher, the artifact's bytes. A budget
is violated by ``amount > 0`` in its own unit; each trial records those amounts as Optuna constraints
(``Trial.set_constraint``, ``<= 0`` is feasible), so TPE and NSGA-II steer towards trials meeting every budget.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from study.core.errors import UserError

if TYPE_CHECKING:  # annotations only: the training pieces that import this module run without optuna
    from optuna.trial import FrozenTrial

BUDGETS_ATTR = "budgets"  # study user attribute: the budgets its front is computed under ({} for none)
FEASIBLE_TAG = "feasible"  # run tag of every completed trial: "true"/"false"
VIOLATED_TAG = "violated_budgets"  # run tag: the violated budgets, comma-separated ("none" when feasible)
PARETO_AMONG_TAG = "pareto_among"  # parent run tag: "feasible" (budgets given) or "all" (none)


@dataclass(frozen=True)
class Budget:
    name: str  # the flag without dashes, underscores for hyphens
    metric: str  # the trial metric it reads
    bound: str  # "max": metric <= value; "min": metric >= value
    unit: str
    help: str
    scale: float = 1.0  # metric * scale is compared to the budget (macro-F1 deltas in points)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def measured(self, metrics: Mapping[str, float]) -> float | None:
        value = metrics.get(self.metric)
        if value is None or value != value:
            return None
        return value * self.scale

    def violation(self, metrics: Mapping[str, float], limit: float) -> float:
        """By how much (in the budget's unit) a trial misses ``limit``; <= 0 when it meets it, inf when unmeasured."""
        value = self.measured(metrics)
        if value is None:
            return math.inf
        return value - limit if self.bound == "max" else limit - value


BUDGET_DEFS = (
    Budget("max_latency_ms", "latency_ms", "max", "ms",
           "at most this latency per text at batch 1 in the serving runtime (median, at --threads threads; "
           "absolute, so it moves with the machine's load: prefer --min-speedup on a shared machine)"),
    Budget("max_size_mb", "size_mb", "max", "MB", "at most this many MB of exported artifact"),
    Budget("min_macro_f1", "macro_f1_validation", "min", "",
           "at least this validation macro-F1 (0-1; the test split is only reported)"),
    Budget("max_f1_loss", "macro_f1_validation_delta_vs_teacher", "max", "points",
           "at most this many macro-F1 points below the teacher, on validation", scale=-100.0),
    Budget("min_speedup", "speedup_vs_teacher_onnx", "min", "x",
           "at least this speed-up over the fp32 teacher in its faster runtime, paired in one timing process"),
    Budget("min_compression", "compression_vs_teacher", "min", "x",
           "at least this ratio of the fp32 teacher's artifact bytes to the model's"),
)
BY_NAME = {b.name: b for b in BUDGET_DEFS}


@dataclass(frozen=True)
class Budgets:
    """The budgets given (name -> limit); empty when none are, and then every trial is feasible."""

    limits: tuple[tuple[str, float], ...] = ()

    @classmethod
    def of(cls, **given: float | None) -> Budgets:
        limits = []
        for name, value in given.items():
            if value is None:
                continue
            budget = BY_NAME.get(name)
            if budget is None:
                raise UserError(f"unknown budget {name!r}; known: {', '.join(BY_NAME)}")
            value = float(value)
            if not math.isfinite(value):
                raise UserError(f"{budget.flag} must be a finite number, got {value}")
            if name in ("max_latency_ms", "max_size_mb") and value <= 0:
                raise UserError(f"{budget.flag} must be positive, got {value:g}: no model can meet it")
            if name == "min_macro_f1" and not 0 <= value <= 1:
                raise UserError(f"{budget.flag} is a macro-F1 in [0, 1], got {value:g}")
            if name == "max_f1_loss" and value < -100:
                raise UserError(f"{budget.flag} is in macro-F1 points (0-100), got {value:g}")
            if name in ("min_speedup", "min_compression") and value <= 0:
                raise UserError(f"{budget.flag} is a ratio above 0, got {value:g}")
            limits.append((name, value))
        return cls(tuple(limits))

    @classmethod
    def from_dict(cls, stored: Mapping[str, float] | None) -> Budgets:
        return cls.of(**dict(stored or {}))

    @classmethod
    def of_study(cls, study) -> Budgets:
        """The budgets stored on an Optuna study (none for a study run without any)."""
        return cls.from_dict(study.user_attrs.get(BUDGETS_ATTR))

    def __bool__(self) -> bool:
        return bool(self.limits)

    def as_dict(self) -> dict[str, float]:
        return dict(self.limits)

    def describe(self) -> str:
        if not self.limits:
            return "no budgets"
        return ", ".join(f"{BY_NAME[n].flag} {v:g}" for n, v in self.limits)

    def as_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)

    def violations(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """The budgets a trial misses, with by how much (in each budget's unit)."""
        out = {}
        for name, limit in self.limits:
            amount = BY_NAME[name].violation(metrics, limit)
            if amount > 0:
                out[name] = amount
        return out

    def feasible(self, trial: FrozenTrial) -> bool:
        return not self.violations(trial.user_attrs.get("metrics", {}))

    def constraints(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """Optuna constraint values (``Trial.set_constraint``), one per budget: <= 0 when met (a missing metric
        counts as missed by a large amount)."""
        return {n: min(BY_NAME[n].violation(metrics, v), 1e12) for n, v in self.limits}

    def tags(self, metrics: Mapping[str, float]) -> dict[str, str]:
        """A trial run's ``feasible`` and ``violated_budgets`` tags (every trial is feasible without budgets)."""
        missed = self.violations(metrics)
        return {FEASIBLE_TAG: "false" if missed else "true", VIOLATED_TAG: ",".join(missed) or "none"}

    def shortfall(self, trial: FrozenTrial) -> float:
        """How far a trial is from meeting every budget: the sum of its misses, each relative to its limit."""
        total = 0.0
        for name, amount in self.violations(trial.user_attrs.get("metrics", {})).items():
            limit = dict(self.limits)[name]
            total += amount / max(abs(limit), 1e-9)
        return total

    def miss_text(self, trial: FrozenTrial) -> str:
        metrics = trial.user_attrs.get("metrics", {})
        parts = []
        for name, amount in self.violations(metrics).items():
            b = BY_NAME[name]
            value = b.measured(metrics)
            shown = "not measured" if value is None else f"{value:.4g}{(' ' + b.unit) if b.unit else ''}"
            parts.append(f"{b.flag} {dict(self.limits)[name]:g}: {shown} (misses by {amount:.3g})")
        return "; ".join(parts)

    def closest(self, trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
        """The trial that misses the budgets by least (ties: the lower trial number)."""
        done = [t for t in trials if t.values is not None]
        return min(done, key=lambda t: (self.shortfall(t), t.number)) if done else None

    def nothing_meets(self, trials: Sequence[FrozenTrial], what: str) -> str:
        """The message for budgets that no completed trial meets, naming the closest trial."""
        near = self.closest(trials)
        where = (f"; closest: {near.user_attrs.get('study', '')} trial {near.number} ({self.miss_text(near)})"
                 if near is not None else "")
        return f"no completed trial of {what} meets the budgets ({self.describe()}){where}"


def add_budget_flags(parser) -> None:
    """One argparse group with every budget flag (study.run and study.export share it)."""
    group = parser.add_argument_group(
        "budgets", "constraints a model must meet; the search steers towards them (Optuna trial constraints) and "
                   "the Pareto front is computed among the trials that meet them")
    for b in BUDGET_DEFS:
        group.add_argument(b.flag, dest=b.name, type=float, default=None, metavar=b.unit.upper() or "F1",
                           help=b.help)


def budgets_from_args(args) -> Budgets:
    return Budgets.of(**{b.name: getattr(args, b.name, None) for b in BUDGET_DEFS})
