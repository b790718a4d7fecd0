"""``python -m benchmarks.deprecated_apis``: the two deprecated PyTorch APIs the study uses, each side by side
with its replacement in one process, on the fp32 teacher's network and a 50% head+FFN-pruned copy of it: the
TorchScript ONNX exporter (``torch.onnx.export(..., dynamo=False)``) against the dynamo exporter, and
``torch.ao.quantization.quantize_dynamic`` against torchao's int8 configs. Rows: seconds to export, whether it
exports, test macro-F1, agreement with PyTorch fp32, batch-1 latency and size (and for the ONNX files the
same after ONNX Runtime's dynamic and static int8). The replacements need ``pip install -e ".[replacements]"``
(onnxscript, torchao); a missing one is reported, not fatal."""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import benchmark_parser, data_path, finish, in_fresh_process, load_split, study_config
from study.core.config import StudyConfig
from study.core.models import resolve_model
from study.core.teacher import prepare_teacher
from study.reporting.progress import say

PRUNING = ("heads_ffn", 0.5)


def _networks(cfg: StudyConfig, data: Path | None):
    """The split, the teacher's tokenizer, and {name: fp32 network}: the teacher and its pruned copy."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from objectives.prune import PruneConfig, prune

    _, split = load_split(cfg, data)
    teacher = prepare_teacher(resolve_model(cfg.teacher), split, cfg.train, cfg.cache_dir, cfg.seed, log=say)
    tokenizer = AutoTokenizer.from_pretrained(str(teacher.tokenizer_dir))
    fp32 = AutoModelForSequenceClassification.from_pretrained(str(teacher.model_dir)).eval()
    pruned = copy.deepcopy(fp32)
    prune(pruned, PruneConfig(*PRUNING))
    return split, tokenizer, {cfg.teacher: fp32, f"{cfg.teacher} pruned {PRUNING[0]} {PRUNING[1]:.0%}": pruned.eval()}


def _quality_and_speed(predictor, split, tokenizer, cfg: StudyConfig, reference_logits: np.ndarray | None) -> dict:
    """Test macro-F1, agreement with the fp32 network's logits, batch-1 latency and throughput (the study's
    protocol, objectives/measure.py)."""
    from objectives.measure import evaluate, measure_speed
    from study.core.training import encode, pad_batch

    test = encode(tokenizer, split.test.texts, cfg.train.max_length)
    quality = evaluate(predictor, test, split.test.labels, tokenizer.pad_token_id)
    ids, mask = pad_batch(test, np.arange(min(64, len(test))), tokenizer.pad_token_id)
    logits = predictor.logits(ids, mask)
    speed = measure_speed(predictor, test, tokenizer.pad_token_id, cfg.measure)
    row = {"macro_f1": quality.macro_f1, "latency_ms": speed.latency_ms, "latency_cv": speed.latency_cv,
           "throughput_per_s": speed.throughput_per_s, "logits": logits}
    if reference_logits is not None:
        row["max_abs_logit_diff"] = float(np.abs(logits - reference_logits).max())
        row["same_argmax"] = float((logits.argmax(axis=1) == reference_logits.argmax(axis=1)).mean())
    return row


def _attempt(row: dict, step) -> bool:
    """Run ``step()`` into ``row``; on failure note the error (its last line) and return False."""
    try:
        row.update(step())
        return True
    except Exception as exc:  # a replacement that cannot handle our model is a result, not a crash
        lines = str(exc).strip().splitlines()
        row["error"] = f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:300]
        return False


def export_dynamo(model, path: Path) -> Path:
    """The study's ONNX export (objectives.quantize.export_onnx) with the dynamo exporter instead: the same
    wrapper, example inputs, input and output names, dynamic batch and sequence axes; one self-contained file."""
    import torch

    from objectives.quantize import LogitsOnly, example_inputs

    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    shapes = {"input_ids": {0: batch, 1: sequence}, "attention_mask": {0: batch, 1: sequence}}
    torch.onnx.export(LogitsOnly(model.eval()).eval(), example_inputs(), str(path),
                      input_names=["input_ids", "attention_mask"], output_names=["logits"], dynamic_shapes=shapes,
                      opset_version=18, dynamo=True, external_data=False, verbose=False)
    return path


def onnx_rows(cfg: StudyConfig, data: Path | None) -> list[dict]:
    """Per network and exporter: the export, then ONNX Runtime fp32, dynamic int8 and static int8 on its file."""
    from objectives.quantize import export_onnx, onnx_dynamic_int8, onnx_static_int8
    from objectives.trial import calibration_batches
    from study.core.training import encode

    split, tokenizer, networks = _networks(cfg, data)
    calibration = calibration_batches(encode(tokenizer, split.train.texts, cfg.train.max_length),
                                      tokenizer.pad_token_id)
    exporters = {"torchscript": export_onnx, "dynamo": export_dynamo}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, network in networks.items():
            reference = _torch_reference(network, split, tokenizer, cfg)
            for exporter, export in exporters.items():
                folder = Path(tmp) / f"{len(rows)}"
                folder.mkdir()
                fp32 = folder / "model.fp32.onnx"
                row = {"model": name, "api": f"{exporter} export"}
                rows.append(row)
                if not _attempt(row, lambda: _timed_export(export, network, fp32)):
                    continue
                for scheme, build in (("fp32", lambda: fp32),
                                      ("dynamic int8", lambda: onnx_dynamic_int8(fp32, folder / "dynamic.onnx")),
                                      ("static int8", lambda: onnx_static_int8(fp32, folder / "static.onnx",
                                                                               calibration, "minmax"))):
                    served = {"model": name, "api": f"{exporter} -> onnxruntime {scheme}"}
                    rows.append(served)
                    _attempt(served, lambda: _served_onnx(build(), split, tokenizer, cfg, reference))
                    say(f"[bench] {name} {served['api']}: {_short(served)}")
    return rows


def _timed_export(export, network, path: Path) -> dict:
    start = time.perf_counter()
    export(network, path)
    return {"export_s": time.perf_counter() - start, "size_mb": path.stat().st_size / 1e6}


def _served_onnx(path: Path, split, tokenizer, cfg: StudyConfig, reference: np.ndarray) -> dict:
    from objectives.serving import OnnxPredictor

    return {**_quality_and_speed(OnnxPredictor(path), split, tokenizer, cfg, reference),
            "size_mb": path.stat().st_size / 1e6}


def _torch_reference(network, split, tokenizer, cfg: StudyConfig) -> np.ndarray:
    """The fp32 network's logits on the agreement batch (no timing)."""
    from objectives.serving import TorchPredictor
    from study.core.training import encode, pad_batch

    test = encode(tokenizer, split.test.texts, cfg.train.max_length)
    ids, mask = pad_batch(test, np.arange(min(64, len(test))), tokenizer.pad_token_id)
    return TorchPredictor(network).logits(ids, mask)


