"""``python -m benchmarks.samplers --wall-clock SECONDS``: the study's default search, which reuses distilled
students, against one distillation per trial, at one wall-clock budget and paired sampler seeds, every run a real
pair study (``run_pareto``) in a fresh process with a cold student cache."""

from __future__ import annotations

import math
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

from optuna.trial import FrozenTrial, TrialState

from benchmarks.common import cold_student_cache, data_path, in_fresh_process, reuse_counts, study_config
from benchmarks.samplers import ALPHA, hypervolume, paired_p_values, prepare_run, sampler_seeds
from objectives.measure import machine_facts
from study.core.config import DEFAULT_STUDENTS, StudyConfig
from study.core.devices import worker_device
from study.core.errors import UserError
from study.reporting.progress import say

# reuse: the study's default (student cache on, K variants queued per new distillation, T and lambda on a grid);
# per-trial: the same study with the student cache off (--distill-cache-gb 0), which is today's search: every trial
# distils its own student in memory (objectives.student.distilled_student) and no variant is queued
# (pair_study.work queues them only when the study has a student cache)
ARMS = ("reuse", "per-trial")
UNBOUNDED_TRIALS = 1_000_000  # the budget is the wall clock (--timeout), not a trial count
STUDY_NAME = "wallclock"
PAIRED_TESTS = ("two-sided, paired by sampler seed (null: no difference between the arms): Wilcoxon signed-rank "
                "(scipy.stats.wilcoxon, zero differences dropped) and paired t-test (scipy.stats.ttest_rel)")


def from_args(args) -> dict:
    """The mode's flags checked (before anything is trained or written), then both arms at every seed."""
    student = args.student or DEFAULT_STUDENTS[0]
    check_request(args.wall_clock, student, args.seeds)
    if args.samplers is not None:
        say(f"[bench] --samplers is ignored with --wall-clock: both arms use the study's default sampler "
            f"({StudyConfig.sampler})")
    base = study_config(args, space=args.space, students=(student,), data=data_path(args),
                        variants_per_distillation=args.variants_per_distillation)
    return run(base, data_path(args), student, sampler_seeds(args.seeds), args.wall_clock)


def check_request(seconds: float, student: str, seeds: int) -> None:
    """Bad flags of the wall-clock mode, refused before anything is trained or written."""
    if not (seconds > 0 and math.isfinite(seconds)):
        raise UserError(f"--wall-clock must be a positive number of seconds, got {seconds}")
    if student == "teacher":
        raise UserError("--wall-clock compares reusing distilled students with distilling in every trial: "
                        "--student must name a student model (e.g. teacher-l2), not 'teacher' (no distillation)")
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}")


def arm_config(base: StudyConfig, arm: str, *, seconds: float, sampler_seed: int, workdir: Path,
               cache_dir: Path) -> StudyConfig:
    """The study one arm runs at one sampler seed: throwaway stores under ``workdir``, ``cache_dir`` for its
    cache, ``seconds`` of search, no trial limit; ``per-trial`` is the same study with the student cache off."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; known: {', '.join(ARMS)}")
    cfg = replace(base, n_trials=UNBOUNDED_TRIALS, timeout=seconds, study_name=STUDY_NAME,
                  storage=f"sqlite:///{workdir}/optuna.db", tracking_uri=f"sqlite:///{workdir}/mlflow.db",
                  quiet=True, keep_models="none", workers=1, sampler_seed=sampler_seed, cache_dir=cache_dir)
    return replace(cfg, distill_cache_gb=0.0) if arm == "per-trial" else cfg


def within_budget(trials: list[FrozenTrial], seconds: float) -> list[FrozenTrial]:
    """The completed trials that finished within ``seconds`` of the search's start (the earliest trial's start).

    The study checks its timeout only between trials, so its last trial overruns it; counting that trial would
    give the arm with the longer trials (distilling in each) up to a whole distillation more than the budget.
    """
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    if not starts:
        return []
    start = min(starts)
    return [t for t in trials if t.state == TrialState.COMPLETE
            and (t.datetime_complete - start).total_seconds() <= seconds]


def summarize_run(arm: str, seed: int, trials: list[FrozenTrial], seconds: float, teacher_size_mb: float) -> dict:
    """One run's row: the hypervolume of the trials counted within the budget, and how their students came."""
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    counted = within_budget(trials, seconds)
    points = [tuple(t.values) for t in counted]  # (validation macro-F1, latency_vs_teacher, size MB)
    reuse = reuse_counts(counted)
    return {"arm": arm, "seed": seed, "counted": len(counted), "completed": len(done),
            "failed": sum(t.state == TrialState.FAIL for t in trials), "distillations": reuse["distillations"],
            "cache_hits": reuse["cache_hits"], "variants": reuse["variants"],
            "distillations_completed": reuse_counts(done)["distillations"], "teacher_size_mb": teacher_size_mb,
            "hypervolume": hypervolume(points, {"teacher_size_mb": teacher_size_mb}), "values": points}


