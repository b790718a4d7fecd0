"""Run the pareto objective: validate inputs, prepare the teacher, run one Optuna study per pair."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
import warnings
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
import optuna
from optuna.trial import TrialState

from objectives.baseline import run_baseline
from objectives.measure import machine_facts
from objectives.prune import nonzero_parameters
from objectives.measure import bootstrap_macro_f1
from objectives.timing import PairedTimer
from objectives.trial import (DIRECTIONS, OBJECTIVES, TrialOutcome, check_space, export_bundle, objective,
                              serve_and_measure, servable_space)
from search_spaces import SearchSpace, load_space
from study.core.budgets import BUDGETS_ATTR, PARETO_AMONG_TAG, Budgets
from study.core.config import StudyConfig
from objectives.context import TrialContext
from study.core.data import Corpus, DataSplit, limit_part, load_corpus, split_corpus
from study.core.demo import demo_corpus
from study.core.errors import UserError, space_errors
from study.reporting.progress import TrialProgress, say
from study.reporting.report import publish
from study.reporting.stores import check_reachable
from study.reporting.front import completed, front_frame, pareto_figure, pareto_trials, printable
from study.core.models import ModelSpec, check_loadable, check_student_fits, resolve_model
from study.core.teacher import TeacherArtifacts, prepare_teacher, scratch_tokenizer, teacher_identity
from study.core.training import encode, macro_f1, set_compute_threads, torch_logits
from study.reporting.callbacks import TrialTracker, failure_reason, prune_dominated_models, reconcile, stale_trial_handler
from study.reporting.tracking import PARETO_TAG, RUN_ID_ATTR, Tracker, ensure_sqlite_parent

NSGA2_POPULATION = 10  # small enough that the genetic search starts within an afternoon's trials
TPE_STARTUP_TRIALS = 5  # random trials before TPE models the objectives (Optuna's default: 10)


@dataclass(frozen=True)
class Prepared:
    """Inputs validated before anything is written: nothing below creates a study on bad input."""

    cfg: StudyConfig
    corpus: Corpus
    split: DataSplit
    teacher: ModelSpec
    students: tuple[ModelSpec, ...]
    space: SearchSpace
    storage: optuna.storages.BaseStorage
    tracker: Tracker
    teacher_identity: str  # what the students learn from (see study.core.teacher.teacher_identity)
    dropped_schemes: MappingProxyType  # quantization schemes this machine cannot serve -> why (not searched)


def pair_study_name(cfg: StudyConfig, teacher: ModelSpec, student: ModelSpec) -> str:
    return f"{cfg.study_name}.{teacher.name}.{student.name}"


def resolve_data(cfg: StudyConfig, quiet: bool = False) -> Corpus:
    path = cfg.data
    if path is None and quiet:
        return demo_corpus()
    if path is None:
        say("=" * 78)
        say("NOTE: no --data given (and STUDY_DATA is unset): running on the small built-in SYNTHETIC demo")
        say("      corpus. Its numbers say nothing about real data. To run on UBMEC instead:")
        say("      python -m study.run --objective pareto --data ../shared/data/ubmec/UBMEC.xlsx")
        say("=" * 78)
        return demo_corpus()
    return load_corpus(Path(path), text_col=cfg.text_col, label_col=cfg.label_col)


def open_storage(url: str, tracker: Tracker, heartbeat_s: int) -> optuna.storages.BaseStorage:
    """Optuna RDB storage with heartbeats: a trial whose worker died is failed after 3 missed beats."""
    ensure_sqlite_parent(url)
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        with _quiet_experimental():
            return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat_s,
                                              grace_period=3 * heartbeat_s,
                                              heartbeat_stale_trial_callback=stale_trial_handler(tracker))
    except Exception as exc:
        raise UserError(f"Optuna storage {url!r} is not usable: {exc}") from None


def prepare(cfg: StudyConfig, quiet: bool = False) -> Prepared:
    """Check every input (data, models, space, stores) so that bad input fails before any write."""
    teacher = resolve_model(cfg.teacher)
    students = tuple(resolve_model(s) for s in cfg.students)
    with space_errors():
        space = load_space(cfg.space)
    check_space(space)
    space, dropped = servable_space(space)
    corpus = resolve_data(cfg, quiet)
    split = split_corpus(corpus, seed=cfg.seed, test_size=cfg.test_size, validation_size=cfg.validation_size)
    split = replace(split, train=limit_part(split.train, cfg.train.max_train_examples, cfg.seed))
    for spec in (teacher, *students):
        check_loadable(spec)
    for student in students:
        check_student_fits(teacher, student)
    check_reachable(cfg.storage, "Optuna storage")
    check_reachable(cfg.tracking_uri, "MLflow tracking URI")
    tracker = Tracker(cfg.tracking_uri)
    tracker.check()
    storage = open_storage(cfg.storage, tracker, cfg.heartbeat_s)
    identity = teacher_identity(teacher, split, cfg.train, cfg.seed)
    for student in students:
        name = pair_study_name(cfg, teacher, student)
        try:
            existing = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            continue
        recorded = existing.user_attrs.get("data_sha256")
        if recorded and recorded != corpus.sha256:
            raise UserError(f"study {name!r} in {cfg.storage} was run on other data (sha256 {recorded[:12]}…, "
                            f"now {corpus.sha256[:12]}…); use another --study-name")
        if (tuple(d.name.lower() for d in existing.directions) != DIRECTIONS
                or existing.user_attrs.get("objectives", list(OBJECTIVES)) != list(OBJECTIVES)):
            raise UserError(f"study {name!r} in {cfg.storage} has other objectives; use another --study-name")
        sampler = existing.user_attrs.get("sampler")
        if sampler and sampler != cfg.sampler:
            raise UserError(f"study {name!r} was run with --sampler {sampler}; resume it with the same sampler "
                            f"(got --sampler {cfg.sampler}) or use another --study-name")
        space, dropped = keep_stored_space(name, existing, space, dropped)
        check_timing_footing(name, existing, timing_footing(cfg))
        recorded = existing.user_attrs.get("teacher_identity")
        if recorded and recorded != identity:
            raise UserError(f"study {name!r} was run with another teacher ({recorded}; now {identity}): its "
                            "trials learnt from a teacher trained or blended differently (--quick, "
                            "--teacher-baseline-kd, --teacher-tfidf-weight or other training settings); resume "
                            "it with the same settings or use another --study-name")
    return Prepared(cfg, corpus, split, teacher, students, space, storage, tracker, identity,
                    MappingProxyType(dropped))


def timing_footing(cfg: StudyConfig) -> dict[str, str]:
    """What an absolute latency depends on besides the model: a study's latencies compare only on one footing."""
    return {"cpu": machine_facts()["cpu"], "threads": str(cfg.measure.threads),
            "fixed_length": str(cfg.measure.fixed_length)}


