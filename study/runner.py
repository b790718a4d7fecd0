"""Run the pareto objective: validate inputs, prepare the teacher, run one Optuna study per pair."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

import optuna
from optuna.trial import TrialState

from objectives.measure import machine_facts
from objectives.prune import nonzero_parameters
from objectives.trial import DIRECTIONS, OBJECTIVES, TrialOutcome, check_space, objective, serve_and_measure
from search_spaces import SearchSpace, load_space
from study.config import StudyConfig
from study.context import TrialContext
from study.data import Corpus, DataSplit, limit_part, load_corpus, split_corpus
from study.demo import demo_corpus
from study.errors import UserError
from study.front import completed, front_frame, pareto_figure, pareto_trials, printable
from study.models import ModelSpec, check_loadable, resolve_model
from study.teacher import TeacherArtifacts, prepare_teacher, scratch_tokenizer
from study.tracking import PARETO_TAG, RUN_ID_ATTR, Tracker, ensure_sqlite_parent

NSGA2_POPULATION = 10  # small enough that the genetic search starts within an afternoon's trials


def say(*parts: object) -> None:
    print(*parts, flush=True)


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


def pair_study_name(cfg: StudyConfig, teacher: ModelSpec, student: ModelSpec) -> str:
    return f"{cfg.study_name}.{teacher.name}.{student.name}"


def resolve_data(cfg: StudyConfig) -> Corpus:
    path = cfg.data or (Path(os.environ["STUDY_DATA"]) if os.environ.get("STUDY_DATA") else None)
    if path is None:
        say("=" * 78)
        say("NOTE: no --data given (and STUDY_DATA is unset): running on the small built-in SYNTHETIC demo")
        say("      corpus. Its numbers say nothing about real data. To run on UBMEC instead:")
        say("      python -m study.run --objective pareto --data ../shared/data/ubmec/UBMEC.xlsx")
        say("=" * 78)
        return demo_corpus()
    return load_corpus(Path(path), text_col=cfg.text_col, label_col=cfg.label_col)


def open_storage(url: str) -> optuna.storages.BaseStorage:
    ensure_sqlite_parent(url)
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:
        raise UserError(f"Optuna storage {url!r} is not usable: {exc}") from None


def prepare(cfg: StudyConfig) -> Prepared:
    """Check every input (data, models, space, stores) so that bad input fails before any write."""
    teacher = resolve_model(cfg.teacher)
    students = tuple(resolve_model(s) for s in cfg.students)
    space = load_space(cfg.space)
    check_space(space)
    corpus = resolve_data(cfg)
    split = split_corpus(corpus, seed=cfg.seed, test_size=cfg.test_size, validation_size=cfg.validation_size)
    split = replace(split, train=limit_part(split.train, cfg.train.max_train_examples, cfg.seed))
    for spec in (teacher, *students):
        check_loadable(spec)
    tracker = Tracker(cfg.tracking_uri)
    tracker.check()
    storage = open_storage(cfg.storage)
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
        if tuple(d.name.lower() for d in existing.directions) != DIRECTIONS:
            raise UserError(f"study {name!r} in {cfg.storage} has other objectives; use another --study-name")
    return Prepared(cfg, corpus, split, teacher, students, space, storage, tracker)


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=NSGA2_POPULATION)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    return optuna.samplers.RandomSampler(seed=seed)


def measure_reference(teacher: TeacherArtifacts, split: DataSplit, cfg: StudyConfig, workdir: Path) -> dict[str, float]:
    """The fp32 teacher measured with the trials' protocol, in this process (for honest ratios)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(teacher.tokenizer_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(teacher.model_dir)).eval()
    served = serve_and_measure(model, tokenizer, "none", workdir / "teacher-reference", split, cfg.train.max_length,
                               cfg.measure)
    return {"teacher_macro_f1": served.quality.macro_f1, "teacher_accuracy": served.quality.accuracy,
            "teacher_latency_ms": served.speed.latency_ms, "teacher_throughput_per_s": served.speed.throughput_per_s,
            "teacher_size_mb": served.servable.size_bytes / 1e6,
            "teacher_nonzero_params": float(nonzero_parameters(model)),
            "teacher_validation_macro_f1": teacher.validation_macro_f1}


