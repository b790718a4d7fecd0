"""``python -m benchmarks.compression``: every pruning kind x quantization scheme applied to the fp32
teacher, measured with the one protocol, as ratios against that teacher timed in the same process."""

from __future__ import annotations

import copy
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from benchmarks.common import benchmark_parser, data_path, finish, in_fresh_process, load_split, names, study_config
from objectives.prune import PRUNERS, PruneConfig, nonzero_parameters, prune
from objectives.quantize import SCHEMES, QuantConfig, SchemeUnavailable
from objectives.trial import calibration_batches, serve_and_measure
from study.core.config import StudyConfig
from study.core.errors import UserError
from study.core.models import resolve_model
from study.reporting.progress import say
from study.core.teacher import prepare_teacher
from study.core.training import encode


TIMED = ("latency_ms", "latency_ms_allcores", "throughput_per_s_allcores")  # the ratios' inputs


def kind_rows(cfg: StudyConfig, data: Path | None, ratio: float, kind: str, schemes: list[str]) -> tuple[dict, list[dict]]:
    """One pruning kind's rows, and the fp32 teacher timed first in the same process (their reference).

    With kind ``none`` and scheme ``none`` first, the first row is the teacher itself.
    """
    _, split = load_split(cfg, data)
    teacher = prepare_teacher(resolve_model(cfg.teacher), split, cfg.train, cfg.cache_dir, cfg.seed, log=say)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(teacher.tokenizer_dir))
    fp32 = AutoModelForSequenceClassification.from_pretrained(str(teacher.model_dir)).eval()
    calibration = calibration_batches(encode(tokenizer, split.train.texts, cfg.train.max_length),
                                      tokenizer.pad_token_id)
    with tempfile.TemporaryDirectory() as tmp:
        def measure(kind: str, scheme: str, name: str) -> dict:
            model = copy.deepcopy(fp32)
            row = {"prune_kind": kind, "prune_ratio": 0.0 if kind == "none" else ratio, "scheme": scheme}
            try:
                report = prune(model, PruneConfig(kind if kind != "none" else "l1_unstructured",
                                                  0.0 if kind == "none" else ratio))
                served = serve_and_measure(model, tokenizer, QuantConfig(scheme), Path(tmp) / name, split,
                                           cfg.train.max_length, cfg.measure, calibration=calibration)
            except SchemeUnavailable as exc:
                row["unavailable"] = str(exc)
                say(f"[bench] {kind:>15} x {scheme:<18} unavailable: {exc}")
                return row
            row.update(served.metrics())
            row.update(runtime=served.servable.runtime, sparsity=report.sparsity,
                       nonzero_params=nonzero_parameters(model) if scheme != "torch_dynamic_int8" else None)
            say(f"[bench] {kind:>15} x {scheme:<18} macro-F1 {row['macro_f1']:.4f}  "
                f"{row['latency_ms']:.3f} ms (cv {row['latency_cv']:.1%}, {row['measure_attempts']:.0f} attempt(s))  "
                f"{row['throughput_per_s_allcores']:.0f}/s  {row['size_mb']:.2f} MB")
            return row

        own = kind == "none" and schemes[:1] == ["none"]
        reference = None if own else measure("none", "none", "reference")
        rows = []
        for scheme in schemes:
            row = measure(kind, scheme, f"{kind}-{scheme}")
            if reference is None:
                reference = row
            if "unavailable" not in row:
                row.update({f"reference_{k}": reference[k] for k in TIMED})
            rows.append(row)
    return {"before": kind, **{k: reference[k] for k in ("macro_f1", "size_mb", "size_compressed_mb", *TIMED)}}, rows