def _short(row: dict) -> str:
    if "error" in row:
        return row["error"]
    return (f"macro-F1 {row['macro_f1']:.4f}, max |logit diff| {row.get('max_abs_logit_diff', 0):.2e}, "
            f"{row['latency_ms']:.3f} ms, {row.get('size_mb', float('nan')):.2f} MB")


def eager_rows(cfg: StudyConfig, data: Path | None) -> list[dict]:
    """Per network: PyTorch fp32, torch.ao dynamic int8 (the study's torch_dynamic_int8) and torchao's int8
    configs, served by PyTorch eager; size = the saved state dict."""
    import torch
    from torch import nn

    from objectives.serving import TorchPredictor

    split, tokenizer, networks = _networks(cfg, data)

    def torchao(config_name: str):
        def apply(network):
            import torchao.quantization as tq

            tq.quantize_(network, getattr(tq, config_name)())
            return network
        return apply

    variants = {
        "fp32": lambda network: network,
        "torch.ao.quantization.quantize_dynamic": lambda network: torch.ao.quantization.quantize_dynamic(
            network, {nn.Linear}, dtype=torch.qint8),
        "torchao Int8DynamicActivationInt8WeightConfig": torchao("Int8DynamicActivationInt8WeightConfig"),
        "torchao Int8WeightOnlyConfig": torchao("Int8WeightOnlyConfig"),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, network in networks.items():
            reference = _torch_reference(network, split, tokenizer, cfg)
            for api, make in variants.items():
                row = {"model": name, "api": api}
                rows.append(row)
                weights = Path(tmp) / f"{len(rows)}.pt"

                def build(make=make, weights=weights):
                    start = time.perf_counter()
                    quantized = make(copy.deepcopy(network)).eval()
                    seconds = time.perf_counter() - start
                    torch.save(quantized.state_dict(), weights)
                    return {**_quality_and_speed(TorchPredictor(quantized), split, tokenizer, cfg, reference),
                            "quantize_s": seconds, "size_mb": weights.stat().st_size / 1e6}

                _attempt(row, build)
                say(f"[bench] {name} {api}: {_short(row)}")
    return rows


def run(cfg: StudyConfig, data: Path | None) -> dict:
    """Both families, each in a fresh process (PyTorch eager slows down over a long process)."""
    import torch

    rows = in_fresh_process(onnx_rows, cfg, data) + in_fresh_process(eager_rows, cfg, data)
    for row in rows:
        row.pop("logits", None)
    return {"teacher": cfg.teacher, "torch": torch.__version__, "threads": cfg.measure.threads,
            "versions": _versions(), "rows": rows}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "onnxruntime", "onnxscript", "torchao", "transformers"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def table(result: dict) -> str:
    head = (f"{'model':<34} {'api':<46} {'secs':>6} {'F1':>7} {'max|dlogit|':>11} {'argmax=':>7} "
            f"{'lat ms':>7} {'CV':>6} {'MB':>7}")
    lines = [head, "-" * len(head)]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"{r['model']:<34} {r['api']:<46} fails: {r['error']}")
            continue
        secs = r.get("export_s", r.get("quantize_s"))
        secs = f"{secs:6.1f}" if secs is not None else " " * 6
        if "macro_f1" not in r:
            lines.append(f"{r['model']:<34} {r['api']:<46} {secs}")
            continue
        lines.append(f"{r['model']:<34} {r['api']:<46} {secs} {r['macro_f1']:7.4f} "
                     f"{r.get('max_abs_logit_diff', 0.0):11.2e} {r.get('same_argmax', 1.0):7.1%} "
                     f"{r['latency_ms']:7.3f} {r['latency_cv']:6.1%} {r['size_mb']:7.2f}")
    lines.append(f"Batch-1 median latency at {result['threads']} thread(s), the study's protocol; max|dlogit| and "
                 "argmax= against the PyTorch fp32 network on 64 test texts; secs: export (ONNX) or quantize (eager); "
                 "MB: the ONNX file or the saved state dict. Versions: "
                 + ", ".join(f"{k} {v}" for k, v in result["versions"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = benchmark_parser("python -m benchmarks.deprecated_apis", __doc__).parse_args(argv)
    return finish(lambda: run(study_config(args), data_path(args)), table, args.json_out)


if __name__ == "__main__":
    raise SystemExit(main())
