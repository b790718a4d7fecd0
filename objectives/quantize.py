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


class LogitsOnly(nn.Module):
    """A sequence classifier that returns a plain logits tensor, not a ModelOutput (what ONNX exports)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits


def example_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) to trace an export with: two rows, the second padded, so the mask path is
    exercised."""
    ids = torch.ones((2, 8), dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return ids, mask


# The TorchScript exporter (dynamo=False) is deprecated and kept on purpose, measured side by side with the dynamo
# exporter (python -m benchmarks.deprecated_apis; docs/deprecations.md): the dynamo exporter exports our networks
# correctly (logits within 7e-7 of PyTorch, pruned ones too, and ONNX Runtime's int8 works on its files), but takes
# 13-14 s per export against 1.2-1.4 s here (every ONNX trial exports once), and its files are 0.4-0.5 MB larger
# (int8 files 10-20%), which would move the size objective of new trials away from those already in a study.
def export_onnx(model: nn.Module, path: Path) -> Path:
    """Export a sequence classifier to ONNX (inputs input_ids and attention_mask, output logits)."""
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "logits": {0: "batch"}}
    with warnings.catch_warnings():
        # that deprecation, said twice (the exporter and its model-mode helper)
        warnings.filterwarnings("ignore", category=DeprecationWarning,
                                message="You are using the legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", category=DeprecationWarning, message="The feature will be removed")
        # transformers' mask code branches on shapes (is padding needed, is attention causal): for an encoder whose
        # mask is as long as its input both branches are fixed, so the trace holds for every batch and length
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning,
                                message="Converting a tensor to a Python boolean")
        warnings.filterwarnings("ignore", category=UserWarning,  # a note on how an op is translated
                                message="Exporting aten::index operator of advanced indexing")
        torch.onnx.export(LogitsOnly(model.eval()), example_inputs(), str(path),
                          input_names=["input_ids", "attention_mask"], output_names=["logits"], dynamic_axes=axes,
                          opset_version=17, dynamo=False)
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
    quantized = torch_dynamic_int8(model.eval())
    weights = out / "quantized_state_dict.pt"
    torch.save(quantized.state_dict(), weights)
    return TorchPredictor(quantized), (weights, _config_file(model, out))


# torch.ao.quantization is deprecated in favour of torchao and kept on purpose, measured side by side
# (python -m benchmarks.deprecated_apis; docs/deprecations.md): on CPU in PyTorch eager, torchao's int8 is slower at
# batch 1 than this on the same network in the same process: 21.5 ms (Int8DynamicActivationInt8WeightConfig) and
# 12.4 ms (Int8WeightOnlyConfig) against 6.9 ms (the scratch-base teacher at 1 thread; 50% pruned: 27.1 and 8.2
# against 7.1 ms), for the same size and macro-F1.
def torch_dynamic_int8(model: nn.Module) -> nn.Module:
    """``model`` with its nn.Linear layers int8 (weights; activations quantized on the fly), PyTorch's fbgemm
    kernels."""
    with warnings.catch_warnings():
        # that deprecation, and its twin from the quantized-tensor constructors it calls
        warnings.filterwarnings("ignore", category=DeprecationWarning, message="torch.ao.quantization is deprecated")
        warnings.filterwarnings("ignore", category=UserWarning,
                                message="torch.quantize_per_tensor, torch.quantize_per_channel and other quantized")
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


@register("onnx_fp32", "onnxruntime", "nothing: fp32 weights, served by ONNX Runtime")
def _onnx_fp32(model: nn.Module, out: Path, config: QuantConfig, calibration: Batches | None):
    path = export_onnx(model, out / "model.onnx")
    return OnnxPredictor(path), (path,)


@register("onnx_dynamic_int8", "onnxruntime",
          "MatMul/Gemm weights and embedding tables (Gather) int8, activations quantized on the fly")
def _onnx_dynamic(model: nn.Module, out: Path, config: QuantConfig, calibration: Batches | None):
    fp32 = export_onnx(model, out / "model.fp32.onnx")
    path = onnx_dynamic_int8(fp32, out / "model.onnx")
    fp32.unlink()
    return OnnxPredictor(path), (path,)


def onnx_dynamic_int8(fp32: Path, path: Path) -> Path:
    """ONNX Runtime's dynamic int8 quantization of the exported fp32 file ``fp32``, written to ``path``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8)
    return path


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
    if not calibration:
        raise ValueError("onnx_static_int8 needs calibration batches (training examples)")
    fp32 = export_onnx(model, out / "model.fp32.onnx")
    path = onnx_static_int8(fp32, out / "model.onnx", calibration, config.calibration)
    fp32.unlink()
    for leftover in out.glob("augmented_model*.onnx"):
        leftover.unlink()
    return OnnxPredictor(path), (path,)


def onnx_static_int8(fp32: Path, path: Path, calibration: Batches, method_name: str) -> Path:
    """ONNX Runtime's static int8 (QDQ) quantization of the exported fp32 file ``fp32``, activation ranges
    calibrated on ``calibration`` by ``method_name`` (one of CALIBRATION_METHODS), written to ``path``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    reader = _Reader(calibration)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[method_name]
    with contextlib.redirect_stdout(io.StringIO()):  # its entropy and percentile calibrators print() their progress
        quantize_static(str(fp32), str(path), reader, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul", "Gemm", "Gather"], per_channel=False,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method,
                        extra_options={"CalibMovingAverage": True})
    return path


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