def teacher_size_mb(cfg: StudyConfig, pair_study: str) -> float:
    """The fp32 teacher's size that the pair study compared its trials with (its parent run's metric)."""
    from study.reporting.tracking import Tracker

    tracker = Tracker(cfg.tracking_uri)
    run = tracker.find_study_run(tracker.find_experiment(cfg.study_name), pair_study)
    return float(run.data.metrics["teacher_size_mb"])


def arm_run(base: StudyConfig, arm: str, seed: int, seconds: float) -> dict:
    """One arm's study at one sampler seed, in throwaway stores and a cold student cache beside the shared
    teachers (run in a fresh process by ``run``)."""
    import optuna

    from study.orchestration.runner import run_pareto
    from study.reporting.front import pair_studies

    with tempfile.TemporaryDirectory(prefix="bench-wallclock-") as tmp:
        workdir = Path(tmp)
        cfg = arm_config(base, arm, seconds=seconds, sampler_seed=seed, workdir=workdir,
                         cache_dir=cold_student_cache(base.cache_dir, workdir / "cache"))
        run_pareto(cfg)
        (pair,) = pair_studies(cfg.storage, cfg.study_name)  # one student: one pair study
        trials = optuna.load_study(study_name=pair, storage=cfg.storage).get_trials(deepcopy=False)
        size = teacher_size_mb(cfg, pair)
    row = summarize_run(arm, seed, trials, seconds, size)
    say(f"[bench] {arm:<9} seed {seed}: {row['counted']} of {row['completed']} completed trials within "
        f"{seconds:.0f}s, {row['distillations']} distillation(s), {row['variants']} variant(s), "
        f"hypervolume {row['hypervolume']:.4f}")
    return row


def paired_difference(rows: list[dict], seeds: list[int]) -> dict:
    """reuse minus per-trial hypervolume at each sampler seed: mean, standard error, seeds won, the two-sided
    p-values of ``paired_p_values`` and the verdict (``beats``: mean gain above 0 and Wilcoxon p below ALPHA)."""
    hv = {(r["arm"], r["seed"]): r["hypervolume"] for r in rows}
    reuse, per_trial = [hv["reuse", s] for s in seeds], [hv["per-trial", s] for s in seeds]
    gains = [a - b for a, b in zip(reuse, per_trial)]
    error = statistics.stdev(gains) / len(gains) ** 0.5 if len(gains) > 1 else float("nan")
    p = paired_p_values(reuse, per_trial)
    return {"mean_gain": statistics.fmean(gains), "standard_error": error, "seeds_won": sum(g > 0 for g in gains),
            "seeds": len(gains), "gains": gains, **p, "alternative": "two-sided", "test": PAIRED_TESTS,
            # the exact signed-rank test's floor: every difference of one sign, no zeros
            "wilcoxon_smallest_p": min(1.0, 2.0 / 2 ** len(gains)), "alpha": ALPHA,
            "beats": statistics.fmean(gains) > 0 and p["wilcoxon_p"] < ALPHA}


