"""The pareto objective end to end (``run_pareto``) and report regeneration (``run_report``); the jobs they
call live beside this module: prepare, reference, pair_study, workers, finish."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import optuna

from objectives.context import TrialContext
from study.core.config import StudyConfig
from study.core.devices import device_facts, worker_device
from study.core.errors import UserError
from study.reporting.progress import say
from study.reporting.report import publish
from study.reporting.stores import check_reachable
from study.reporting.front import completed, front_frame, pareto_trials, printable
from study.core.teacher import prepare_teacher
from study.core.training import set_compute_threads
from study.reporting.tracking import Tracker
from study.orchestration.finish import finish_study
from study.orchestration.front_timing import time_front_on_all_cores
from study.orchestration.pair_study import open_pair_study, pair_contexts, work
from study.orchestration.prepare import Prepared, data_lines, prepare
from study.orchestration.reference import Reference, add_baseline, announce_teacher, measure_reference
from study.orchestration.scratch import scratch_dir
from study.orchestration.workers import start_helpers


def run_pareto(cfg: StudyConfig) -> dict[str, list]:
    """The pareto objective end to end; returns each pair study's Pareto-optimal trials.

    With ``cfg.workers`` > 1, that many processes share each pair study (this one included); the
    teacher is trained once, before they start, and the fronts are logged once all have stopped.
    """
    prep = prepare(cfg)
    announce_inputs(prep)
    device = worker_device(cfg.device)  # this process is worker 0
    announce_device(device, cfg.workers)
    teacher = prepare_teacher(prep.teacher, prep.split, cfg.train, cfg.cache_dir, cfg.seed, log=say,
                              progress=not cfg.quiet, plan=prep.teacher_plan, device=device)
    workdir = scratch_dir()
    timer = None
    try:
        ref, timer = measure_reference(teacher, prep.split, cfg, workdir)
        announce_teacher(prep.teacher.name, teacher.tfidf_weight, ref.metrics, cfg)
        add_baseline(ref, prep.split, cfg)
        contexts = pair_contexts(prep, teacher, workdir, ref, timer, device)
        opened = [open_pair_study(prep, ctx, ref.metrics) for ctx in contexts]
        run_pairs(prep, contexts, opened, ref)
        publish(cfg.study_name, [study for study, _ in opened], prep.tracker, log=say)
        return report_fronts(cfg, contexts, opened)
    finally:
        if timer is not None:
            timer.close()
        shutil.rmtree(workdir, ignore_errors=True)


def announce_inputs(prep: Prepared) -> None:
    """One line on the data and its split, one per quantization scheme dropped from the space, and the lines on
    the teacher, the students' heads and their tokenizers."""
    for line in data_lines(prep.corpus, prep.split):
        say(line)
    for scheme, why in prep.dropped_schemes.items():
        say(f"[space] quant_scheme {scheme} dropped from the search space: {why}")
    for line in prep.notes:
        say(line)


def announce_device(device: str, workers: int) -> None:
    """One line on where training runs (and that timing stays on the CPU)."""
    facts = device_facts(device)
    more = ""
    if workers > 1 and device.startswith("cuda"):
        more = f"; with {workers} workers, worker i on visible GPU i mod their count"
    say(f"[device] training and teacher logits on {device} ({facts['train_device_name']}, "
        f"{facts['train_precision']}){more}; pruning, quantization, export and timing on the CPU")


def run_pairs(prep: Prepared, contexts: list[TrialContext], opened: list, ref: Reference) -> None:
    """Run every pair study (with helper workers beside this process), then finish each: its tags, its front,
    its parent run's status (KILLED on Ctrl-C, FAILED when its loop did not return)."""
    cfg = prep.cfg
    helpers = start_helpers(cfg, ref) if cfg.workers > 1 else []
    statuses = {}
    try:
        if helpers:
            set_compute_threads(max(1, (os.cpu_count() or 1) // cfg.workers))
        for ctx, (study, trial_tracker) in zip(contexts, opened):
            statuses[ctx.study_name] = work(study, ctx, cfg, trial_tracker, ref.metrics)
        for proc in helpers:
            proc.join()
    except KeyboardInterrupt:
        statuses = {ctx.study_name: "KILLED" for ctx in contexts}
        raise
    finally:
        for proc in helpers:
            proc.join(timeout=60)
        for ctx, (study, trial_tracker) in zip(contexts, opened):
            status = statuses.get(ctx.study_name, "FAILED")
            front = finish_study(study, ctx.study_name, prep.tracker, trial_tracker.parent_run_id, status,
                                 cfg.keep_models, cfg.budgets)
            if status == "FINISHED":
                try:  # secondary numbers: a failure here is reported, never the study's
                    time_front_on_all_cores(ctx.study_name, front, prep.tracker, trial_tracker.parent_run_id,
                                            ref.torch_bundle, ref.onnx_bundle, prep.split.test.texts, cfg.measure)
                except Exception as exc:  # noqa: BLE001
                    say(f"[{ctx.study_name}] the front's all-cores timing failed (its trials keep their "
                        f"numbers): {exc}")


def report_fronts(cfg: StudyConfig, contexts: list[TrialContext], opened: list) -> dict[str, list]:
    """Each pair study's front (returned) and, with several pairs, the merged front (printed)."""
    fronts = {}
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
    return fronts


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
