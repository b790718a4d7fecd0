"""``python -m benchmarks.compression``: every pruning kind x quantization scheme applied to the fp32
teacher's network, each artifact scored and timed with the study's protocol (isolated, paired with that teacher)."""

from __future__ import annotations

import copy
import sys
import tempfile
from contextlib import closing
from dataclasses import replace
from pathlib import Path

from benchmarks.common import benchmark_parser, data_path, finish, load_split, names, study_config
from objectives.measure import machine_facts
from objectives.prune import PRUNERS, PruneConfig, nonzero_parameters, prune
from objectives.quantize import SCHEMES, QuantConfig, SchemeUnavailable
from objectives.timing import PairedTimer
from objectives.trial import calibration_batches, export_bundle, serve_and_measure
from study.core.config import StudyConfig
from study.core.errors import UserError
from study.core.models import resolve_model
from study.reporting.progress import say
from study.core.teacher import prepare_teacher
from study.core.training import encode

REFERENCE = ("none", "none")  # (pruning kind, scheme) of the row that is the fp32 teacher's network itself


def run(cfg: StudyConfig, data: Path | None, ratio: float, kinds: list[str], schemes: list[str]) -> dict:
    """Every (pruning kind, scheme) row, in one process that prunes, exports and scores; every artifact is timed
    in the study's timing process, in blocks alternating with the fp32 teacher (PyTorch and ONNX Runtime), so its
    speed-ups are paired ratios with intervals, unmoved by trial order or by the drift of a long process.

    The first row is the teacher's network itself (no pruning, no quantization), timed against itself: its
    speed-up is 1 within the timing's noise. Deltas of macro-F1 are against it, on the same test texts (paired
    bootstrap); pruning is applied without any fine-tuning afterwards.
    """
    corpus, split = load_split(cfg, data)
    spec = resolve_model(cfg.teacher)
    teacher = prepare_teacher(spec, split, cfg.train, cfg.cache_dir, cfg.seed, log=say)
    tokenizer, fp32 = teacher.load_tokenizer(), teacher.load_network()
    length = cfg.train.max_length
    calibration = calibration_batches(encode(tokenizer, split.train.texts, length), tokenizer.pad_token_id)
    grid = [REFERENCE] + [(k, s) for k in kinds for s in schemes if (k, s) != REFERENCE]
    rows, reference = [], None
    with tempfile.TemporaryDirectory(prefix="bench-compression-") as tmp:
        torch_dir, onnx_dir = Path(tmp) / "teacher-torch", Path(tmp) / "teacher-onnx"
        export_bundle(copy.deepcopy(fp32), tokenizer, "onnx_fp32", onnx_dir, length, split.label_names)
        with closing(PairedTimer(torch_dir, onnx_dir, split.test.texts, cfg.measure)) as timer:
            for kind, scheme in grid:
                row = {"prune_kind": kind, "prune_ratio": 0.0 if kind == "none" else ratio, "scheme": scheme}
                model = copy.deepcopy(fp32)
                report = prune(model, PruneConfig(kind if kind != "none" else "l1_unstructured",
                                                  0.0 if kind == "none" else ratio))
                nonzero = nonzero_parameters(model)
                out = torch_dir if (kind, scheme) == REFERENCE else Path(tmp) / f"{kind}-{scheme}"
                try:
                    served = serve_and_measure(
                        model, tokenizer, QuantConfig(scheme), out, split, length, timer=timer,
                        calibration=calibration if SCHEMES[scheme].needs_calibration else None,
                        teacher_predictions=None if reference is None else reference["predictions"], seed=cfg.seed)
                except SchemeUnavailable as exc:
                    row["unavailable"] = str(exc)
                    say(f"[bench] {kind:>15} x {scheme:<18} unavailable: {exc}")
                    rows.append(row)
                    continue
                row.update(served.metrics(), runtime=served.servable.runtime, sparsity=report.sparsity,
                           nonzero_params=nonzero)
                if reference is None:
                    reference = {**row, "predictions": served.quality.predictions}
                    row.update(macro_f1_delta_vs_teacher=0.0, macro_f1_delta_vs_teacher_ci_low=0.0,
                               macro_f1_delta_vs_teacher_ci_high=0.0)
                row["throughput_ratio"] = row["throughput_per_s"] / reference["throughput_per_s"]
                row["size_ratio"] = reference["size_mb"] / row["size_mb"]
                row["compressed_size_ratio"] = reference["size_compressed_mb"] / row["size_compressed_mb"]
                say(f"[bench] {kind:>15} x {scheme:<18} macro-F1 {row['macro_f1']:.4f}  {row['latency_ms']:.3f} ms  "
                    f"{row['speedup_vs_teacher']:.2f}x ({row['speedup_vs_teacher_ci_low']:.2f}-"
                    f"{row['speedup_vs_teacher_ci_high']:.2f}), {row['timing_blocks']:.0f} blocks  "
                    f"{row['size_mb']:.2f} MB")
                rows.append(row)
    m = cfg.measure
    return {"teacher": spec.name, "data": corpus.source, "data_sha256": corpus.sha256, "test_examples": len(split.test),
            "threads": m.threads, "throughput_batch_size": m.throughput_batch_size, "prune_ratio": ratio,
            "paired_blocks": [m.paired_blocks, m.max_paired_blocks], "interval_tolerance": m.interval_tolerance,
            "machine": machine_facts(), "rows": rows}