def run(base: StudyConfig, data: Path | None, student: str, seeds: list[int], seconds: float) -> dict:
    """Both arms at every sampler seed, each (arm, seed) a study in a fresh process; the teacher trained once
    first, into the shared cache that every run links."""
    teacher_spec, _, _, corpus, _, _ = prepare_run(base, data, student, device=worker_device(base.device))
    rows = [in_fresh_process(arm_run, base, arm, seed, seconds) for seed in seeds for arm in ARMS]
    summary = {}
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        values = [r["hypervolume"] for r in mine]
        summary[arm] = {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "runs": len(values),
                        "mean_counted": statistics.fmean(r["counted"] for r in mine),
                        "mean_distillations": statistics.fmean(r["distillations"] for r in mine)}
    facts = machine_facts()
    return {"mode": "wall_clock", "wall_clock_s": seconds, "teacher": teacher_spec.name, "student": student,
            "machine": f"{facts['cpu']} ({facts['cpu_count']} cores)", "machine_facts": facts,
            "data": corpus.source, "quick": base.quick, "sampler": base.sampler, "seeds": seeds, "seed": base.seed,
            "variants_per_distillation": base.variants_per_distillation, "arms": list(ARMS), "rows": rows,
            "summary": summary, "paired": paired_difference(rows, seeds)}


def table(result: dict) -> str:
    lines = [f"{'arm':<10} {'mean HV':>8} {'std':>7} {'runs':>5} {'counted':>8} {'distil.':>8}   "
             "per seed: HV (trials counted/completed, distillations)", "-" * 100]
    for arm, s in result["summary"].items():
        per_seed = "  ".join(f"{r['hypervolume']:.4f} ({r['counted']}/{r['completed']}, {r['distillations']})"
                             for r in result["rows"] if r["arm"] == arm)
        lines.append(f"{arm:<10} {s['mean']:8.4f} {s['std']:7.4f} {s['runs']:5d} {s['mean_counted']:8.1f} "
                     f"{s['mean_distillations']:8.1f}   {per_seed}")
    p, n = result["paired"], len(result["seeds"])
    lines.append(f"reuse minus per-trial at the same sampler seed: {p['mean_gain']:+.4f} +- "
                 f"{p['standard_error']:.4f} (standard error), ahead at {p['seeds_won']} of {p['seeds']} seeds; "
                 f"two-sided p = {p['wilcoxon_p']:.3g} (Wilcoxon signed-rank), {p['paired_t_p']:.3g} (paired t-test).")
    if p["beats"]:
        lines.append(f"Verdict: reuse beats per-trial at {result['wall_clock_s']:g} s per search "
                     f"(Wilcoxon two-sided p = {p['wilcoxon_p']:.3g} < {p['alpha']}).")
    else:
        lines.append(f"Verdict: reuse does not beat per-trial at {result['wall_clock_s']:g} s per search (mean "
                     f"{p['mean_gain']:+.4f}, Wilcoxon two-sided p = {p['wilcoxon_p']:.3g}, needs < {p['alpha']}; "
                     f"with {n} seed(s) it cannot fall below {p['wilcoxon_smallest_p']:.3g}).")
    lines.append(f"p-values: {PAIRED_TESTS}.")
    lines.append(f"Each search: {result['wall_clock_s']:g} s from its first trial's start, only trials completed "
                 f"within it counted; teacher {result['teacher']}, student {result['student']}, sampler "
                 f"{result['sampler']} (the study's default), K = {result['variants_per_distillation']}, on "
                 f"{result['machine']}; each run a fresh process with a cold student cache; hypervolume of "
                 "(-validation macro-F1, latency/teacher, size/teacher) against the reference point (0, 1, 1).")
    return "\n".join(lines)
