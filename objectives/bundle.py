"""The deployable bundle a trial exports: write its metadata, load it back, predict with it.

A bundle is a folder::

    bundle.json       format, scheme, runtime, max_length, labels
    label_map.json    {"0": "anger", ...}
    model/            the serialized artifact (safetensors, int8 state dict, or model.onnx)
    tokenizer/        the Hugging Face tokenizer

Loading needs numpy, transformers (tokenizer) and onnxruntime or torch: no training code. Loading never
runs code from the bundle: weights are safetensors, ONNX, or for ``torch_dynamic_int8`` a ``torch.save``
state dict whose pickle is checked to name only tensor types before ``torch.load(weights_only=True)`` reads it;
a file carrying anything else (a pickled payload) is refused with :class:`UnsafeBundleError`.
"""

from __future__ import annotations

import json
import pickle
import pickletools
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from study.core.errors import UserError

FORMAT = "bert-compress-study-bundle"
VERSION = 1


class BundleError(Exception):
    """The folder is not a loadable bundle; the message says what is missing."""


class UnsafeBundleError(BundleError, UserError):
    """A bundle file would run code when loaded (a pickled payload): refused before anything in it runs."""


# The globals the pickle of a dynamically quantized model's state dict names (torch.save, protocol 2): its
# container, tensor and parameter rebuilders, the storages and quantization dtypes/schemes of int8 Linear
# layers (per tensor as quantize_dynamic writes them; per channel alike). Each only rebuilds tensors.
STATE_DICT_GLOBALS = frozenset({
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter", "torch._utils._rebuild_qtensor",
    "torch.FloatStorage", "torch.DoubleStorage", "torch.LongStorage", "torch.QInt8Storage",
    "torch.qint8", "torch.per_tensor_affine", "torch.per_channel_affine",
})
# Opcodes that name a callable other than by a plain GLOBAL: torch.save never writes them for a state dict
_OPAQUE_OPCODES = frozenset({"STACK_GLOBAL", "INST", "EXT1", "EXT2", "EXT4"})