def _ci(row: dict, key: str, fmt: str) -> str:
    return f"{row[key]:{fmt}} ({row[key + '_ci_low']:{fmt}} to {row[key + '_ci_high']:{fmt}})"


def table(result: dict) -> str:
    head = (f"{'pruning':>16} {'scheme':<18} {'runtime':<12} {'F1':>7} {'dF1 (95% CI)':>26} {'lat ms':>7} "
            f"{'speedup (95% CI)':>24} {'vs ONNX':>7} {'blocks':>6} {'thr x':>6} {'size x':>7} {'zip x':>6}")
    lines = [head, "-" * len(head)]
    for r in result["rows"]:
        label = f"{r['prune_kind']} {r['prune_ratio']:.0%}" if r["prune_kind"] != "none" else "none"
        if "unavailable" in r:
            lines.append(f"{label:>16} {r['scheme']:<18} unavailable: {r['unavailable']}")
            continue
        lines.append(f"{label:>16} {r['scheme']:<18} {r['runtime']:<12} {r['macro_f1']:7.4f} "
                     f"{_ci(r, 'macro_f1_delta_vs_teacher', '+.4f'):>26} {r['latency_ms']:7.3f} "
                     f"{_ci(r, 'speedup_vs_teacher', '.2f'):>24} {r['speedup_vs_teacher_onnx']:6.2f}x "
                     f"{r['timing_blocks']:6.0f} {r['throughput_ratio']:5.2f}x {r['size_ratio']:6.2f}x "
                     f"{r['compressed_size_ratio']:5.2f}x")
    lo, hi = result["paired_blocks"]
    lines.append(
        f"Against the teacher's fp32 network (first row) on {result['test_examples']} test texts, on "
        f"{result['machine']['cpu']}: dF1 = test macro-F1 difference with a paired bootstrap 95% interval; "
        f"speedup = median over {lo}-{hi} timing blocks of the paired batch-1 latency ratio teacher (PyTorch) / "
        f"artifact at {result['threads']} thread(s), with its distribution-free 95% interval; vs ONNX = the same "
        "against the teacher in its faster fp32 runtime; thr x = throughput at batch "
        f"{result['throughput_batch_size']} and {result['threads']} thread(s) against the first row's (not paired); "
        "size x = artifact bytes; zip x = deflate-compressed artifact bytes. A speed-up or dF1 is a finding only "
        "where its interval excludes 1 or 0.")
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
        if not 0 <= args.ratio < 1:
            raise UserError(f"--ratio {args.ratio}: expected a fraction in [0, 1)")
        kinds, schemes = names(args.kinds), names(args.schemes)
        unknown = [k for k in kinds if k not in PRUNERS] + [s for s in schemes if s not in SCHEMES]
        if unknown:
            raise UserError(f"unknown pruning kind or scheme: {', '.join(unknown)}")
        return run(cfg, data_path(args), args.ratio, kinds, schemes)

    return finish(compute, table, args.json_out)


if __name__ == "__main__":
    sys.exit(main())
