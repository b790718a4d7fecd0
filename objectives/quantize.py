"""Quantization schemes behind a registry: each turns a model into a served, serialized artifact."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from onnxruntime.quantization import CalibrationDataReader
from torch import nn

from objectives.serving import OnnxPredictor, TorchPredictor

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


class SchemeUnavailable(RuntimeError):
    """This machine cannot run the scheme (the trial fails with this reason; fp32 is never measured instead)."""


@dataclass(frozen=True)
class QuantConfig:
    """Which scheme, and for static int8 how to calibrate (method, number of training examples)."""

    scheme: str
    calibration: str = "minmax"

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown quantization scheme {self.scheme!r}; known: {', '.join(SCHEMES)}")
        if self.calibration not in CALIBRATION_METHODS:
            raise ValueError(f"unknown calibration method {self.calibration!r}; known: {', '.join(CALIBRATION_METHODS)}")


Batches = Sequence[tuple[np.ndarray, np.ndarray]]  # (input_ids, attention_mask) pairs


@dataclass(frozen=True)
class Servable:
    """A compressed model as deployed: how to run it and which files make it up."""

    scheme: str
    predictor: TorchPredictor | OnnxPredictor
    files: tuple[Path, ...]
    quantizes: str  # what the scheme stores in low precision, in words

    @property
    def runtime(self) -> str:
        return self.predictor.runtime

    @property
    def size_bytes(self) -> int:
        """Bytes of the serialized artifact as deployed (dense: zeros from pruning still take space)."""
        return sum(f.stat().st_size for f in self.files)

    @property
    def compressed_bytes(self) -> int:
        """Bytes of the same files in a deflate zip: what unstructured sparsity saves with compression."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
            for f in self.files:
                archive.write(f, f.name)
        return buffer.getbuffer().nbytes


@dataclass(frozen=True)
class Scheme:
    name: str
    runtime: str
    quantizes: str
    build: Callable[..., tuple[TorchPredictor | OnnxPredictor, tuple[Path, ...]]]
    needs_calibration: bool = False
    unavailable: Callable[[], str | None] = lambda: None  # why this machine cannot serve it (None: it can)


def unavailable_schemes(schemes) -> dict[str, str]:
    """Which of ``schemes`` this machine cannot serve, each with the reason (checked before any trial)."""
    reasons = {name: SCHEMES[name].unavailable() for name in schemes if name in SCHEMES}
    return {name: why for name, why in reasons.items() if why}


SCHEMES: dict[str, Scheme] = {}


def register(name: str, runtime: str, quantizes: str, needs_calibration: bool = False,
             unavailable: Callable[[], str | None] | None = None):
    def wrap(fn):
        SCHEMES[name] = Scheme(name, runtime, quantizes, fn, needs_calibration, unavailable or (lambda: None))
        return fn
    return wrap


def export_onnx(model: nn.Module, path: Path) -> Path:
    """Export a sequence classifier to ONNX (inputs input_ids and attention_mask, output logits)."""
    model = model.eval()
    ids = torch.ones((2, 8), dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # trace with padding so the mask path is exercised
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "logits": {0: "batch"}}

    class _Logits(nn.Module):  # return a plain tensor, not a ModelOutput
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Logits(model), (ids, mask), str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["logits"], dynamic_axes=axes, opset_version=17, dynamo=False)
    return path


def _config_file(model: nn.Module, directory: Path) -> Path:
    path = directory / "config.json"
    path.write_text(model.config.to_json_string())
    return path


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 or AMX-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _bf16_unavailable() -> str | None:
    if cpu_supports_bf16():
        return None
    return ("bf16 needs a CPU with AVX512-BF16 or AMX-BF16; this CPU has neither, and emulated bf16 would not "
            "measure what a deployment gets")


@register("none", "pytorch", "nothing: fp32 weights, served by PyTorch")
def _fp32_torch(model: nn.Module, out: Path, config: QuantConfig, calibration: Batches | None):
    model.save_pretrained(str(out), safe_serialization=True)
    files = tuple(sorted(p for p in out.iterdir() if p.suffix in (".safetensors", ".json")))
    return TorchPredictor(model), files