def write_metadata(out: Path, *, scheme: str, runtime: str, quantizes: str, max_length: int,
                   labels: tuple[str, ...]) -> None:
    meta = {"format": FORMAT, "version": VERSION, "scheme": scheme, "runtime": runtime, "quantizes": quantizes,
            "max_length": max_length, "labels": list(labels), "preprocessing": "Unicode NFC, whitespace folded"}
    (out / "bundle.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
    (out / "label_map.json").write_text(json.dumps(dict(enumerate(labels)), indent=2, ensure_ascii=False))


@dataclass
class Bundle:
    directory: Path
    meta: dict
    tokenizer: object
    predictor: object

    @property
    def labels(self) -> list[str]:
        return self.meta["labels"]

    def predict_proba(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Class probabilities, one row per text, columns in ``labels`` order."""
        from study.core.textnorm import normalize_text

        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            chunk = [normalize_text(str(t)) for t in texts[start:start + batch_size]]
            enc = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.meta["max_length"],
                                 return_tensors="np", return_token_type_ids=False)
            logits = self.predictor.logits(enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64))
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            out[start:start + len(chunk)] = shifted / shifted.sum(axis=1, keepdims=True)
        return out

    def predict(self, texts: list[str], batch_size: int = 32) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(texts, batch_size).argmax(axis=1)]


def load_bundle(directory: str | Path, threads: int | None = None) -> Bundle:
    """Load a bundle folder; raise BundleError naming what is wrong if it is not one."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BundleError(f"{directory} is not a folder")
    meta_path = directory / "bundle.json"
    if not meta_path.exists():
        raise BundleError(f"{directory} is not a model bundle: bundle.json is missing "
                          "(export one with python -m study.export)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{meta_path} is not valid JSON: {exc}") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise BundleError(f"{meta_path}: unsupported bundle format {meta.get('format')!r} "
                          f"version {meta.get('version')!r}")
    for part in ("model", "tokenizer"):
        if not (directory / part).is_dir():
            raise BundleError(f"{directory} is not a complete bundle: the {part}/ folder is missing")
    threads = threads or 1
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(directory / "tokenizer"))
        predictor = _predictor(directory / "model", meta["scheme"], meta["runtime"], threads)
    except BundleError:
        raise
    except Exception as exc:
        raise BundleError(f"{directory}: the model could not be loaded: {exc}") from None
    return Bundle(directory, meta, tokenizer, predictor)


def _predictor(model_dir: Path, scheme: str, runtime: str, threads: int):
    from objectives.serving import OnnxPredictor, TorchPredictor

    if runtime == "onnxruntime":
        path = model_dir / "model.onnx"
        if not path.exists():
            raise BundleError(f"{model_dir}: model.onnx is missing")
        return OnnxPredictor(path, threads)
    if runtime != "pytorch":
        raise BundleError(f"{model_dir}: unknown runtime {runtime!r}")
    return TorchPredictor(load_torch_model(model_dir, scheme), threads)


def load_torch_model(model_dir: Path, scheme: str):
    """Rebuild a PyTorch bundle's model: config -> (pruned layout) -> (int8 modules) -> saved weights."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_config(config).eval()
    layout = getattr(config, "pruned_layout", None)
    if layout:
        from objectives.prune import apply_layout

        apply_layout(model, layout)
    if scheme == "torch_dynamic_int8":
        from objectives.quantize import torch_dynamic_int8

        model = torch_dynamic_int8(model)
        model.load_state_dict(load_int8_state_dict(model_dir / "quantized_state_dict.pt"))
        return model
    from safetensors.torch import load_file

    if scheme == "bf16":
        model = model.to(torch.bfloat16)
    model.load_state_dict(load_file(str(model_dir / "model.safetensors")))
    return model


def _refuse(path: Path, why: str) -> UnsafeBundleError:
    return UnsafeBundleError(f"{path} is refused: {why}; bundles are loaded without running any code from "
                             "them, so export the model again from its study (python -m study.export)")


def check_state_dict_pickle(path: Path) -> None:
    """Raise UnsafeBundleError unless ``path`` is a torch.save zip whose pickles name only STATE_DICT_GLOBALS.

    The pickles are read opcode by opcode (pickletools), never unpickled, so nothing in them runs."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = {name: archive.read(name) for name in archive.namelist() if name.endswith(".pkl")}
    except (zipfile.BadZipFile, OSError) as exc:
        raise _refuse(path, f"it is not a torch.save zip archive ({exc})") from None
    if not pickles:
        raise _refuse(path, "it holds no pickled state dict (data.pkl)")
    for name, data in pickles.items():
        try:
            for op, arg, _ in pickletools.genops(data):
                if op.name in _OPAQUE_OPCODES:
                    raise _refuse(path, f"its pickle {name} uses the opcode {op.name}, which can call any "
                                        "function and is never written for a state dict")
                if op.name == "GLOBAL":
                    qualified = str(arg).replace(" ", ".", 1)
                    if qualified not in STATE_DICT_GLOBALS:
                        raise _refuse(path, f"its pickle {name} calls {qualified}, which is not a tensor "
                                            "type: a pickled payload that loading would run")
        except ValueError as exc:  # pickletools: a malformed pickle
            raise _refuse(path, f"its pickle {name} is malformed ({exc})") from None


def load_int8_state_dict(path: Path) -> dict:
    """A torch_dynamic_int8 bundle's state dict, loaded without running code from the file: its pickle is
    checked first (check_state_dict_pickle), then read by torch's weights-only unpickler, which needs no
    extra safe globals for quantized tensors and refuses anything else again."""
    import torch

    if not path.exists():
        raise BundleError(f"{path.parent}: {path.name} is missing")
    check_state_dict_pickle(path)
    try:
        with warnings.catch_warnings():
            # torch rebuilds quantized (qint8) tensors through TypedStorage, which it deprecates: part of the
            # torch.ao int8 path kept on purpose (objectives/quantize.py torch_dynamic_int8; docs/deprecations.md)
            warnings.filterwarnings("ignore", category=UserWarning, message="TypedStorage is deprecated")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        why = next((line.split("error:", 1)[1].split(". Please use", 1)[0].strip()
                    for line in str(exc).splitlines() if "WeightsUnpickler error:" in line), "not tensors only")
        raise _refuse(path, f"torch's weights-only loader refused it ({why})") from None