def check_timing_footing(name: str, existing: optuna.Study, footing: dict[str, str]) -> None:
    """The latency objective is absolute (ms per text at batch 1), so a study resumes only on the CPU model,
    --threads and --fixed-length it was started with (otherwise its trials' latencies would not compare)."""
    recorded = existing.user_attrs.get("timing_footing")
    if not recorded:
        return
    flags = {"cpu": "CPU model", "threads": "--threads", "fixed_length": "--fixed-length"}
    changed = [f"{flags[k]} {recorded[k]!r} (now {footing[k]!r})" for k in flags if recorded.get(k) != footing[k]]
    if changed:
        raise UserError(f"study {name!r} was timed with {'; '.join(changed)}: its latency objective is absolute, so "
                        "latencies taken otherwise would not compare; resume it as it was started or use another "
                        "--study-name")


def keep_stored_space(name: str, existing: optuna.Study, space: SearchSpace,
                      dropped: dict[str, str]) -> tuple[SearchSpace, dict[str, str]]:
    """A resumed study keeps the quantization schemes it was started with (Optuna's categorical distributions
    cannot change): schemes it dropped stay dropped here, and a scheme it searches that this machine cannot
    serve refuses the resume."""
    recorded = existing.user_attrs.get("dropped_schemes")
    if recorded is None:
        recorded = {} if existing.trials else dict(dropped)
    cannot = sorted(set(dropped) - set(recorded))
    if cannot:
        raise UserError(f"study {name!r} searches quant_scheme {', '.join(cannot)}, which this machine cannot serve "
                        f"({dropped[cannot[0]]}); resume it on a machine that can, or use another --study-name")
    extra = {k: v for k, v in recorded.items() if k not in dropped}
    if extra:
        with space_errors():
            space = space.without_choices("quant_scheme", set(extra))
        dropped = {**dropped, **extra}
    return space, dropped


