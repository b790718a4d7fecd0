"""``python -m benchmarks.throughput``: trials per hour of the pareto study in its quick and full settings,
each trial's time broken down by stage (distil, prune, quantize, evaluate, measure), with how often a trial
found its distilled student in the cache (each setting starts with a cold student cache)."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.common import (benchmark_parser, cold_student_cache, data_path, finish, names, pair_trials,
                               reuse_counts, study_config)
from objectives.timing import relative_half_width
from study.core.config import DEFAULT_STUDENTS, add_variants_flag
from study.core.errors import UserError
from study.reporting.progress import say

STAGES = ("distil", "prune", "quantize", "evaluate", "measure")


def measure_setting(args: argparse.Namespace, quick: bool, n_trials: int, students: tuple[str, ...]) -> dict:
    """Run a real pareto study (throwaway stores, a cold student cache beside the shared teachers) in one
    setting; time every trial and its stages, and count how its trials got their students."""
    from optuna.trial import TrialState

    from study.orchestration.runner import run_pareto

    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        cfg = study_config(args, quick=quick, students=students, n_trials=n_trials, study_name="throughput",
                           storage=f"sqlite:///{tmp}/optuna.db", tracking_uri=f"sqlite:///{tmp}/mlflow.db",
                           quiet=True, keep_models="none", data=data_path(args),
                           variants_per_distillation=args.variants_per_distillation)
        cfg = replace(cfg, cache_dir=cold_student_cache(cfg.cache_dir, Path(tmp) / "cache"))
        start = time.perf_counter()
        run_pareto(cfg)
        wall = time.perf_counter() - start
        trials = [t for t in pair_trials(cfg) if t.state == TrialState.COMPLETE]
    if not trials:
        raise UserError("no trial completed; see the study's messages above")
    seconds = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials]
    stages = {s: statistics.fmean(t.user_attrs["metrics"].get(f"time_{s}_s", 0.0) for t in trials) for s in STAGES}
    trial_total = sum(seconds)
    return {"setting": "quick" if quick else "full", "trials": len(trials), "students": list(students),
            "mean_trial_s": statistics.fmean(seconds), "median_trial_s": statistics.median(seconds),
            "trials_per_hour": 3600.0 * len(trials) / trial_total, "stage_mean_s": stages,
            "setup_s": wall - trial_total,  # teacher (trained or cached), reference timing, baseline, fronts
            **reuse_counts(trials),  # distillations, cache hits, hit rate, queued variants
            "timing_s_per_trial": stages["measure"],  # what the isolated, paired timing adds to each trial
            **timing_stops(trials),  # where the paired timing stopped, and how wide it was then
            "max_epochs": cfg.train.max_epochs, "train_examples_limit": cfg.train.max_train_examples,
            "max_length": cfg.train.max_length}


def timing_stops(trials: list) -> dict:
    """How many paired blocks each trial's timing took (a count per number of blocks) and the half-width of its
    latency_vs_teacher interval relative to the ratio (the wider side), per trial in trial order: what the
    stopping rule (docs/metrics.md, "When timing stops") did in this run."""
    blocks: dict[str, int] = {}
    widths = []
    for t in trials:
        m = t.user_attrs["metrics"]
        key = str(int(m["timing_blocks"]))
        blocks[key] = blocks.get(key, 0) + 1
        widths.append(relative_half_width(m["latency_vs_teacher_ci_low"], m["latency_vs_teacher_ci_high"],
                                          m["latency_vs_teacher"]))
    return {"timing_blocks": dict(sorted(blocks.items(), key=lambda kv: int(kv[0]))),
            "latency_vs_teacher_half_widths": widths,
            "median_half_width": statistics.median(widths) if widths else float("nan")}


def table(result: dict) -> str:
    head = (f"{'setting':<8} {'trials':>6} {'trials/h':>9} {'mean s':>8} "
            + " ".join(f"{s:>9}" for s in STAGES) + f" {'setup s':>8} {'hit rate':>8} {'distil.':>7} {'variants':>8}")
    lines = [head, "-" * len(head)]
    for r in result["settings"]:
        lines.append(f"{r['setting']:<8} {r['trials']:6d} {r['trials_per_hour']:9.1f} {r['mean_trial_s']:8.1f} "
                     + " ".join(f"{r['stage_mean_s'][s]:9.1f}" for s in STAGES) + f" {r['setup_s']:8.0f}"
                     + f" {r['cache_hit_rate']:8.0%} {r['distillations']:7d} {r['variants']:8d}")
    for r in result["settings"]:
        stops = ", ".join(f"{n} at {b}" for b, n in r["timing_blocks"].items())
        lines.append(f"{r['setting']}: the isolated timing (measure) adds {r['timing_s_per_trial']:.1f} s per trial; "
                     f"trials by paired blocks timed: {stops}; median half-width of latency_vs_teacher's interval "
                     f"{r['median_half_width']:.1%} of the ratio.")
    lines.append(f"Teacher {result['teacher']}, students {','.join(result['students'])}, on {result['machine']}. "
                 "Stage columns are mean seconds per trial; trials/h = 3600 x trials / summed trial time; setup = "
                 "teacher training or cache load, the teacher's reference timing, the baseline and the fronts; "
                 "hit rate = trials that loaded their distilled student from the cache (each setting starts with "
                 "none cached), distil. = trials that distilled, variants = trials queued after a new distillation.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = benchmark_parser("python -m benchmarks.throughput", __doc__,
                         quick_help="measure the quick setting only (default: the quick and the full setting)")
    p.add_argument("--n-trials", type=int, default=20,
                   help="trials per teacher/student pair and setting; 20 is what the README's main command runs: "
                        "with reuse, the rate depends on how many trials share each distillation (a new one, then "
                        "the variants --variants-per-distillation auto queues), so a shorter run would count a "
                        "larger share of cheap variants than a real study does")
    p.add_argument("--students", default=",".join(DEFAULT_STUDENTS), help="comma-separated students")
    p.add_argument("--full", action="store_true", help="measure the full setting only (default: the quick and the "
                                                         "full setting)")
    add_variants_flag(p, "; a fixed K makes the count of distillations and variants independent of the timings")
    args = p.parse_args(argv)
    from objectives.measure import machine_facts

    def compute() -> dict:
        if args.n_trials < 1:
            raise UserError(f"--n-trials must be at least 1, got {args.n_trials}")
        students = tuple(names(args.students))
        results = []
        if args.quick and args.full:
            raise UserError("--quick and --full each pick one setting: give one of them, or neither for both")
        for quick in ((True,) if args.quick else (False,) if args.full else (True, False)):
            say(f"[bench] {'quick' if quick else 'full'} setting: {args.n_trials} trial(s) per pair ...")
            results.append(measure_setting(args, quick, args.n_trials, students))
        facts = machine_facts()
        return {"teacher": args.teacher, "students": list(students), "settings": results,
                "machine": f"{facts['cpu']} ({facts['cpu_count']} cores)", "machine_facts": facts}

    return finish(compute, table, args.json_out)


if __name__ == "__main__":
    sys.exit(main())
