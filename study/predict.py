"""``python -m study.predict BUNDLE "text" ...``: labels and class probabilities from an exported bundle."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from study.core.errors import EXIT_USER_ERROR


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m study.predict", description=__doc__.split(":", 1)[1].strip())
    p.add_argument("bundle", type=Path, help="a folder written by python -m study.export")
    p.add_argument("texts", nargs="*", help="texts to classify (or use --file)")
    p.add_argument("--file", type=Path, default=None, help="a .csv/.tsv/.jsonl/.xlsx file of texts")
    p.add_argument("--text-col", default=None, help="text column of --file (default: found by name)")
    p.add_argument("--out", type=Path, default=None, help="write predictions of --file here as CSV")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores)")
    args = p.parse_args(argv)
    if not args.texts and args.file is None:
        p.error("give texts or --file")
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from objectives.bundle import BundleError, load_bundle
    from study.core.errors import UserError

    try:
        bundle = load_bundle(args.bundle, threads=args.threads or os.cpu_count() or 1)
        texts = list(args.texts)
        if args.file is not None:
            texts += _read_texts(args.file, args.text_col)
    except (BundleError, UserError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    import pandas as pd
    from tqdm import tqdm

    rows = []
    chunks = range(0, len(texts), args.batch_size)
    show = args.file is not None and not args.texts
    for start in tqdm(chunks, desc="predicting", unit="batch", disable=not show, file=sys.stderr):
        chunk = texts[start:start + args.batch_size]
        proba = bundle.predict_proba(chunk, batch_size=args.batch_size)
        for text, row in zip(chunk, proba):
            rows.append({"text": text, "label": bundle.labels[int(row.argmax())],
                         **{f"prob_{name}": float(v) for name, v in zip(bundle.labels, row)}})
    frame = pd.DataFrame(rows)
    if args.out is not None:
        frame.to_csv(args.out, index=False)
        print(f"wrote {len(frame)} predictions to {args.out}")
    else:
        for row in rows:
            probs = ", ".join(f"{name} {row[f'prob_{name}']:.3f}" for name in bundle.labels)
            print(f"{row['label']}\t{probs}\t{row['text']}")
    return 0


def _read_texts(path: Path, text_col: str | None) -> list[str]:
    from study.core.data import TEXT_COLUMN_NAMES, pick_column, read_table

    frame = read_table(path)
    column = pick_column(frame, path, text_col, TEXT_COLUMN_NAMES, "text", "--text-col")
    return frame[column].astype(str).tolist()


if __name__ == "__main__":
    sys.exit(main())