def sampler_seed(cfg: StudyConfig, stored_trials: int) -> int:
    """``seed + trials stored`` for a lone worker on a file store (reproducible); mixed with the host and
    process otherwise, so that concurrent workers which see the same number of trials draw differently."""
    if cfg.workers == 1 and cfg.storage.startswith("sqlite"):
        return cfg.seed + stored_trials
    return zlib.crc32(f"{cfg.seed}:{stored_trials}:{socket.gethostname()}:{os.getpid()}".encode())


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


@dataclass(frozen=True)
class Reference:
    """The teacher as every trial is compared with it: its metrics, its test predictions, its bundles."""

    metrics: dict[str, float]
    test_predictions: np.ndarray  # the teacher's (with its TF-IDF member, if it has one) on the test texts
    torch_bundle: Path  # its fp32 network served by PyTorch
    onnx_bundle: Path  # ... and by ONNX Runtime

    def timer(self, split: DataSplit, cfg: StudyConfig) -> PairedTimer:
        return PairedTimer(self.torch_bundle, self.onnx_bundle, split.test.texts, cfg.measure)


def measure_reference(teacher: TeacherArtifacts, split: DataSplit, cfg: StudyConfig, workdir: Path,
                      ) -> tuple[Reference, PairedTimer]:
    """The fp32 teacher measured with the trials' protocol (in the timing process, against itself).

    Speed and size are its network's (fp32; PyTorch, and ONNX Runtime as ``teacher_onnx_latency_ms``): the
    one model that trials compress. Macro-F1 and accuracy are the teacher's as a whole (with its TF-IDF
    member, if it has one: what students learn from); ``teacher_network_*`` are the network's alone.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(teacher.tokenizer_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(teacher.model_dir)).eval()
    onnx_dir, torch_dir = workdir / "teacher-onnx", workdir / "teacher-torch"
    export_bundle(model, tokenizer, "onnx_fp32", onnx_dir, cfg.train.max_length, split.label_names)
    timer = PairedTimer(torch_dir, onnx_dir, split.test.texts, cfg.measure)
    served = serve_and_measure(model, tokenizer, "none", torch_dir, split, cfg.train.max_length, cfg.measure,
                               timer=timer)
    timing = served.timing
    metrics = {f"teacher_{k}": v for k, v in served.metrics().items()
               if not k.startswith(("speedup_", "teacher_", "timing_"))}
    metrics["teacher_onnx_latency_ms"] = timing.teacher_onnx_latency_ms
    metrics["teacher_self_speedup"] = timing.speedup  # the teacher against itself: 1 within the timing's noise
    metrics["teacher_latency_vs_teacher"] = 1.0  # by definition: the reference of the latency objective
    metrics["teacher_network_macro_f1"] = served.quality.macro_f1
    metrics["teacher_network_accuracy"] = served.quality.accuracy
    metrics["teacher_tfidf_weight"] = teacher.tfidf_weight
    predictions = served.quality.predictions
    if teacher.tfidf_weight:
        predictions = teacher.predictions(split.test.texts, cfg.train.max_length)
        metrics["teacher_macro_f1"] = macro_f1(split.test.labels, predictions)
        metrics["teacher_accuracy"] = float(np.mean(predictions == split.test.labels))
    interval, _ = bootstrap_macro_f1(split.test.labels, predictions, seed=cfg.seed)
    metrics["teacher_macro_f1_ci_low"], metrics["teacher_macro_f1_ci_high"] = interval.low, interval.high
    metrics["teacher_nonzero_params"] = float(nonzero_parameters(model))
    metrics["teacher_validation_macro_f1"] = teacher.validation_macro_f1
    metrics["teacher_macro_f1_validation"] = teacher.validation_macro_f1  # as the trials' objective is named
    metrics["teacher_network_validation_macro_f1"] = teacher.network_f1
    return Reference(metrics, predictions, torch_dir, onnx_dir), timer


def run_pareto(cfg: StudyConfig) -> dict[str, list]:
    """The pareto objective end to end; returns each pair study's Pareto-optimal trials.

    With ``cfg.workers`` > 1, that many processes share each pair study (this one included); the
    teacher is trained once, before they start, and the fronts are logged once all have stopped.
    """
    prep = prepare(cfg)
    say(f"[data] {prep.corpus.source}: {prep.corpus.rows_read} rows read, {prep.corpus.duplicates_dropped} duplicates "
        f"and {prep.corpus.conflicting_dropped} rows of texts with conflicting labels dropped (after normalisation), "
        f"{len(prep.corpus.texts)} kept; split train {len(prep.split.train)} / validation "
        f"{len(prep.split.validation)} / test {len(prep.split.test)} (seed {cfg.seed})")
    for scheme, why in prep.dropped_schemes.items():
        say(f"[space] quant_scheme {scheme} dropped from the search space: {why}")
    teacher = prepare_teacher(prep.teacher, prep.split, cfg.train, cfg.cache_dir, cfg.seed, log=say,
                              progress=not cfg.quiet)
    workdir = Path(tempfile.mkdtemp(prefix="study-trials-"))
    fronts = {}
    timer = None
    try:
        ref, timer = measure_reference(teacher, prep.split, cfg, workdir)
        reference = ref.metrics
        member = (f" with its TF-IDF member (weight {teacher.tfidf_weight:g}; network alone "
                  f"{reference['teacher_network_macro_f1']:.4f})" if teacher.tfidf_weight else "")
        say(f"[teacher] {prep.teacher.name}: test macro-F1 {reference['teacher_macro_f1']:.4f} (95% CI "
            f"{reference['teacher_macro_f1_ci_low']:.4f}-{reference['teacher_macro_f1_ci_high']:.4f}){member}; its "
            f"network fp32 ({cfg.measure.threads} thread(s), batch 1) {reference['teacher_latency_ms']:.2f} ms/example "
            f"in PyTorch, {reference['teacher_onnx_latency_ms']:.2f} ms in ONNX Runtime, "
            f"{reference['teacher_latency_e2e_ms']:.2f} ms from raw text; {reference['teacher_size_mb']:.2f} MB")
        baseline = run_baseline(prep.split, cfg.measure, cfg.seed)
        reference.update(baseline.as_metrics())
        # from raw text, both: the baseline's latency includes its feature extraction (not paired: in this process)
        reference["baseline_latency_vs_teacher"] = baseline.speed.latency_ms / reference["teacher_latency_e2e_ms"]
        say(f"[baseline] TF-IDF + logistic regression (scikit-learn): test macro-F1 {baseline.macro_f1:.4f}, "
            f"{baseline.speed.latency_ms:.2f} ms/example at batch 1 from raw text, {baseline.size_bytes / 1e6:.2f} MB")
        contexts = pair_contexts(prep, teacher, workdir, ref, timer)
        opened = [open_pair_study(prep, ctx, reference) for ctx in contexts]
        helpers = start_helpers(cfg, ref) if cfg.workers > 1 else []
        statuses = {}
        try:
            if helpers:
                set_compute_threads(max(1, (os.cpu_count() or 1) // cfg.workers))
            for ctx, (study, trial_tracker) in zip(contexts, opened):
                statuses[ctx.study_name] = work(study, ctx, cfg, trial_tracker, reference)
            for proc in helpers:
                proc.join()
        except KeyboardInterrupt:
            statuses = {ctx.study_name: "KILLED" for ctx in contexts}
            raise
        finally:
            for proc in helpers:
                proc.join(timeout=60)
            for ctx, (study, trial_tracker) in zip(contexts, opened):
                finish_study(study, ctx.study_name, prep.tracker, trial_tracker.parent_run_id,
                             statuses.get(ctx.study_name, "FAILED"), cfg.keep_models, cfg.budgets)
        publish(cfg.study_name, [study for study, _ in opened], prep.tracker, log=say)
        all_trials = []
        for ctx, (study, _) in zip(contexts, opened):
            fronts[ctx.study_name] = pareto_trials(completed(study), budgets=cfg.budgets)
            all_trials.extend(completed(study))
        if len(contexts) > 1:
            merged = pareto_trials(all_trials, budgets=cfg.budgets)
            if merged or not all_trials or not cfg.budgets:
                among = f", among those meeting the budgets ({cfg.budgets.describe()})" if cfg.budgets else ""
                say(f"\nMerged Pareto front across {len(contexts)} teacher/student pairs "
                    f"({len(merged)} of {len(all_trials)} completed trials{among}):")
                say(printable(front_frame(merged)))
            else:
                say(f"\n{cfg.budgets.nothing_meets(all_trials, cfg.study_name)}")
    finally:
        if timer is not None:
            timer.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return fronts


def pair_contexts(prep: Prepared, teacher: TeacherArtifacts, workdir: Path, ref: Reference,
                  timer: PairedTimer) -> list[TrialContext]:
    needs_scratch = any(s.from_scratch for s in prep.students)
    tokenizer_dir = scratch_tokenizer(prep.split, prep.cfg.cache_dir) if needs_scratch else None
    facts = MappingProxyType(prep.split.facts(prep.corpus))
    return [TrialContext(study_name=pair_study_name(prep.cfg, prep.teacher, student), split=prep.split,
                         teacher=teacher, student=student, scratch_tokenizer_dir=tokenizer_dir, space=prep.space,
                         train=prep.cfg.train, measure=prep.cfg.measure, seed=prep.cfg.seed, workdir=workdir,
                         data_facts=facts, show_progress=not prep.cfg.quiet and prep.cfg.workers == 1,
                         timer=timer, teacher_test_predictions=ref.test_predictions)
            for student in prep.students]


def start_helpers(cfg: StudyConfig, reference: Reference) -> list:
    """Start ``cfg.workers - 1`` helper processes on the same studies (spawned: no shared state)."""
    import multiprocessing

    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=helper_main, args=(cfg, reference, i + 1), name=f"study-worker-{i + 1}")
             for i in range(cfg.workers - 1)]
    for proc in procs:
        proc.start()
    return procs


def helper_main(cfg: StudyConfig, reference: Reference, index: int) -> None:
    """A helper worker: rebuild the context from the same config (teacher from cache), run trials."""
    from study.core.libraries import quiet_libraries

    quiet_libraries()
    set_compute_threads(max(1, (os.cpu_count() or 1) // cfg.workers))
    prep = prepare(cfg, quiet=True)
    teacher = prepare_teacher(prep.teacher, prep.split, cfg.train, cfg.cache_dir, cfg.seed, log=lambda *_: None)
    workdir = Path(tempfile.mkdtemp(prefix=f"study-trials-w{index}-"))
    timer = reference.timer(prep.split, cfg)  # its own timing process, on the main worker's teacher bundles
    try:
        for ctx in pair_contexts(prep, teacher, workdir, reference, timer):
            study, trial_tracker = open_pair_study(prep, ctx, reference.metrics, announce=False)
            work(study, ctx, cfg, trial_tracker, reference.metrics)
    except KeyboardInterrupt:
        pass
    finally:
        timer.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _base_params(ctx: TrialContext, cfg: StudyConfig) -> dict[str, str]:
    return {"teacher": ctx.teacher.name, "student": ctx.student.name, "seed": str(cfg.seed),
            "sampler": cfg.sampler, "quick": str(cfg.quick), "search_space": ctx.space.source,
            "threads": str(cfg.measure.threads), "teacher_baseline_kd": str(ctx.teacher.kd_from_baseline),
            "teacher_tfidf_weight": str(ctx.teacher.tfidf_weight),
            **ctx.data_facts}


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
    study.sampler = make_sampler(cfg.sampler, cfg.seed + len(study.trials))
    stored = study.user_attrs.get(BUDGETS_ATTR)
    if announce and stored is not None and Budgets.from_dict(stored) != cfg.budgets and completed(study):
        say(f"[{ctx.study_name}] budgets changed from ({Budgets.from_dict(stored).describe()}) to "
            f"({cfg.budgets.describe()}): every trial's feasible tag and the pareto tags are recomputed under the "
            "new ones when this session ends (the sampler still sees the constraint values earlier trials ran under)")
    for key, value in {"teacher": ctx.teacher.name, "student": ctx.student.name, "data_sha256": prep.corpus.sha256,
                       "seed": cfg.seed, "sampler": cfg.sampler, "objectives": list(OBJECTIVES),
                       "teacher_identity": prep.teacher_identity,
                       "dropped_schemes": dict(prep.dropped_schemes), "timing_footing": timing_footing(cfg),
                       BUDGETS_ATTR: cfg.budgets.as_dict()}.items():
        study.set_user_attr(key, value)
    with _quiet_experimental():
        study.set_metric_names(list(OBJECTIVES))  # named objectives in the Optuna dashboard, not "0", "1", "2"
    experiment_id = tracker.experiment(cfg.study_name)
    base = _base_params(ctx, cfg)
    machine = {f"machine.{k}": v for k, v in machine_facts().items()}
    tags = {"teacher": ctx.teacher.name, "student": ctx.student.name, **machine}  # every run: where it was timed
    parent = tracker.study_run(experiment_id, ctx.study_name, base, tags)
    if "teacher_latency_ms" not in tracker.run_metrics(parent):  # a resumed study keeps its first reference;
        tracker.log_metrics(parent, reference)  # each trial's run logs the teacher timing it was compared with
    tracker.set_tags(parent, machine)
    with _quiet_experimental():
        optuna.storages.fail_stale_trials(study)
    for line in reconcile(study, tracker):
        if announce:
            say(f"[{ctx.study_name}] repaired: {line}")
    return study, TrialTracker(tracker, experiment_id, parent, ctx.study_name, base, tags, log=say,
                               bundle_dir=ctx.trial_dir, keep_models=cfg.keep_models)


def work(study: optuna.Study, ctx: TrialContext, cfg: StudyConfig, trial_tracker: TrialTracker,
         reference: dict[str, float]) -> str:
    """Start trials while completed + in-flight trials are short of ``n_trials``; wait on others' trials."""
    done, busy = counts(study)
    say(f"\n[{ctx.study_name}] {done} completed trial(s) stored; running until {cfg.n_trials} "
        f"(sampler {cfg.sampler}, storage {cfg.storage})")
    start = time.monotonic()
    objective_fn = tracked_objective(ctx, trial_tracker, reference, cfg.budgets)
    progress = TrialProgress(ctx.study_name, cfg.n_trials, done, quiet=cfg.quiet)
    try:
        return _work_loop(study, cfg, ctx, objective_fn, trial_tracker, progress, start)
    finally:
        progress.close()


