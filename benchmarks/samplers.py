"""``python -m benchmarks.samplers``: random, TPE and NSGA-II at equal trial budgets over several seeds,
compared by the hypervolume of the Pareto front each finds (one reference point for all). With --wall-clock
SECONDS: the study's default search (distilled students reused) against one distillation per trial, at that
wall-clock budget per search and paired sampler seeds, each run a real study (benchmarks/wall_clock.py)."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
import optuna

from benchmarks.common import benchmark_parser, data_path, finish, in_fresh_process, load_split, names, study_config
from objectives.quantize import SchemeUnavailable
from objectives.trial import DIRECTIONS, check_space, objective, servable_space
from search_spaces import load_space
from study.core.config import DEFAULT_STUDENTS, SAMPLERS, StudyConfig, add_variants_flag
from objectives.context import TrialContext
from study.core.data import limit_part
from study.core.errors import UserError, space_errors
from study.core.models import check_loadable, check_student_fits, resolve_model
from study.reporting.progress import say
from study.orchestration.pair_study import make_sampler
from study.orchestration.reference import measure_reference
from study.core.teacher import prepare_teacher, scratch_tokenizer

QUICK_TEST_EXAMPLES = 1000
PAIRED_TESTS = ("two-sided, paired by seed (null: no difference from random): Wilcoxon signed-rank "
                "(scipy.stats.wilcoxon, zero differences dropped) and paired t-test (scipy.stats.ttest_rel)")
ALPHA = 0.05  # a verdict's level, on the two-sided Wilcoxon p (below it a difference is a finding)
DEFAULT_SAMPLERS = "random,tpe,nsga2"
UNUSED_WITHOUT_STUDENT = {"temperature": 1.0, "kd_lambda": 0.0}  # pinned: no distillation happens


def hypervolume(points: list[tuple[float, float, float]], teacher: dict[str, float]) -> float:
    """Hypervolume of (validation macro-F1, latency relative to the fp32 teacher, size) points.

    Each point becomes (-macro-F1, relative latency, size / teacher size), all minimised; the
    reference point is (0, 1, 1): a model with no skill, as slow and as large as the teacher. Points
    outside that box add nothing. The result lies in [0, 1].
    """
    from optuna._hypervolume import compute_hypervolume  # Optuna's own WFG implementation

    reference = np.array([0.0, 1.0, 1.0])
    scaled = np.array([[-f1, relative, size / teacher["teacher_size_mb"]]
                       for f1, relative, size in points], dtype=float).reshape(-1, 3)
    inside = scaled[(scaled < reference).all(axis=1)]
    if len(inside) == 0:
        return 0.0
    return float(compute_hypervolume(inside, reference, assume_pareto=False))


def prepare_run(cfg: StudyConfig, data: Path | None, student_name: str, device: str | None = None):
    """The checked specs, the search space, the corpus, the split and the (cached) teacher of a run (trained on
    ``device`` if not cached; None: the CPU)."""
    teacher_spec = resolve_model(cfg.teacher)
    student = None if student_name == "teacher" else resolve_model(student_name)
    for spec in (teacher_spec, student):
        if spec is not None:
            check_loadable(spec)
    if student is not None:
        check_student_fits(teacher_spec, student)
    with space_errors():
        space = load_space(cfg.space)
        check_space(space)
        space, _ = servable_space(space)  # schemes this machine cannot serve are not searched
        if student is None:  # compressing the teacher itself: T and lambda do nothing, so they are not searched
            space = space.pinned(**UNUSED_WITHOUT_STUDENT)
    corpus, split = load_split(cfg, data)
    teacher = prepare_teacher(teacher_spec, split, cfg.train, cfg.cache_dir, cfg.seed, log=say, device=device)
    return teacher_spec, student, space, corpus, split, teacher


def one_run(cfg: StudyConfig, data: Path | None, student_name: str, sampler: str, seed: int, n_trials: int) -> dict:
    """One sampler's study at one seed: its completed trials' (macro-F1, latency, size), and the fp32
    teacher measured first in the same process."""
    _, student, space, _, split, teacher = prepare_run(cfg, data, student_name)
    if cfg.quick:  # every trial scores the test part: a stratified subset keeps quick runs short
        split = replace(split, test=limit_part(split.test, QUICK_TEST_EXAMPLES, cfg.seed))
    with tempfile.TemporaryDirectory(prefix="bench-samplers-") as tmp:
        workdir = Path(tmp)
        ref, timer = measure_reference(teacher, split, cfg, workdir)
        try:
            reference = {k: ref.metrics[k] for k in ("teacher_macro_f1", "teacher_latency_ms", "teacher_size_mb")}
            ctx = TrialContext(
                study_name="bench-samplers", split=split, teacher=teacher, student=student,
                scratch_tokenizer_dir=(scratch_tokenizer(split, cfg.cache_dir) if student and student.from_scratch
                                       else None),
                space=space, train=cfg.train, measure=cfg.measure, seed=cfg.seed, workdir=workdir,
                data_facts=MappingProxyType({}), timer=timer, teacher_test_predictions=ref.test_predictions)
            study = optuna.create_study(directions=list(DIRECTIONS), sampler=make_sampler(sampler, seed))
            start = time.perf_counter()
            study.optimize(lambda trial: list(objective(trial, ctx).values), n_trials=n_trials,
                           catch=(SchemeUnavailable,))
            seconds = time.perf_counter() - start
        finally:
            timer.close()
    done = [list(t.values) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    say(f"[bench] {sampler:<6} seed {seed}: {len(done)}/{n_trials} trials, front {len(study.best_trials)}, "
        f"{seconds:.0f}s; fp32 teacher {reference['teacher_latency_ms']:.2f} ms in this process")
    return {"sampler": sampler, "seed": seed, "completed": len(done), "failed": n_trials - len(done),
            "front_size": len(study.best_trials), "seconds": seconds,
            "best_macro_f1": max((v[0] for v in done), default=float("nan")), "teacher_reference": reference,
            "values": done}


def run(cfg: StudyConfig, data: Path | None, student_name: str, samplers: list[str], seeds: list[int],
        n_trials: int) -> dict:
    """Every sampler at every seed, each run in a fresh process (see ``in_fresh_process``)."""
    teacher_spec, _, _, corpus, split, _ = prepare_run(cfg, data, student_name)  # checks input, trains the teacher once
    test_examples = len(limit_part(split.test, QUICK_TEST_EXAMPLES, cfg.seed)) if cfg.quick else len(split.test)
    rows = [in_fresh_process(one_run, cfg, data, student_name, name, seed, n_trials)
            for name in samplers for seed in seeds]
    # One reference point for every run. The latency axis is each trial's latency_vs_teacher, paired with the
    # teacher in the timing process, so the teacher's own timing (which moves from process to process: 4.2 to
    # 7.7 ms at batch 1 here) does not enter; the size axis is against the fp32 teacher's bytes, one network.
    sizes = {r["teacher_reference"]["teacher_size_mb"] for r in rows}
    if len(sizes) != 1:
        raise RuntimeError(f"the runs' fp32 teachers differ in size ({sorted(sizes)} MB): not one teacher")
    latencies = [r["teacher_reference"]["teacher_latency_ms"] for r in rows]
    common = {"teacher_size_mb": sizes.pop(), "teacher_latency_ms_min": min(latencies),
              "teacher_latency_ms_max": max(latencies)}
    for r in rows:
        r["hypervolume"] = hypervolume([tuple(v) for v in r["values"]], common)
        say(f"[bench] {r['sampler']:<6} seed {r['seed']}: hypervolume {r['hypervolume']:.4f}")
    summary = {}
    for name in samplers:
        values = [r["hypervolume"] for r in rows if r["sampler"] == name]
        summary[name] = {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "runs": len(values)}
    return {"teacher": teacher_spec.name, "student": student_name, "data": corpus.source, "quick": cfg.quick,
            "n_trials": n_trials, "seeds": seeds, "test_examples": test_examples, "default_sampler": StudyConfig.sampler,
            "teacher_reference": common, "rows": rows, "summary": summary,
            "paired": paired_with_random(rows, samplers, seeds)}


def paired_p_values(treatment: list[float], control: list[float]) -> dict[str, float]:
    """Two-sided p-values of ``treatment`` against ``control`` paired by position (see ``PAIRED_TESTS``):
    ``wilcoxon_p`` (signed-rank; exact null distribution for a few pairs without ties) and ``paired_t_p``.
    NaN with fewer than two pairs (no test); 1.0 when every difference is zero (no evidence of one)."""
    import warnings

    from scipy.stats import ttest_rel, wilcoxon

    if len(treatment) != len(control):
        raise ValueError(f"paired samples differ in length: {len(treatment)} and {len(control)}")
    if len(treatment) < 2:
        return {"wilcoxon_p": float("nan"), "paired_t_p": float("nan")}
    if all(t == c for t, c in zip(treatment, control)):
        return {"wilcoxon_p": 1.0, "paired_t_p": 1.0}
    with warnings.catch_warnings():  # scipy warns on near-constant differences; the p-value stands as computed
        warnings.simplefilter("ignore", RuntimeWarning)
        return {"wilcoxon_p": float(wilcoxon(treatment, control, alternative="two-sided").pvalue),
                "paired_t_p": float(ttest_rel(treatment, control, alternative="two-sided").pvalue)}


def paired_with_random(rows: list[dict], samplers: list[str], seeds: list[int]) -> dict:
    """Each sampler's hypervolume minus random search's at the same seed (the runs share their random start,
    so the per-seed difference is less noisy than the two means): mean, standard error, seeds won, and the
    two-sided p-values of a Wilcoxon signed-rank and a paired t-test (``test`` says which)."""
    if "random" not in samplers:
        return {}
    hv = {(r["sampler"], r["seed"]): r["hypervolume"] for r in rows}
    out = {}
    for name in samplers:
        if name == "random":
            continue
        gains = [hv[name, seed] - hv["random", seed] for seed in seeds]
        error = statistics.stdev(gains) / len(gains) ** 0.5 if len(gains) > 1 else float("nan")
        out[name] = {"mean_gain": statistics.fmean(gains), "standard_error": error,
                     "seeds_won": sum(g > 0 for g in gains), "seeds": len(gains), "gains": gains,
                     **paired_p_values([hv[name, seed] for seed in seeds], [hv["random", seed] for seed in seeds]),
                     "alternative": "two-sided", "test": PAIRED_TESTS,
                     # the exact signed-rank test's floor: every difference of one sign, no zeros
                     "wilcoxon_smallest_p": min(1.0, 2.0 / 2 ** len(gains)), "alpha": ALPHA}
        out[name]["verdict"] = verdict(out[name]["mean_gain"], out[name]["wilcoxon_p"])
    return out


def verdict(mean_gain: float, wilcoxon_p: float) -> str:
    """"beats" or "trails" (random search) when the paired difference is a finding (Wilcoxon p below ALPHA),
    else "is within noise of"."""
    if not wilcoxon_p < ALPHA:  # NaN (too few seeds) included
        return "is within noise of"
    return "beats" if mean_gain > 0 else "trails"


def table(result: dict) -> str:
    lines = [f"{'sampler':<8} {'mean HV':>8} {'std':>7} {'runs':>5}   per seed", "-" * 60]
    for name, s in result["summary"].items():
        per_seed = "  ".join(f"{r['hypervolume']:.4f}" for r in result["rows"] if r["sampler"] == name)
        mark = " (default)" if name == result["default_sampler"] else ""
        lines.append(f"{name:<8} {s['mean']:8.4f} {s['std']:7.4f} {s['runs']:5d}   {per_seed}{mark}")
    default = result["default_sampler"]
    if default in result["paired"]:
        p = result["paired"][default]
        lines.append(f"Verdict: the default sampler ({default}) {p['verdict']} random search (mean hypervolume "
                     f"{p['mean_gain']:+.4f} at the same seeds; Wilcoxon two-sided p = {p['wilcoxon_p']:.3g}, a "
                     f"finding below {p['alpha']}).")
    for name, p in result["paired"].items():
        lines.append(f"{name} minus random at the same seed: {p['mean_gain']:+.4f} +- {p['standard_error']:.4f} "
                     f"(standard error), ahead at {p['seeds_won']} of {p['seeds']} seeds; two-sided p = "
                     f"{p['wilcoxon_p']:.3g} (Wilcoxon signed-rank), {p['paired_t_p']:.3g} (paired t-test).")
    if result["paired"]:
        n = len(result["seeds"])
        lines.append(f"p-values: {PAIRED_TESTS}; with {n} seed(s) the two-sided Wilcoxon p cannot fall below "
                     f"{min(1.0, 2.0 / 2 ** n):.3g}.")
    lines.append(f"{result['n_trials']} trials per run, teacher {result['teacher']}, student {result['student']}; "
                 "hypervolume of (-validation macro-F1, latency/teacher, size/teacher) against the reference point "
                 "(0, 1, 1); "
                 "each run in a fresh process; latency/teacher = the trials' paired ratio (the fp32 teacher's own "
                 f"batch-1 latency ranged {result['teacher_reference']['teacher_latency_ms_min']:.2f}-"
                 f"{result['teacher_reference']['teacher_latency_ms_max']:.2f} ms across the runs' processes), "
                 f"size/teacher against its {result['teacher_reference']['teacher_size_mb']:.2f} MB.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = benchmark_parser("python -m benchmarks.samplers", __doc__,
                         quick_help="the study's --quick training and timing settings, and 1,000 of the test texts "
                                    "(with --wall-clock: the study's --quick as it is)")
    p.add_argument("--student", default=None,
                   help="student to distil into, or 'teacher' to compress the teacher itself (no distillation: "
                        "the fastest trials; T and lambda are then not searched); default: teacher, and with "
                        f"--wall-clock {DEFAULT_STUDENTS[0]} (a real student is required there)")
    p.add_argument("--samplers", default=None,
                   help=f"comma-separated, of {', '.join(SAMPLERS)} (default: {DEFAULT_SAMPLERS}); ignored with "
                        f"--wall-clock (both arms use the study's default sampler, {StudyConfig.sampler})")
    p.add_argument("--seeds", type=int, default=3,
                   help="sampler seeds per sampler (with --wall-clock: per arm, paired; the exact two-sided "
                        "Wilcoxon p cannot fall below 2/2^seeds, so p < 0.05 needs at least 6)")
    p.add_argument("--n-trials", type=int, default=20, help="trials per run; ignored with --wall-clock")
    p.add_argument("--space", default="default", help="search space name or YAML file")
    p.add_argument("--wall-clock", type=float, default=None, metavar="SECONDS",
                   help="instead of samplers at equal trial counts, compare the study's default search (student "
                        "cache on, --variants-per-distillation queued) with one distillation per trial (--distill-"
                        "cache-gb 0) at SECONDS of search each, through the real study; only trials completed within "
                        "SECONDS of the first trial's start count; the data split and teacher stay --seed's, the "
                        "sampler seed varies")
    add_variants_flag(p, "; with --wall-clock, the reuse arm's; a fixed K makes the count of variants independent of the timings")
    args = p.parse_args(argv)
    if args.wall_clock is not None:
        from benchmarks import wall_clock  # it builds on this module

        return finish(lambda: wall_clock.from_args(args), wall_clock.table, args.json_out)

    def compute() -> dict:
        samplers = names(args.samplers or DEFAULT_SAMPLERS)
        unknown = [s for s in samplers if s not in SAMPLERS]
        if unknown or not samplers:
            raise UserError(f"--samplers: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(SAMPLERS)}")
        if args.seeds < 1:
            raise UserError(f"--seeds must be at least 1, got {args.seeds}")
        if args.n_trials < 1:
            raise UserError(f"--n-trials must be at least 1, got {args.n_trials}")
        cfg = study_config(args, space=args.space)
        return run(cfg, data_path(args), args.student or "teacher", samplers, sampler_seeds(args.seeds),
                   args.n_trials)

    return finish(compute, table, args.json_out)


def sampler_seeds(n: int) -> list[int]:
    """The sampler seeds of ``--seeds n``."""
    return [1000 + i for i in range(n)]


if __name__ == "__main__":
    sys.exit(main())
