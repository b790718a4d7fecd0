"""How a pair study reuses distilled students: the distillation-seed rule recorded on the study, and the trials
queued after each new distillation with its T and lambda (docs/distill-cache.md)."""

from __future__ import annotations

from dataclasses import replace

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from objectives.context import DISTILL_SEED_RULES, TrialContext
from search_spaces import Param, SearchSpace
from study.core.errors import UserError
from study.reporting.front import completed

DISTILL_SEED_ATTR = "distill_seed_rule"  # study user attr: "study_seed" (since #18) or "trial_seed" (before)
VARIANT_OF_ATTR = "variant_of"  # user attr of a queued trial: the number of the trial whose T and lambda it reuses
KD_PARAMS = ("temperature", "kd_lambda")  # what a distilled student depends on among the searched parameters


def distill_seed_rule(study: optuna.Study) -> str:
    """The rule recorded on the study; for a study without one, "trial_seed" if it has completed trials (it was
    started before #18, when every trial distilled with seed + trial number), else "study_seed"."""
    recorded = study.user_attrs.get(DISTILL_SEED_ATTR)
    if recorded is None:
        return "trial_seed" if completed(study) else "study_seed"
    if recorded not in DISTILL_SEED_RULES:
        raise UserError(f"study {study.study_name!r} records distillation seed rule {recorded!r}, which this "
                        f"version does not know ({', '.join(DISTILL_SEED_RULES)}); use another --study-name")
    return recorded


def under_recorded_rule(study: optuna.Study, ctx: TrialContext) -> tuple[TrialContext, str | None]:
    """``ctx`` for the rule recorded on ``study``, and a line saying so when it is the old one: a study started
    before #18 goes on distilling with seed + trial number and keeps the T and lambda distributions its trials
    were drawn from (Optuna's samplers cannot mix a float range and a grid of choices in one parameter)."""
    rule = study.user_attrs.get(DISTILL_SEED_ATTR, "study_seed")
    if rule == "study_seed":
        return ctx, None
    space = stored_distributions(study, ctx.space, KD_PARAMS)
    line = (f"[{ctx.study_name}] started before distilled students were shared (#18): it keeps distilling each "
            "trial with seed + trial number and its own T and lambda ranges, so its trials share no student and "
            "queue no variants; a new --study-name gets the reuse")
    return replace(ctx, distill_seed_rule=rule, space=space), line


def stored_distributions(study: optuna.Study, space: SearchSpace, names: tuple[str, ...]) -> SearchSpace:
    """``space`` with the searched parameters ``names`` drawn from the distributions the study's latest trial
    that has them was drawn from."""
    params = list(space.params)
    for i, p in enumerate(params):
        if p.name not in names or p.type == "fixed":
            continue
        stored = next((t.distributions[p.name] for t in reversed(study.get_trials(deepcopy=False))
                       if p.name in t.distributions), None)
        if stored is not None:
            params[i] = param_of(p.name, stored)
    return replace(space, params=tuple(params))


def param_of(name: str, distribution: BaseDistribution) -> Param:
    """The search-space entry an Optuna distribution was suggested from."""
    if isinstance(distribution, CategoricalDistribution):
        return Param(name, "categorical", choices=tuple(distribution.choices))
    if isinstance(distribution, (FloatDistribution, IntDistribution)):
        kind = "float" if isinstance(distribution, FloatDistribution) else "int"
        step = None if distribution.log or (kind == "int" and distribution.step == 1) else distribution.step
        return Param(name, kind, low=distribution.low, high=distribution.high, log=distribution.log, step=step)
    raise ValueError(f"parameter {name}: no search-space entry for {type(distribution).__name__}")


AUTO = "auto"
AUTO_MAX_VARIANTS = 15  # at most this many queued per distillation under --variants-per-distillation auto
AFTER_DISTILLATION = ("prune", "quantize", "evaluate", "measure")  # a trial's stages that a variant repeats


def auto_variants(metrics: dict[str, float]) -> int:
    """How many variants to queue after a distillation under ``auto``: as many as fit in the time that
    distillation took, at the cost the trial paid after it (pruning, quantization, scoring, timing), so a study
    spends about as long on compressing each student as on distilling it; 0 to AUTO_MAX_VARIANTS."""
    distil = metrics.get("distill_seconds", 0.0)
    rest = sum(metrics.get(f"time_{stage}_s", 0.0) for stage in AFTER_DISTILLATION)
    if distil <= 0 or rest <= 0:
        return 0
    return max(0, min(AUTO_MAX_VARIANTS, round(distil / rest)))


class QueueVariants:
    """Optuna callback: after the first completed trial of a (T, lambda) in the study, queue ``k - 1`` trials
    with that T and lambda fixed (the sampler draws pruning and quantization), within ``n_trials`` in all;
    with ``k="auto"``, as many as ``auto_variants`` says from that trial's own timings.

    They load the student that trial distilled from the cache instead of distilling again. Decided from the
    study alone (not from whether the cache had the student), so a study draws the same trials whether the
    cache is warm or cold (under ``auto``, up to the timings), and two workers never queue for one
    (T, lambda): the one whose trial has the lower number does. Queued trials (``variant_of``) queue none
    themselves; a resumed study finds its queued trials waiting in the storage and queues none again.
    """

    def __init__(self, k: int | str, n_trials: int, log=None):
        self.k = k
        self.n_trials = n_trials
        self.log = log

    def wanted(self, trial: FrozenTrial) -> int:
        """How many variants of ``trial`` to queue (before the ``n_trials`` bound)."""
        if self.k == AUTO:
            return auto_variants(trial.user_attrs.get("metrics", {}))
        return int(self.k) - 1

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        fixed = {name: trial.params[name] for name in KD_PARAMS if name in trial.params}
        if self.k == 1 or trial.state != TrialState.COMPLETE or VARIANT_OF_ATTR in trial.user_attrs or not fixed:
            return
        trials = study.get_trials(deepcopy=False)
        if any(t.number < trial.number and t.state in (TrialState.COMPLETE, TrialState.RUNNING)
               and all(t.params.get(name) == value for name, value in fixed.items()) for t in trials):
            return  # not the first of its T and lambda: a trial before it distilled that student
        if any(t.user_attrs.get(VARIANT_OF_ATTR) == trial.number for t in trials):
            return  # queued already
        planned = sum(t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING) for t in trials)
        count = max(0, min(self.wanted(trial), self.n_trials - planned))
        for _ in range(count):
            study.enqueue_trial(fixed, user_attrs={VARIANT_OF_ATTR: trial.number}, skip_if_exists=False)
        if count and self.log is not None:
            self.log(f"[{study.study_name}] queued {count} variant(s) of trial {trial.number} "
                     f"(T={fixed.get('temperature')}, lambda={fixed.get('kd_lambda')}) that reuse its student")
