import numpy as np
import pytest
import torch

from objectives.measure import evaluate
from objectives.quantize import SCHEMES, quantize
from objectives.serving import TorchPredictor
from study.core.training import encode, pad_batch


@pytest.fixture(scope="module")
def fp32_predictions(trained_tiny, demo_split):
    model, tok = trained_tiny
    test = encode(tok, demo_split.test.texts, 64)
    return evaluate(TorchPredictor(model), test, demo_split.test.labels, tok.pad_token_id).predictions


def _calibration(tok, demo_split):
    from objectives.trial import calibration_batches

    return calibration_batches(encode(tok, demo_split.train.texts, 64), tok.pad_token_id)


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_every_scheme_agrees_with_fp32(trained_tiny, fresh_copy, demo_split, fp32_predictions, tmp_path, scheme):
    from objectives.quantize import SchemeUnavailable, cpu_supports_bf16

    model, tok = trained_tiny
    if scheme == "bf16" and not cpu_supports_bf16():
        with pytest.raises(SchemeUnavailable, match="AVX512-BF16"):
            quantize(fresh_copy(model), scheme, tmp_path / scheme)
        return
    servable = quantize(fresh_copy(model), scheme, tmp_path / scheme, _calibration(tok, demo_split))
    test = encode(tok, demo_split.test.texts, 64)
    quality = evaluate(servable.predictor, test, demo_split.test.labels, tok.pad_token_id)
    agreement = float((quality.predictions == fp32_predictions).mean())
    assert agreement >= 0.9, f"{scheme}: only {agreement:.1%} of test predictions agree with fp32"
    assert servable.size_bytes == sum(f.stat().st_size for f in servable.files) > 0
    assert servable.runtime == SCHEMES[scheme].runtime


def test_int8_artifacts_are_smaller(trained_tiny, fresh_copy, demo_split, tmp_path):
    model, tok = trained_tiny
    schemes = ["none", "torch_dynamic_int8", "onnx_fp32", "onnx_dynamic_int8", "onnx_static_int8"]
    size = {s: quantize(fresh_copy(model), s, tmp_path / s, _calibration(tok, demo_split)).size_bytes for s in schemes}
    assert size["onnx_dynamic_int8"] < 0.4 * size["onnx_fp32"]
    assert size["onnx_static_int8"] < 0.4 * size["onnx_fp32"]
    assert size["torch_dynamic_int8"] < size["none"]


def test_static_int8_calibration_methods_differ_and_need_data(trained_tiny, fresh_copy, demo_split, tmp_path):
    from objectives.quantize import QuantConfig

    model, tok = trained_tiny
    with pytest.raises(ValueError, match="calibration batches"):
        quantize(fresh_copy(model), "onnx_static_int8", tmp_path / "none")
    blobs = {m: (quantize(fresh_copy(model), QuantConfig("onnx_static_int8", calibration=m), tmp_path / m,
                          _calibration(tok, demo_split)).files[0]).read_bytes() for m in ("minmax", "entropy", "percentile")}
    assert blobs["minmax"] != blobs["percentile"] and blobs["minmax"] != blobs["entropy"]  # the method really changes the calibrated ranges


def test_compressed_bytes_see_unstructured_zeros(trained_tiny, fresh_copy, tmp_path):
    from objectives.prune import PruneConfig, prune

    model, _ = trained_tiny
    dense = quantize(fresh_copy(model), "none", tmp_path / "dense")
    sparse_model = fresh_copy(model)
    prune(sparse_model, PruneConfig("l1_unstructured", 0.7))
    sparse = quantize(sparse_model, "none", tmp_path / "sparse")
    assert sparse.size_bytes == dense.size_bytes  # zeros are stored densely
    assert sparse.compressed_bytes < 0.9 * dense.compressed_bytes  # but they compress


def test_onnx_fp32_matches_pytorch_on_a_padded_batch(trained_tiny, fresh_copy, demo_split, tmp_path):
    model, tok = trained_tiny
    onnx = quantize(fresh_copy(model), "onnx_fp32", tmp_path / "o").predictor
    enc = encode(tok, demo_split.test.texts[:16], 64)
    ids, mask = pad_batch(enc, np.arange(16), tok.pad_token_id)
    assert mask.min() == 0  # really padded
    expected = TorchPredictor(model).logits(ids, mask)
    assert np.allclose(onnx.logits(ids, mask), expected, atol=1e-4)
    torch.set_num_threads(1)


def test_unknown_scheme(trained_tiny, tmp_path):
    with pytest.raises(ValueError, match="unknown quantization scheme"):
        quantize(trained_tiny[0], "int3", tmp_path)