@register("bf16", "pytorch", "all weights bf16 (embeddings included), bf16 arithmetic; served by PyTorch",
          unavailable=_bf16_unavailable)
def _bf16_torch(model: nn.Module, out: Path, config: QuantConfig, calibration: Batches | None):
    if (why := _bf16_unavailable()) is not None:
        raise SchemeUnavailable(why)
    model = model.to(torch.bfloat16)
    model.save_pretrained(str(out), safe_serialization=True)
    files = tuple(sorted(p for p in out.iterdir() if p.suffix in (".safetensors", ".json")))
    return TorchPredictor(model), files


@register("torch_dynamic_int8", "pytorch",
          "linear-layer weights int8 (activations quantized on the fly); embeddings and LayerNorm fp32")
def _torch_dynamic(model: nn.Module, out: Path, config: QuantConfig, calibration: Batches | None):
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated but still the eager int8 path
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8)
    weights = out / "quantized_state_dict.pt"
    torch.save(quantized.state_dict(), weights)
    return TorchPredictor(quantized), (weights, _config_file(model, out))


@register("onnx_fp32", "onnxruntime", "nothing: fp32 weights, served by ONNX Runtime")
def _onnx_fp32(model: nn.Module, out: Path, config: QuantConfig, calibration: Batches | None):
    path = export_onnx(model, out / "model.onnx")
    return OnnxPredictor(path), (path,)


@register("onnx_dynamic_int8", "onnxruntime",
          "MatMul/Gemm weights and embedding tables (Gather) int8, activations quantized on the fly")
def _onnx_dynamic(model: nn.Module, out: Path, config: QuantConfig, calibration: Batches | None):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = export_onnx(model, out / "model.fp32.onnx")
    path = out / "model.onnx"
    quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8)
    fp32.unlink()
    return OnnxPredictor(path), (path,)


class _Reader(CalibrationDataReader):
    """ONNX Runtime calibration data reader over (input_ids, attention_mask) batches."""

    def __init__(self, batches: Batches):
        self._items = iter([{"input_ids": ids, "attention_mask": mask} for ids, mask in batches])

    def get_next(self):
        return next(self._items, None)


@register("onnx_static_int8", "onnxruntime",
          "MatMul/Gemm/Gather weights and their activations int8 (QDQ), activation ranges calibrated on "
          "training examples", needs_calibration=True)
def _onnx_static(model: nn.Module, out: Path, config: QuantConfig, calibration: Batches | None):
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not calibration:
        raise ValueError("onnx_static_int8 needs calibration batches (training examples)")
    reader = _Reader(calibration)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[config.calibration]
    fp32 = export_onnx(model, out / "model.fp32.onnx")
    path = out / "model.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # its calibrators print()
        warnings.simplefilter("ignore")
        quantize_static(str(fp32), str(path), reader, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul", "Gemm", "Gather"], per_channel=False,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method,
                        extra_options={"CalibMovingAverage": True})
    fp32.unlink()
    for leftover in out.glob("augmented_model*.onnx"):
        leftover.unlink()
    return OnnxPredictor(path), (path,)


def quantize(model: nn.Module, config: QuantConfig | str, out: Path, calibration: Batches | None = None) -> Servable:
    """Apply ``config`` to ``model`` and write its deployable artifact into ``out`` (created)."""
    if isinstance(config, str):
        config = QuantConfig(config)
    out.mkdir(parents=True, exist_ok=True)
    spec = SCHEMES[config.scheme]
    predictor, files = spec.build(model, out, config, calibration)
    (out / "scheme.json").write_text(json.dumps({"scheme": config.scheme, "runtime": spec.runtime,
                                                 "quantizes": spec.quantizes, "calibration": config.calibration}))
    return Servable(config.scheme, predictor, files, spec.quantizes)
