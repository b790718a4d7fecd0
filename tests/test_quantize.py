import numpy as np
import pytest
import torch

from objectives.measure import evaluate
from objectives.quantize import SCHEMES, quantize
from objectives.serving import TorchPredictor
from study.training import encode, pad_batch


@pytest.fixture(scope="module")
def fp32_predictions(trained_tiny, demo_split):
    model, tok = trained_tiny
    test = encode(tok, demo_split.test.texts, 64)
    return evaluate(TorchPredictor(model), test, demo_split.test.labels, tok.pad_token_id).predictions


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_every_scheme_agrees_with_fp32(trained_tiny, fresh_copy, demo_split, fp32_predictions, tmp_path, scheme):
    model, tok = trained_tiny
    servable = quantize(fresh_copy(model), scheme, tmp_path / scheme)
    test = encode(tok, demo_split.test.texts, 64)
    quality = evaluate(servable.predictor, test, demo_split.test.labels, tok.pad_token_id)
    agreement = float((quality.predictions == fp32_predictions).mean())
    assert agreement >= 0.9, f"{scheme}: only {agreement:.1%} of test predictions agree with fp32"
    assert servable.size_bytes == sum(f.stat().st_size for f in servable.files) > 0
    assert servable.runtime == SCHEMES[scheme].runtime


def test_int8_artifacts_are_smaller(trained_tiny, fresh_copy, tmp_path):
    model, _ = trained_tiny
    size = {s: quantize(fresh_copy(model), s, tmp_path / s).size_bytes for s in SCHEMES}
    assert size["onnx_dynamic_int8"] < 0.4 * size["onnx_fp32"]
    assert size["torch_dynamic_int8"] < size["none"]


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
