"""One teacher/student pair's Optuna study: its sampler, its trial contexts, its loop and the tracked objective."""

from __future__ import annotations

import os
import shutil
import socket
import time
import zlib
from pathlib import Path
from types import MappingProxyType

import optuna
from optuna.trial import TrialState

from objectives.measure import machine_facts
from objectives.student_cache import student_cache
from objectives.timing import PairedTimer
from objectives.trial import DIRECTIONS, OBJECTIVES, TrialOutcome, objective
from study.core.budgets import BUDGETS_ATTR, Budgets
from study.core.config import StudyConfig
from study.core.devices import device_facts
from objectives.context import TrialContext
from study.reporting.progress import TrialProgress, say
from study.reporting.front import completed
from study.core.teacher import TeacherArtifacts, scratch_tokenizer
from study.reporting.callbacks import TrialTracker, failure_reason, reconcile
from study.orchestration.prepare import Prepared, pair_study_name, quiet_experimental, timing_footing
from study.orchestration.reference import Reference
from study.orchestration.reuse import (DISTILL_SEED_ATTR, VARIANT_OF_ATTR, QueueVariants, distill_seed_rule,
                                      under_recorded_rule)


NSGA2_POPULATION = 10  # small enough that the genetic search starts within an afternoon's trials


TPE_STARTUP_TRIALS = 5  # random trials before TPE models the objectives (Optuna's default: 10)


def search_seed(cfg: StudyConfig) -> int:
    """The sampler's base seed: ``--sampler-seed``, else ``--seed`` (which also draws the split and the teacher)."""
    return cfg.seed if cfg.sampler_seed is None else cfg.sampler_seed


def sampler_seed(cfg: StudyConfig, stored_trials: int, pair: str) -> int:
    """The sampler's seed for the next trial of ``pair`` (its teacher and student): ``search_seed``, the pair and
    the trials stored (see ``started_trials``) hashed together for a lone worker on a file store (reproducible;
    the pairs of one study draw differently, not the same sequence side by side); mixed with the host and
    process otherwise, so that concurrent workers which see the same number of trials draw differently."""
    base = search_seed(cfg)
    if cfg.workers == 1 and cfg.storage.startswith("sqlite"):
        return zlib.crc32(f"{base}:{pair}:{stored_trials}".encode())
    return zlib.crc32(f"{base}:{pair}:{stored_trials}:{socket.gethostname()}:{os.getpid()}".encode())


def pair_key(ctx: TrialContext) -> str:
    """What tells a study's pairs apart in their sampler seeds: the teacher and student names (not the study
    name, so runs under other names at one seed, such as ``benchmarks.samplers --wall-clock``'s arms, draw alike)."""
    return f"{ctx.teacher.name}/{ctx.student.name}"


def started_trials(study: optuna.Study) -> int:
    """Trials stored, less those queued and waiting: it grows with every trial started, also when the trial
    started is a queued one (a variant), so consecutive trials never get one sampler seed and the same draws."""
    return sum(t.state != TrialState.WAITING for t in study.get_trials(deepcopy=False))


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The study's sampler. Budgets reach TPE and NSGA-II as each trial's constraint values (set by the
    objective with ``Trial.set_constraint``, Optuna 5's successor of ``constraints_func``); random ignores them."""
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=NSGA2_POPULATION)
    if name == "tpe":
        # fewer start-up trials than Optuna's default: at ~20 trials per pair, 10 would spend half the budget
        # before TPE models anything
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=TPE_STARTUP_TRIALS)
    return optuna.samplers.RandomSampler(seed=seed)


def pair_contexts(prep: Prepared, teacher: TeacherArtifacts, workdir: Path, ref: Reference,
                  timer: PairedTimer, device: str = "cpu") -> list[TrialContext]:
    """One context per student; ``device``: where this worker distils (study.core.devices.worker_device)."""
    needs_scratch = any(s.from_scratch for s in prep.students)
    tokenizer_dir = scratch_tokenizer(prep.split, prep.cfg.cache_dir) if needs_scratch else None
    facts = MappingProxyType(prep.split.facts(prep.corpus))
    students = student_cache(prep.cfg.cache_dir, prep.cfg.distill_cache_gb)
    return [TrialContext(study_name=pair_study_name(prep.cfg, prep.teacher, student), split=prep.split,
                         teacher=teacher, student=student, scratch_tokenizer_dir=tokenizer_dir, space=prep.space,
                         train=prep.cfg.train, measure=prep.cfg.measure, seed=prep.cfg.seed, workdir=workdir,
                         data_facts=facts, show_progress=not prep.cfg.quiet and prep.cfg.workers == 1,
                         timer=timer, teacher_test_predictions=ref.test_predictions, device=device,
                         student_cache=students)
            for student in prep.students]