def run(cfg: StudyConfig, data: Path | None, ratio: float, kinds: list[str], schemes: list[str]) -> dict:
    """Every pruning kind's rows, each kind in a fresh process that times the fp32 teacher first: PyTorch
    eager slows down over a long process (measured here: a 50% head+FFN-pruned model 2.5 ms at batch 1
    when timed first, 3.5 ms after 24 other models), so timings from far apart in one process do not
    compare (see ``in_fresh_process``)."""
    corpus, split = load_split(cfg, data)
    spec = resolve_model(cfg.teacher)
    prepare_teacher(spec, split, cfg.train, cfg.cache_dir, cfg.seed, log=say)  # trained once, before the kinds
    rows, references = [], []
    for kind in kinds:
        reference, kind_result = in_fresh_process(kind_rows, cfg, data, ratio, kind, schemes)
        references.append(reference)
        rows.extend(kind_result)
    base = references[0]  # quality and bytes do not drift: every row is compared with the first reference
    for r in rows:
        if "unavailable" in r:
            continue
        r["macro_f1_delta"] = r["macro_f1"] - base["macro_f1"]
        r["speedup_batch1"] = r["reference_latency_ms"] / r["latency_ms"]
        r["speedup_batch1_allcores"] = r["reference_latency_ms_allcores"] / r["latency_ms_allcores"]
        r["throughput_ratio"] = r["throughput_per_s_allcores"] / r["reference_throughput_per_s_allcores"]
        r["size_ratio"] = base["size_mb"] / r["size_mb"]
        r["compressed_size_ratio"] = base["size_compressed_mb"] / r["size_compressed_mb"]
    return {"teacher": spec.name, "data": corpus.source, "data_sha256": corpus.sha256, "test_examples": len(split.test),
            "threads": cfg.measure.threads, "all_cores": os.cpu_count(), "max_cv": cfg.measure.max_cv,
            "max_attempts": cfg.measure.max_attempts, "throughput_batch_size": cfg.measure.throughput_batch_size,
            "prune_ratio": ratio, "references": references, "rows": rows}


def table(result: dict) -> str:
    head = (f"{'pruning':>16} {'scheme':<18} {'runtime':<12} {'F1':>7} {'dF1':>7} {'lat ms':>8} {'IQR':>6} "
            f"{'CV':>6} {'speedup':>8} {'thr x':>6} {'size x':>7} {'zip x':>6}")
    lines = [head, "-" * len(head)]
    for r in result["rows"]:
        label = f"{r['prune_kind']} {r['prune_ratio']:.0%}" if r["prune_kind"] != "none" else "none"
        if "unavailable" in r:
            lines.append(f"{label:>16} {r['scheme']:<18} unavailable: {r['unavailable']}")
            continue
        lines.append(f"{label:>16} {r['scheme']:<18} {r['runtime']:<12} {r['macro_f1']:7.4f} "
                     f"{r['macro_f1_delta']:+7.4f} {r['latency_ms']:8.3f} {r['latency_iqr_ms']:6.3f} "
                     f"{r['latency_cv']:6.1%} {r['speedup_batch1']:7.2f}x {r['throughput_ratio']:5.2f}x "
                     f"{r['size_ratio']:6.2f}x {r['compressed_size_ratio']:5.2f}x")
    lines.append("The fp32 teacher timed first in each pruning kind's process (ms at batch 1 / examples per s at batch "
                 f"{result['throughput_batch_size']}): " + ", ".join(
                     f"{r['before']} {r['latency_ms']:.3f} / {r['throughput_per_s_allcores']:.0f}"
                     for r in result["references"]))
    lines.append(f"Ratios against the fp32 teacher (no pruning, PyTorch) measured in this run on {result['test_examples']}"
                 " test texts (speed: against its timing in that pruning kind's process); "
                 f"CV = pass-to-pass, of the steadiest of up to {result['max_attempts']} measurements (retaken "
                 f"while above {result['max_cv']:.0%}); speedup = batch-1 median "
                 f"latency at {result['threads']} thread(s); thr x = throughput"
                 f" at batch {result['throughput_batch_size']} on all {result['all_cores']} cores; size x = artifact"
                 " bytes; zip x = deflate-compressed artifact bytes.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = benchmark_parser("python -m benchmarks.compression", __doc__)
    p.add_argument("--ratio", type=float, default=0.5, help="pruning ratio for every pruning kind")
    p.add_argument("--kinds", default="none," + ",".join(k for k in PRUNERS if k != "none"))
    p.add_argument("--schemes", default=",".join(SCHEMES))
    p.add_argument("--fixed-length", type=int, default=None,
                   help="time every input padded to this many tokens (default: the test texts' real lengths)")
    args = p.parse_args(argv)

    def compute() -> dict:
        cfg = study_config(args)
        cfg = replace(cfg, measure=replace(cfg.measure, fixed_length=args.fixed_length))
        kinds, schemes = names(args.kinds), names(args.schemes)
        unknown = [k for k in kinds if k not in PRUNERS] + [s for s in schemes if s not in SCHEMES]
        if unknown:
            raise UserError(f"unknown pruning kind or scheme: {', '.join(unknown)}")
        return run(cfg, data_path(args), args.ratio, kinds, schemes)

    return finish(compute, table, args.json_out)


if __name__ == "__main__":
    sys.exit(main())
