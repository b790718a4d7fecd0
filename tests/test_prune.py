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
