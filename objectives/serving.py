"""Runtimes that serve a compressed model: PyTorch eager and ONNX Runtime, one small interface."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class TorchPredictor:
    """Serve a PyTorch model (fp32 or dynamically quantized) with a fixed intra-op thread count."""

    runtime = "pytorch"

    def __init__(self, model, threads: int = 1):
        self.model = model.eval()
        self.threads = threads

    def set_threads(self, threads: int) -> None:
        self.threads = threads

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch  # imported here so that ONNX-only deployments need no PyTorch

        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            out = self.model(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask))
        return out.logits.float().numpy()


class OnnxPredictor:
    """Serve an ONNX file with ONNX Runtime's CPU provider, full graph optimisation, fixed threads."""

    runtime = "onnxruntime"

    def __init__(self, path: Path, threads: int = 1):
        self.path = Path(path)
        self.threads = threads
        self._session = self._make_session(threads)

    def _make_session(self, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Idle workers sleep instead of spin-waiting for the next operator: measured here at 2 threads and
        # batch 32, spinning made throughput flip between ~690 and ~430 examples/s for seconds at a time
        # (static int8); without it, 640-700 in every pass, and the other cores stay free between calls.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def set_threads(self, threads: int) -> None:
        if threads != self.threads:
            self._session = self._make_session(threads)
            self.threads = threads

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self._session.run(["logits"], {"input_ids": input_ids, "attention_mask": attention_mask})[0]
