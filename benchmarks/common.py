"""What every benchmark shares: its command-line flags, its study settings and its data split."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from study.core.config import DEFAULT_TEACHER, StudyConfig, quick_overrides, study_split
from study.core.data import Corpus, DataSplit
from study.core.sources import DataSpec, load_data
from study.core.errors import EXIT_USER_ERROR, UserError


def benchmark_parser(prog: str, doc: str,
                     quick_help: str = "the study's --quick training and timing settings") -> argparse.ArgumentParser:
    """A benchmark's parser with the flags every benchmark has (its description: ``doc`` after the first colon)."""
    p = argparse.ArgumentParser(prog=prog, description=doc.split(":", 1)[1].strip())
    p.add_argument("--data", type=Path, default=None, help="corpus: a data file, a save_to_disk folder or a hub id "
                                                          "(default: $STUDY_DATA, else the synthetic demo)")
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--json-out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--teacher", default=DEFAULT_TEACHER, help=f"teacher model (default: {DEFAULT_TEACHER})")
    p.add_argument("--seed", type=int, default=42, help="data split and teacher seed")
    p.add_argument("--cache-dir", type=Path, default=None, help="teacher cache (default: the study's)")
    return p


def data_path(args: argparse.Namespace) -> Path | None:
    return args.data or (Path(os.environ["STUDY_DATA"]) if os.environ.get("STUDY_DATA") else None)


def study_config(args: argparse.Namespace, quick: bool | None = None, **fields) -> StudyConfig:
    """The study's settings for a benchmark (``quick`` overrides ``args.quick`` when given)."""
    quick = args.quick if quick is None else quick
    cfg = StudyConfig(teacher=args.teacher, seed=args.seed, quick=quick,
                      **({"cache_dir": args.cache_dir} if args.cache_dir else {}), **fields)
    return quick_overrides(cfg) if quick else cfg


def load_split(cfg: StudyConfig, data: Path | None) -> tuple[Corpus, DataSplit]:
    """The study's split of ``data`` (or of the demo corpus), training part limited as ``cfg`` says."""
    corpus = load_data(DataSpec(source=None if data is None else str(data)))
    return corpus, study_split(corpus, cfg)


TEACHER_CACHE_FOLDERS = ("teachers", "tokenizers")  # study.core.teacher's folders under --cache-dir


def cold_student_cache(shared: Path, folder: Path) -> Path:
    """``folder`` made into a cache dir for one measured run: it starts without distilled students, and links
    every other entry of the ``shared`` cache dir (the teachers with their logits and TF-IDF members, the
    tokenizers; created there if missing), so the run trains no teacher again and what it adds to them is kept.

    A run that found students cached by an earlier one would count their distillations as free.
    """
    from objectives.student_cache import FOLDER as STUDENTS

    shared = Path(shared).expanduser().resolve()
    for name in TEACHER_CACHE_FOLDERS:
        (shared / name).mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True)
    for entry in sorted(shared.iterdir()):
        if entry.name != STUDENTS:
            (folder / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    return folder


def pair_trials(cfg: StudyConfig) -> list:
    """Every trial (any state) of the pair studies of study ``cfg.study_name`` in ``cfg.storage``."""
    import optuna

    from study.reporting.front import pair_studies

    return [t for name in pair_studies(cfg.storage, cfg.study_name)
            for t in optuna.load_study(study_name=name, storage=cfg.storage).get_trials(deepcopy=False)]


def reuse_counts(trials: list) -> dict[str, float]:
    """How the completed ``trials`` got their students: ``distillations`` (metric ``distill_cache_hit`` 0: the
    trial distilled), ``cache_hits`` (1: loaded from the student cache), ``cache_hit_rate`` (hits / trials; NaN
    without trials) and ``variants`` (trials queued after a new distillation: user attr ``variant_of``)."""
    from study.orchestration.reuse import VARIANT_OF_ATTR

    hits = [t.user_attrs.get("metrics", {}).get("distill_cache_hit") for t in trials]
    return {"distillations": sum(h == 0.0 for h in hits), "cache_hits": sum(h == 1.0 for h in hits),
            "cache_hit_rate": sum(h == 1.0 for h in hits) / len(trials) if trials else float("nan"),
            "variants": sum(VARIANT_OF_ATTR in t.user_attrs for t in trials)}


def write_json(path: Path | None, result: dict) -> None:
    if path is not None:
        path.write_text(json.dumps(result, indent=2, default=float))
        print(f"wrote {path}")


def names(text: str) -> list[str]:
    """The comma-separated names of a flag value, blanks dropped."""
    return [part.strip() for part in text.split(",") if part.strip()]


def in_fresh_process(fn: Callable, *args):
    """``fn(*args)`` run in a new Python process (spawned, libraries quieted), its result returned.

    Timings taken late in a long process are not comparable with early ones (measured here: PyTorch eager
    batch-1 latency drifts slower after a few dozen models), so a benchmark runs each unit whose numbers
    are compared (a sampler's run, a pruning kind's rows) in a process of its own, with its own reference.
    """
    import multiprocessing

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_quiet_child) as pool:
        return pool.submit(fn, *args).result()


def _quiet_child() -> None:
    from study.core.libraries import quiet_libraries

    quiet_libraries()


def finish(compute: Callable[[], dict], table: Callable[[dict], str], json_out: Path | None) -> int:
    """Run a benchmark (libraries quieted): print its table and write its JSON, or print a UserError and
    return exit code 2."""
    from study.core.libraries import quiet_libraries

    quiet_libraries()
    try:
        result = compute()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(table(result))
    write_json(json_out, result)
    return 0