def _base_params(ctx: TrialContext, cfg: StudyConfig) -> dict[str, str]:
    return {"teacher": ctx.teacher.name, "student": ctx.student.name, "seed": str(cfg.seed),
            "sampler": cfg.sampler, "sampler_seed": str(search_seed(cfg)), "quick": str(cfg.quick), "search_space": ctx.space.source,
            "threads": str(cfg.measure.threads), "teacher_baseline_kd": str(ctx.teacher.kd_from_baseline),
            "teacher_tfidf_weight": str(ctx.teacher.tfidf_weight),
            **device_facts(ctx.device), **ctx.data_facts}


def counts(study: optuna.Study) -> tuple[int, int]:
    """(completed, running) trials of a study, as stored right now (WAITING ones are ours to run)."""
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state == TrialState.COMPLETE for t in trials)
    busy = sum(t.state == TrialState.RUNNING for t in trials)
    return done, busy


def open_pair_study(prep: Prepared, ctx: TrialContext, reference: dict[str, float], announce: bool = True):
    """Create or load one pair's study and its parent MLflow run; repair what a killed run left."""
    cfg, tracker = prep.cfg, prep.tracker
    study = optuna.create_study(study_name=ctx.study_name, storage=prep.storage, directions=list(DIRECTIONS),
                                load_if_exists=True)
    # Seeded by history: a resumed study does not replay the random draws of its first session.
    study.sampler = make_sampler(cfg.sampler, search_seed(cfg) + started_trials(study))
    stored = study.user_attrs.get(BUDGETS_ATTR, {})  # a study stored before budgets existed ran under none
    if announce and Budgets.from_dict(stored) != cfg.budgets and completed(study):
        say(f"[{ctx.study_name}] budgets changed from ({Budgets.from_dict(stored).describe()}) to "
            f"({cfg.budgets.describe()}): every trial's feasible tag and the pareto tags are recomputed under the "
            "new ones when this session ends (the sampler still sees the constraint values earlier trials ran under)")
    rule = distill_seed_rule(study)  # before anything is recorded: a study without the attr may predate it
    for key, value in {"teacher": ctx.teacher.name, "student": ctx.student.name, "data_sha256": prep.corpus.sha256,
                       "seed": cfg.seed, "sampler": cfg.sampler, "objectives": list(OBJECTIVES),
                       "teacher_identity": prep.teacher_identity,
                       "dropped_schemes": dict(prep.dropped_schemes), "timing_footing": timing_footing(cfg),
                       BUDGETS_ATTR: cfg.budgets.as_dict(), DISTILL_SEED_ATTR: rule}.items():
        study.set_user_attr(key, value)
    with quiet_experimental():
        study.set_metric_names(list(OBJECTIVES))  # named objectives in the Optuna dashboard, not "0", "1", "2"
    experiment_id = tracker.experiment(cfg.study_name)
    base = _base_params(ctx, cfg)
    machine = {f"machine.{k}": v for k, v in machine_facts().items()}
    # every run: where it was timed, whether the teacher was fine-tuned here, the heads, the tokenizers
    models = dict(prep.pair_tags.get(ctx.student.name, {}))
    tags = {"teacher": ctx.teacher.name, "student": ctx.student.name, **machine, **models}
    parent = tracker.study_run(experiment_id, ctx.study_name, base, tags)
    inputs = prep.split.inputs(prep.corpus)
    tracker.log_inputs(parent, inputs)
    if "teacher_latency_ms" not in tracker.run_metrics(parent):  # a resumed study keeps its first reference;
        tracker.log_metrics(parent, reference)  # each trial's run logs the teacher timing it was compared with
    tracker.set_tags(parent, {**machine, **models})
    with quiet_experimental():
        optuna.storages.fail_stale_trials(study)
    for line in reconcile(study, tracker):
        if announce:
            say(f"[{ctx.study_name}] repaired: {line}")
    return study, TrialTracker(tracker, experiment_id, parent, ctx.study_name, base, tags, log=say,
                               bundle_dir=ctx.trial_dir, keep_models=cfg.keep_models, inputs=inputs)


def work(study: optuna.Study, ctx: TrialContext, cfg: StudyConfig, trial_tracker: TrialTracker,
         reference: dict[str, float]) -> str:
    """Start trials while completed + in-flight trials are short of ``n_trials``; wait on others' trials."""
    ctx, old_rule = under_recorded_rule(study, ctx)
    if old_rule:
        say(old_rule)
    done, busy = counts(study)
    say(f"\n[{ctx.study_name}] {done} completed trial(s) stored; running until {cfg.n_trials} "
        f"(sampler {cfg.sampler}, storage {cfg.storage})")
    start = time.monotonic()
    objective_fn = tracked_objective(ctx, trial_tracker, reference, cfg.budgets)
    progress = TrialProgress(ctx.study_name, cfg.n_trials, done, quiet=cfg.quiet)
    shared = ctx.student_cache is not None and ctx.distill_seed_rule == "study_seed"  # else variants distil again
    variants = QueueVariants(cfg.variants_per_distillation if shared else 1, cfg.n_trials,
                             log=None if cfg.quiet else say)
    try:
        return _work_loop(study, cfg, ctx, objective_fn, [trial_tracker, progress, variants], progress, start)
    finally:
        progress.close()


