"""``python -m benchmarks.validation_size``: how precisely a validation part of each size scores a model.

Every choice of a study is made on the validation texts, so their number decides how far apart two trials'
macro-F1 must be before the search can tell them apart. For each ``--sizes`` fraction this splits the corpus as
a study does, fits the TF-IDF + logistic-regression baseline on the training part (a model of the students'
strength, in seconds) and reports its validation macro-F1 with the bootstrap standard error and 95% half-width
over ``--resamples`` resamples of the validation texts (the same resampling as the trials' intervals).
"""

from __future__ import annotations

import sys

import numpy as np

from benchmarks.common import benchmark_parser, data_path, finish, load_split
from objectives.measure import bootstrap_macro_f1, macro_f1_rows
from study.core.config import StudyConfig
from study.core.tfidf import tfidf_pipeline


def run(data, seed: int, sizes: list[float], resamples: int) -> dict:
    rows = []
    for size in sizes:
        cfg = StudyConfig(seed=seed, validation_size=size)
        corpus, split = load_split(cfg, data)
        pipe = tfidf_pipeline(seed).fit(list(split.train.texts), list(split.train.labels))
        labels, predictions = split.validation.labels, pipe.predict(list(split.validation.texts))
        interval, _ = bootstrap_macro_f1(labels, predictions, resamples=resamples, seed=seed)
        index = np.random.default_rng(seed).integers(0, len(labels), size=(resamples, len(labels)))
        scores = macro_f1_rows(labels[index], predictions[index], len(corpus.label_names))
        rows.append({"validation_size": size, "validation_texts": len(split.validation),
                     "train_texts": len(split.train), "macro_f1": float(macro_f1_rows(labels[None], predictions[None],
                                                                                     len(corpus.label_names))[0]),
                     "standard_error": float(scores.std()), "half_width_95": (interval.high - interval.low) / 2})
    return {"data": str(data) if data else "demo", "seed": seed, "resamples": resamples, "rows": rows}


def table(result: dict) -> str:
    lines = [f"{'validation size':>15} {'texts':>6} {'train':>6} {'macro-F1':>9} {'bootstrap SE':>13} {'95% half-width':>15}"]
    for r in result["rows"]:
        lines.append(f"{r['validation_size']:>15.2f} {r['validation_texts']:>6} {r['train_texts']:>6} "
                     f"{r['macro_f1']:>9.4f} {r['standard_error']:>13.4f} {r['half_width_95']:>15.4f}")
    lines.append(f"TF-IDF + logistic regression fitted on the training part, scored on the validation part "
                 f"({result['resamples']} bootstrap resamples, seed {result['seed']}).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = benchmark_parser("python -m benchmarks.validation_size", __doc__)
    p.add_argument("--sizes", default="0.1,0.2", help="validation fractions of the training part to compare")
    p.add_argument("--resamples", type=int, default=2000)
    args = p.parse_args(argv)
    sizes = [float(s) for s in args.sizes.split(",") if s.strip()]
    return finish(lambda: run(data_path(args), args.seed, sizes, args.resamples), table, args.json_out)


if __name__ == "__main__":
    sys.exit(main())
