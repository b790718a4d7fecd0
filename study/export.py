"""``python -m study.export``: Pareto-optimal (or chosen) trials as deployable bundles with model cards,
registered in the MLflow Model Registry as versions of ``<study>-pareto``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from objectives.bundle import BundleError
from study.core.budgets import add_budget_flags, budgets_from_args
from study.core.errors import EXIT_USER_ERROR, UserError


def build_parser() -> argparse.ArgumentParser:
    from study.core.config import add_store_flags

    p = argparse.ArgumentParser(prog="python -m study.export", description=__doc__.split(":", 1)[1].strip())
    add_store_flags(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--trials", default="pareto", help="'pareto' (default), 'all', or trial numbers like 3,7 "
                                                          "(applied to every pair study of the study)")
    which.add_argument("--pick", default=None, metavar="RULE",
                       help="export the one model this rule picks across every pair study, on validation numbers: "
                            "most-accurate, fastest, smallest, fastest-within:P, smallest-within:P (P macro-F1 "
                            "points below the teacher), knee (see the README)")
    p.add_argument("--out", type=Path, default=Path("exported"), help="folder for the bundles")
    p.add_argument("--data", type=Path, default=None,
                   help="the study's --data (file or saved dataset folder), if it moved (used to re-measure "
                        "macro-F1; sha256 must match); given validation/test parts are read from where the run "
                        "recorded them")
    p.add_argument("--no-register", action="store_true", help="write bundles only, no Model Registry versions")
    add_budget_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from study.core.libraries import quiet_libraries
    from study.reporting.bundle_export import export_bundles

    quiet_libraries()
    try:
        given = budgets_from_args(args)
        export_bundles(args.study_name, args.storage, args.tracking_uri, args.trials, args.out, args.data,
                       not args.no_register, budgets=given if given else None, pick_rule=args.pick)
    except (UserError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
