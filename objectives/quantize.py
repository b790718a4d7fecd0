"""Quantization schemes behind a registry: each turns a model into a served, serialized artifact."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from objectives.serving import OnnxPredictor, TorchPredictor


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
        return sum(f.stat().st_size for f in self.files)


@dataclass(frozen=True)
class Scheme:
    name: str
    runtime: str
    quantizes: str
    build: Callable[[nn.Module, Path], tuple[TorchPredictor | OnnxPredictor, tuple[Path, ...]]]


SCHEMES: dict[str, Scheme] = {}


def register(name: str, runtime: str, quantizes: str):
    def wrap(fn):
        SCHEMES[name] = Scheme(name, runtime, quantizes, fn)
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


@register("none", "pytorch", "nothing: fp32 weights, served by PyTorch")
def _fp32_torch(model: nn.Module, out: Path):
    model.save_pretrained(str(out), safe_serialization=True)
    files = tuple(sorted(p for p in out.iterdir() if p.suffix in (".safetensors", ".json")))
    return TorchPredictor(model), files


@register("torch_dynamic_int8", "pytorch",
          "linear-layer weights int8 (activations quantized on the fly); embeddings and LayerNorm fp32")
def _torch_dynamic(model: nn.Module, out: Path):
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated but still the eager int8 path
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8)
    weights = out / "quantized_state_dict.pt"
    torch.save(quantized.state_dict(), weights)
    return TorchPredictor(quantized), (weights, _config_file(model, out))


@register("onnx_fp32", "onnxruntime", "nothing: fp32 weights, served by ONNX Runtime")
def _onnx_fp32(model: nn.Module, out: Path):
    path = export_onnx(model, out / "model.onnx")
    return OnnxPredictor(path), (path,)


@register("onnx_dynamic_int8", "onnxruntime",
          "MatMul/Gemm weights and embedding tables (Gather) int8, activations quantized on the fly")
def _onnx_dynamic(model: nn.Module, out: Path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = export_onnx(model, out / "model.fp32.onnx")
    path = out / "model.onnx"
    quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8)
    fp32.unlink()
    return OnnxPredictor(path), (path,)


def quantize(model: nn.Module, scheme: str, out: Path) -> Servable:
    """Apply ``scheme`` to ``model`` and write its deployable artifact into ``out`` (created)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    out.mkdir(parents=True, exist_ok=True)
    spec = SCHEMES[scheme]
    predictor, files = spec.build(model, out)
    (out / "scheme.json").write_text(json.dumps({"scheme": scheme, "runtime": spec.runtime,
                                                 "quantizes": spec.quantizes}))
    return Servable(scheme, predictor, files, spec.quantizes)