def run_pareto(cfg: StudyConfig) -> dict[str, list]:
    """The pareto objective end to end; returns each pair study's Pareto-optimal trials."""
    prep = prepare(cfg)
    say(f"[data] {prep.corpus.source}: {prep.corpus.rows_read} rows read, {prep.corpus.duplicates_dropped} exact "
        f"duplicates dropped, {len(prep.corpus.texts)} kept; split train {len(prep.split.train)} / validation "
        f"{len(prep.split.validation)} / test {len(prep.split.test)} (seed {cfg.seed})")
    teacher = prepare_teacher(prep.teacher, prep.split, cfg.train, cfg.cache_dir, cfg.seed, log=say)
    needs_scratch = any(s.from_scratch for s in prep.students)
    tokenizer_dir = scratch_tokenizer(prep.split, cfg.cache_dir) if needs_scratch else None
    workdir = Path(tempfile.mkdtemp(prefix="study-trials-"))
    facts = prep.split.facts(prep.corpus)
    fronts = {}
    try:
        reference = measure_reference(teacher, prep.split, cfg, workdir)
        say(f"[teacher] {prep.teacher.name} fp32 (PyTorch, {cfg.measure.threads} thread(s)): test macro-F1 "
            f"{reference['teacher_macro_f1']:.4f}, {reference['teacher_latency_ms']:.2f} ms/example at batch 1, "
            f"{reference['teacher_size_mb']:.2f} MB")
        all_trials = []
        for student in prep.students:
            ctx = TrialContext(study_name=pair_study_name(cfg, prep.teacher, student), split=prep.split,
                               teacher=teacher, student=student, scratch_tokenizer_dir=tokenizer_dir,
                               space=prep.space, train=cfg.train, measure=cfg.measure, seed=cfg.seed,
                               workdir=workdir, data_facts=MappingProxyType(facts))
            study = run_pair_study(prep, ctx, reference)
            fronts[ctx.study_name] = pareto_trials(completed(study))
            all_trials.extend(completed(study))
        if len(prep.students) > 1:
            merged = pareto_trials(all_trials)
            say(f"\nMerged Pareto front across {len(prep.students)} teacher/student pairs "
                f"({len(merged)} of {len(all_trials)} completed trials):")
            say(printable(front_frame(merged)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return fronts


def _base_params(ctx: TrialContext, cfg: StudyConfig) -> dict[str, str]:
    return {"teacher": ctx.teacher.name, "student": ctx.student.name, "seed": str(cfg.seed),
            "sampler": cfg.sampler, "quick": str(cfg.quick), "search_space": ctx.space.source,
            "threads": str(cfg.measure.threads), **ctx.data_facts}


def run_pair_study(prep: Prepared, ctx: TrialContext, reference: dict[str, float]) -> optuna.Study:
    """Create or resume one pair's study and run trials until it holds ``n_trials`` completed ones."""
    cfg, tracker = prep.cfg, prep.tracker
    study = optuna.create_study(study_name=ctx.study_name, storage=prep.storage, directions=list(DIRECTIONS),
                                load_if_exists=True)
    # Seeded by history: a resumed study does not replay the random draws of its first session.
    study.sampler = make_sampler(cfg.sampler, cfg.seed + len(study.trials))
    for key, value in {"teacher": ctx.teacher.name, "student": ctx.student.name, "data_sha256": prep.corpus.sha256,
                       "seed": cfg.seed, "objectives": list(OBJECTIVES)}.items():
        study.set_user_attr(key, value)
    experiment_id = tracker.experiment(cfg.study_name)
    base = _base_params(ctx, cfg)
    parent = tracker.study_run(experiment_id, ctx.study_name, base,
                               {"teacher": ctx.teacher.name, "student": ctx.student.name})
    tracker.log_metrics(parent, reference)
    tracker.set_tags(parent, {f"machine.{k}": v for k, v in machine_facts().items()})
    done = len(completed(study))
    say(f"\n[{ctx.study_name}] {done} completed trial(s) stored; running until {cfg.n_trials} "
        f"(sampler {cfg.sampler}, storage {cfg.storage})")
    start = time.monotonic()
    failures_in_row = 0
    max_failures = cfg.max_failures or cfg.n_trials
    status = "FINISHED"
    try:
        while done < cfg.n_trials:
            if cfg.timeout is not None and time.monotonic() - start >= cfg.timeout:
                say(f"[{ctx.study_name}] --timeout of {cfg.timeout:.0f}s reached with {done}/{cfg.n_trials} trials")
                break
            if failures_in_row >= max_failures:
                say(f"[{ctx.study_name}] stopping: {failures_in_row} trials in a row failed")
                status = "FAILED"
                break
            ok = _one_trial(study, ctx, prep, experiment_id, parent, base, reference, done)
            failures_in_row = 0 if ok else failures_in_row + 1
            done = len(completed(study))
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        _finish_study(study, ctx, tracker, parent, status)
    return study


def _one_trial(study, ctx, prep, experiment_id, parent, base, reference, done) -> bool:
    tracker = prep.tracker
    trial = study.ask()
    run_id = tracker.start_trial(experiment_id, parent, ctx.study_name, trial.number, base,
                                 {"teacher": ctx.teacher.name, "student": ctx.student.name})
    trial.set_user_attr(RUN_ID_ATTR, run_id)
    for key, value in (("study", ctx.study_name), ("teacher", ctx.teacher.name), ("student", ctx.student.name)):
        trial.set_user_attr(key, value)
    began = time.perf_counter()
    try:
        outcome: TrialOutcome = objective(trial, ctx)
    except KeyboardInterrupt:
        tracker.fail_trial(run_id, "interrupted by the user", status="KILLED")
        study.tell(trial, state=TrialState.FAIL)
        raise
    except Exception as exc:  # a failed trial is recorded and the study goes on
        reason = f"{type(exc).__name__}: {exc}"
        trial.set_user_attr("failure_reason", reason[:1000])
        study.tell(trial, state=TrialState.FAIL)
        tracker.fail_trial(run_id, reason + "\n" + traceback.format_exc())
        say(f"[{ctx.study_name}] trial {trial.number} FAILED: {reason}")
        return False
    finally:
        if ctx.trial_dir(trial.number).exists():
            shutil.rmtree(ctx.trial_dir(trial.number), ignore_errors=True)
    metrics = dict(outcome.metrics)
    metrics["speedup_vs_teacher"] = reference["teacher_latency_ms"] / metrics["latency_ms"]
    metrics["compression_vs_teacher"] = reference["teacher_size_mb"] / metrics["size_mb"]
    metrics["macro_f1_delta_vs_teacher"] = metrics["macro_f1"] - reference["teacher_macro_f1"]
    trial.set_user_attr("metrics", metrics)
    trial.set_user_attr("resolved_params", outcome.params)
    study.tell(trial, list(outcome.values))
    params = {"temperature": outcome.params["temperature"], "kd_lambda": outcome.params["kd_lambda"],
              "prune_kind": outcome.params["prune_kind"], "prune_ratio": outcome.params["prune_ratio"],
              "quant_scheme": outcome.params["quant_scheme"]}
    tracker.finish_trial(run_id, params=params, metrics=metrics, tags=outcome.tags,
                         record={"study": ctx.study_name, "trial_number": trial.number, "params": outcome.params,
                                 "metrics": metrics, "teacher_reference": reference})
    v = outcome.values
    say(f"[{ctx.study_name}] trial {trial.number} done ({done + 1}/{prep.cfg.n_trials}, "
        f"{time.perf_counter() - began:.0f}s): T={params['temperature']:.2f} lambda={params['kd_lambda']:.2f} "
        f"prune={params['prune_ratio']:.2f} quant={params['quant_scheme']} -> macro-F1 {v[0]:.4f}, "
        f"{v[1]:.3f} ms, {v[2]:.2f} MB")
    return True


def _finish_study(study: optuna.Study, ctx: TrialContext, tracker: Tracker, parent: str, status: str) -> None:
    """Tag every completed trial's run pareto=true/false and log the front's table and plot."""
    trials = completed(study)
    front = pareto_trials(trials)
    on_front = {t.number for t in front}
    for t in trials:
        run_id = t.user_attrs.get(RUN_ID_ATTR)
        if run_id:
            tracker.set_tags(run_id, {PARETO_TAG: "true" if t.number in on_front else "false"})
    if trials:
        frame = front_frame(front)
        with tempfile.TemporaryDirectory() as tmp:
            csv = Path(tmp) / "pareto_front.csv"
            frame.to_csv(csv, index=False)
            tracker.log_artifact(parent, csv)
            html = Path(tmp) / "pareto_front.html"
            pareto_figure(study).write_html(str(html), include_plotlyjs=True)
            tracker.log_artifact(parent, html)
        tracker.log_metrics(parent, {"completed_trials": len(trials), "pareto_trials": len(front)})
        say(f"\nPareto front of {ctx.study_name} ({len(front)} of {len(trials)} completed trials; "
            f"latency = median ms/example at batch 1 in the serving runtime):")
        say(printable(frame))
    tracker.end_study(parent, status)
