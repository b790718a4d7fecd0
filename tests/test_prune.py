import pytest
import torch

from objectives.prune import PruneConfig, encoder_linears, nonzero_parameters, prune


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_l1_unstructured_zeroes_ratio_of_every_encoder_linear(trained_tiny, fresh_copy, ratio):
    model, _ = trained_tiny
    model = fresh_copy(model)
    head_before = model.classifier.weight.detach().clone()
    before = nonzero_parameters(model)
    report = prune(model, PruneConfig("l1_unstructured", ratio))
    layers = encoder_linears(model)
    assert report.layers == len(layers) == 2 * 6  # 2 layers x (q, k, v, attn-out, ffn-in, ffn-out)
    assert report.removed == 0
    for _, layer in layers:
        zeros = float((layer.weight == 0).float().mean())
        assert zeros == pytest.approx(ratio, abs=0.01)
        assert not hasattr(layer, "weight_orig")  # made permanent, no re-parametrisation left
    assert report.sparsity == pytest.approx(ratio, abs=0.01)
    assert torch.equal(model.classifier.weight, head_before)  # the head is not pruned
    assert before - nonzero_parameters(model) == pytest.approx(report.zeros, rel=0.01)


def test_pruning_removes_the_smallest_magnitudes(trained_tiny, fresh_copy):
    model = fresh_copy(trained_tiny[0])
    _, first = encoder_linears(model)[0]
    w = first.weight.detach().abs().flatten().clone()
    prune(model, PruneConfig("l1_unstructured", 0.5))
    kept = first.weight.detach().abs().flatten()
    assert kept[kept > 0].min() >= w.sort().values[len(w) // 2 - 1]


def test_ratio_zero_changes_nothing_and_bad_configs_fail(trained_tiny, fresh_copy):
    model = fresh_copy(trained_tiny[0])
    before = nonzero_parameters(model)
    prune(model, PruneConfig("l1_unstructured", 0.0))
    assert nonzero_parameters(model) == before
    with pytest.raises(ValueError, match="unknown pruning kind"):
        PruneConfig("magic", 0.5)
    with pytest.raises(ValueError):
        PruneConfig("l1_unstructured", 1.0)


@pytest.mark.parametrize("kind", ["heads", "ffn", "heads_ffn"])
def test_structured_pruning_shrinks_shapes_and_still_predicts(trained_tiny, fresh_copy, demo_split, tmp_path, kind):
    import numpy as np

    from objectives.bundle import load_torch_model
    from objectives.measure import evaluate
    from objectives.quantize import quantize
    from objectives.serving import TorchPredictor
    from study.core.training import encode

    model, tok = trained_tiny
    model = fresh_copy(model)
    before = nonzero_parameters(model)
    report = prune(model, PruneConfig(kind, 0.5))
    for layer in model.bert.encoder.layer:
        heads = layer.attention.self.query.out_features // layer.attention.self.attention_head_size
        assert heads == (1 if kind != "ffn" else 2)  # scratch-tiny has 2 heads per layer
        assert layer.attention.output.dense.in_features == layer.attention.self.query.out_features
        assert layer.intermediate.dense.out_features == (256 if kind != "heads" else 512)
        assert layer.output.dense.in_features == layer.intermediate.dense.out_features
    assert nonzero_parameters(model) < before and report.removed > 0
    # per layer: attention 4 x 128 x 128 weights, FFN 2 x 128 x 512, so half of each is 1/6 or 1/3 of all
    assert report.sparsity == pytest.approx(0.5 if kind == "heads_ffn" else (1 / 6 if kind == "heads" else 1 / 3),
                                            abs=0.01)
    test = encode(tok, demo_split.test.texts, 64)
    quality = evaluate(TorchPredictor(model), test, demo_split.test.labels, tok.pad_token_id)
    assert quality.macro_f1 > 0.4  # still a classifier (chance is about 0.33)
    # The artifact records the layout, so the pruned model is rebuilt exactly from disk.
    servable = quantize(model, "none", tmp_path / "m")
    reloaded = load_torch_model(tmp_path / "m", "none")
    ids = np.array([test.ids[0]])
    mask = np.ones_like(ids)
    assert np.allclose(TorchPredictor(reloaded).logits(ids, mask), servable.predictor.logits(ids, mask), atol=1e-5)
    onnx = quantize(fresh_copy(model), "onnx_fp32", tmp_path / "o").predictor
    assert np.allclose(onnx.logits(ids, mask), servable.predictor.logits(ids, mask), atol=1e-4)


def test_structured_pruning_rejects_non_bert_layouts():
    with pytest.raises(ValueError, match="BERT-style encoders"):
        prune(torch.nn.Sequential(torch.nn.Linear(4, 4)), PruneConfig("heads", 0.5))