def _work_loop(study, cfg, ctx, objective_fn, trial_tracker, progress, start) -> str:
    failures_in_row = 0
    max_failures = cfg.max_failures or cfg.n_trials
    while True:
        with _quiet_experimental():
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
        study.sampler = make_sampler(cfg.sampler, sampler_seed(cfg, len(study.trials)))
        try:
            study.optimize(objective_fn, n_trials=1, catch=(Exception,), callbacks=[trial_tracker, progress])
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
        trial.set_user_attr("tags", {**outcome.tags, **budgets.tags(metrics)})
        for name, amount in budgets.constraints(metrics).items():  # TPE and NSGA-II steer by these (<= 0: met)
            trial.set_constraint(name, amount)
        trial_tracker.log_bundle(trial, outcome.artifact_dir)
        return list(outcome.values)

    return run


class _quiet_experimental(warnings.catch_warnings):
    def __enter__(self):
        out = super().__enter__()
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return out


def finish_study(study: optuna.Study, study_name: str, tracker: Tracker, parent: str, status: str,
                 keep_models: str = "pareto", budgets: Budgets = Budgets()) -> list:
    """Tag every completed trial's run feasible and pareto (the front is among the trials meeting ``budgets``,
    or among all without any), log the front's table and plot, and (with ``keep_models="pareto"``) delete the
    model bundles of trials on neither that front nor the unconstrained one. Returns the front."""
    trials = completed(study)
    front = pareto_trials(trials, budgets=budgets)
    on_front = {t.number for t in front}
    for t in trials:
        run_id = t.user_attrs.get(RUN_ID_ATTR)
        if run_id:  # recomputed each session: a study resumed under other budgets is re-tagged
            tracker.set_tags(run_id, {PARETO_TAG: "true" if t.number in on_front else "false",
                                      **budgets.tags(t.user_attrs.get("metrics", {}))})
    tracker.set_tags(parent, {PARETO_AMONG_TAG: "feasible" if budgets else "all", BUDGETS_ATTR: budgets.as_json()})
    if keep_models == "pareto":  # a dominated trial stays dominated; other budgets may pick another front
        kept = on_front | {t.number for t in pareto_trials(trials)}
        prune_dominated_models(tracker, trials, kept)
    if trials:
        feasible = sum(budgets.feasible(t) for t in trials)
        tracker.log_metrics(parent, {"completed_trials": len(trials), "pareto_trials": len(front),
                                     "feasible_trials": feasible})
        if budgets and not front:
            say(f"\n[{study_name}] {budgets.nothing_meets(trials, study_name)}")
        else:
            frame = front_frame(front)
            with tempfile.TemporaryDirectory() as tmp:
                csv = Path(tmp) / "pareto_front.csv"
                frame.to_csv(csv, index=False)
                tracker.log_artifact(parent, csv)
                html = Path(tmp) / "pareto_front.html"
                pareto_figure(study).write_html(str(html), include_plotlyjs=True)
                tracker.log_artifact(parent, html)
            among = (f"among the {feasible} trials meeting the budgets ({budgets.describe()})" if budgets
                     else "among all trials")
            say(f"\nPareto front of {study_name} ({len(front)} of {len(trials)} completed trials, {among}; chosen on "
                f"validation macro-F1, latency_vs_teacher (batch 1, paired with the fp32 teacher in one process) and "
                f"size; macro_f1 is the test score with its 95% interval):")
            say(printable(frame))
    tracker.end_study(parent, status)
    return front


def run_report(cfg: StudyConfig, out: Path | None, reference: Path | None = None) -> list[Path]:
    """The report objective: regenerate every figure of study ``cfg.study_name`` from its stores (and, with
    ``reference``, the front's best points next to that table's)."""
    from study.reporting.front import pair_studies

    if reference is not None and not reference.exists():
        raise UserError(f"--reference {reference} does not exist")
    check_reachable(cfg.tracking_uri, "MLflow tracking URI")
    names = pair_studies(cfg.storage, cfg.study_name)
    tracker = Tracker(cfg.tracking_uri)
    tracker.check()
    studies = [optuna.load_study(study_name=n, storage=cfg.storage) for n in names]
    return publish(cfg.study_name, studies, tracker, out, log=say, reference=reference)