def _work_loop(study, cfg, ctx, objective_fn, callbacks, progress, start) -> str:
    failures_in_row = 0
    max_failures = cfg.max_failures or cfg.n_trials
    while True:
        with quiet_experimental():
            optuna.storages.fail_stale_trials(study)
        done, busy = counts(study)
        if done >= cfg.n_trials:
            return "FINISHED"
        if cfg.timeout is not None and time.monotonic() - start >= cfg.timeout:
            say(f"[{ctx.study_name}] --timeout of {cfg.timeout:.0f}s reached with {done}/{cfg.n_trials} trials")
            return "FINISHED"
        if failures_in_row >= max_failures:
            say(f"[{ctx.study_name}] stopping: {failures_in_row} trials in a row failed")
            return "FAILED"
        if done + busy >= cfg.n_trials and busy:
            time.sleep(WAIT_FOR_OTHERS_S)  # other workers' trials may still complete (or go stale)
            continue
        # Seeded per worker and per trial: workers that ask at the same moment never draw alike, and a
        # resumed study does not replay its first draws.
        study.sampler = make_sampler(cfg.sampler, sampler_seed(cfg, started_trials(study), pair_key(ctx)))
        try:
            study.optimize(objective_fn, n_trials=1, catch=(Exception,), callbacks=callbacks)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as exc:
            if not finished_elsewhere(exc):
                raise
            # another worker failed this trial as stale (missed heartbeats) while it still ran here: the
            # stale handler has queued it again, so this result is dropped and the worker goes on
            say(f"[{ctx.study_name}] a trial of this worker was marked stale by another worker and re-queued: {exc}")
            failures_in_row += 1
            continue
        failures_in_row = 0 if progress.last_state == TrialState.COMPLETE else failures_in_row + 1


WAIT_FOR_OTHERS_S = 5.0


def finished_elsewhere(exc: Exception) -> bool:
    """Whether Optuna refused to record a trial because another worker had already finished it: it raises
    UpdateFinishedTrialError (setting an attribute) or ValueError("Cannot tell a FAIL trial.") (its result)."""
    return isinstance(exc, optuna.exceptions.UpdateFinishedTrialError) or str(exc).startswith("Cannot tell a ")


def tracked_objective(ctx: TrialContext, trial_tracker: TrialTracker, reference: dict[str, float],
                      budgets: Budgets = Budgets()):
    """The Optuna objective: open the trial's MLflow run, run the trial, keep its record on the trial."""

    def run(trial: optuna.Trial) -> list[float]:
        for key, value in (("study", ctx.study_name), ("teacher", ctx.teacher.name), ("student", ctx.student.name),
                           ("worker", f"{socket.gethostname()}:{os.getpid()}")):
            trial.set_user_attr(key, value)
        trial_tracker.start(trial)
        try:
            outcome: TrialOutcome = objective(trial, ctx)
        except KeyboardInterrupt:
            trial_tracker.killed(trial, "interrupted by the user")
            raise
        except Exception as exc:  # recorded by the callback as a FAILED run; the study goes on
            trial.set_user_attr("failure_reason", failure_reason(exc))
            raise
        except BaseException:
            shutil.rmtree(ctx.trial_dir(trial.number), ignore_errors=True)
            raise
        metrics = dict(outcome.metrics)
        metrics["compression_vs_teacher"] = reference["teacher_size_mb"] / metrics["size_mb"]
        metrics["macro_f1_validation_delta_vs_teacher"] = (metrics["macro_f1_validation"]
                                                           - reference["teacher_validation_macro_f1"])
        metrics["latency_e2e_vs_baseline"] = metrics["latency_e2e_ms"] / reference["baseline_latency_e2e_ms"]
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("resolved_params", outcome.params)
        source = trial.user_attrs.get(VARIANT_OF_ATTR)  # a trial queued with the T and lambda of this one
        variant = {} if source is None else {VARIANT_OF_ATTR: str(source)}
        trial.set_user_attr("tags", {**outcome.tags, **variant, **budgets.tags(metrics)})
        for name, amount in budgets.constraints(metrics).items():  # TPE and NSGA-II steer by these (<= 0: met)
            trial.set_constraint(name, amount)
        trial_tracker.log_bundle(trial, outcome.artifact_dir)
        return list(outcome.values)

    return run
