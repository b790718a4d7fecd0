"""Pruning kinds behind a registry: each is a name and one function that edits the model in place."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune


@dataclass(frozen=True)
class PruneConfig:
    kind: str  # a key of PRUNERS
    ratio: float  # fraction of weights removed per pruned layer, in [0, 1)

    def __post_init__(self) -> None:
        if self.kind not in PRUNERS:
            raise ValueError(f"unknown pruning kind {self.kind!r}; known: {', '.join(PRUNERS)}")
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"pruning ratio must be in [0, 1), got {self.ratio}")


@dataclass(frozen=True)
class PruneReport:
    layers: int  # encoder linear layers
    weights: int  # weights in those layers before pruning
    zeros: int  # weights that are zero afterwards
    removed: int = 0  # weights physically removed (structured pruning)

    @property
    def sparsity(self) -> float:
        """Fraction of the encoder's linear weights that are zero or gone."""
        return (self.zeros + self.removed) / self.weights if self.weights else 0.0


PRUNERS: dict[str, Callable[[nn.Module, float], PruneReport]] = {}


def register(name: str):
    def wrap(fn):
        PRUNERS[name] = fn
        return fn
    return wrap


def encoder_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The linear layers of the transformer encoder (not embeddings, pooler or classifier head)."""
    base = getattr(model, "base_model", model)
    encoder = getattr(base, "encoder", None) or getattr(base, "transformer", None) or base
    return [(name, m) for name, m in encoder.named_modules() if isinstance(m, nn.Linear)]


def _report(layers: list[tuple[str, nn.Linear]]) -> PruneReport:
    weights = sum(m.weight.numel() for _, m in layers)
    zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
    return PruneReport(len(layers), weights, zeros)


@register("none")
def _no_pruning(model: nn.Module, ratio: float) -> PruneReport:
    return _report(encoder_linears(model))


@register("l1_unstructured")
def _l1_unstructured(model: nn.Module, ratio: float) -> PruneReport:
    """Zero the ``ratio`` smallest-magnitude weights of every encoder linear layer, permanently."""
    layers = encoder_linears(model)
    with torch.no_grad():
        for _, module in layers:
            torch_prune.l1_unstructured(module, name="weight", amount=ratio)
            torch_prune.remove(module, "weight")  # bake the mask into the weight tensor
    return _report(layers)


def _bert_layers(model: nn.Module) -> list[nn.Module]:
    """The encoder layers of a BERT-style model (attention.self.query/key/value, intermediate, output)."""
    encoder = getattr(getattr(model, "base_model", model), "encoder", None)
    layers = list(getattr(encoder, "layer", []) or [])
    if not layers or not all(hasattr(layer, "attention") and hasattr(layer, "intermediate") for layer in layers):
        raise ValueError(f"structured pruning supports BERT-style encoders (encoder.layer[i].attention.self, "
                         f".intermediate, .output); {type(model).__name__} is not one")
    return layers


def _take(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A smaller copy of ``linear`` keeping output rows (dim 0) or input columns (dim 1) ``index``."""
    weight = linear.weight.detach().index_select(dim, index).clone()
    out_f, in_f = weight.shape
    new = nn.Linear(in_f, out_f, bias=linear.bias is not None, dtype=weight.dtype, device=weight.device)
    with torch.no_grad():
        new.weight.copy_(weight)
        if linear.bias is not None:
            new.bias.copy_(linear.bias.detach() if dim == 1 else linear.bias.detach()[index])
    return new


def _keep_heads(layer: nn.Module, heads: torch.Tensor) -> None:
    attn, out = layer.attention.self, layer.attention.output
    size = attn.attention_head_size
    index = torch.cat([torch.arange(h * size, (h + 1) * size) for h in heads.tolist()])
    attn.query, attn.key, attn.value = (_take(attn.query, index, 0), _take(attn.key, index, 0),
                                        _take(attn.value, index, 0))
    out.dense = _take(out.dense, index, 1)
    attn.num_attention_heads = len(heads)
    attn.all_head_size = len(heads) * size


def _keep_neurons(layer: nn.Module, neurons: torch.Tensor) -> None:
    layer.intermediate.dense = _take(layer.intermediate.dense, neurons, 0)
    layer.output.dense = _take(layer.output.dense, neurons, 1)


def _record_layout(model: nn.Module) -> None:
    """Write the per-layer head and FFN sizes into the config, so a saved model can be rebuilt."""
    layers = _bert_layers(model)
    model.config.pruned_layout = {"heads": [layer.attention.self.num_attention_heads for layer in layers],
                                  "intermediate": [layer.intermediate.dense.out_features for layer in layers]}


def apply_layout(model: nn.Module, layout: dict) -> None:
    """Shrink a freshly built model to a recorded layout (before loading the pruned weights into it)."""
    for layer, heads, neurons in zip(_bert_layers(model), layout["heads"], layout["intermediate"]):
        _keep_heads(layer, torch.arange(heads))
        _keep_neurons(layer, torch.arange(neurons))
    model.config.pruned_layout = layout


def _structured(model: nn.Module, ratio: float, heads: bool, ffn: bool) -> PruneReport:
    before = _report(encoder_linears(model))
    with torch.no_grad():
        for layer in _bert_layers(model):
            if heads:
                attn, out = layer.attention.self, layer.attention.output.dense
                n, size = attn.num_attention_heads, attn.attention_head_size
                keep = max(1, round(n * (1 - ratio)))
                score = torch.tensor([
                    sum(float(m.weight[h * size:(h + 1) * size].norm()) for m in (attn.query, attn.key, attn.value))
                    + float(out.weight[:, h * size:(h + 1) * size].norm()) for h in range(n)])
                _keep_heads(layer, score.topk(keep).indices.sort().values)
            if ffn:
                inner, outer = layer.intermediate.dense, layer.output.dense
                keep = max(1, round(inner.out_features * (1 - ratio)))
                score = inner.weight.norm(dim=1) * outer.weight.norm(dim=0)
                _keep_neurons(layer, score.topk(keep).indices.sort().values)
    _record_layout(model)
    after = _report(encoder_linears(model))
    return PruneReport(before.layers, before.weights, after.zeros, removed=before.weights - after.weights)


@register("heads")
def _heads(model: nn.Module, ratio: float) -> PruneReport:
    """Remove the ``ratio`` least important attention heads of every layer (importance: weight norms of the
    head's query/key/value rows and output columns); at least one head per layer stays."""
    return _structured(model, ratio, heads=True, ffn=False)


@register("ffn")
def _ffn(model: nn.Module, ratio: float) -> PruneReport:
    """Remove the ``ratio`` least important FFN neurons of every layer (importance: norm of the neuron's
    input row times norm of its output column)."""
    return _structured(model, ratio, heads=False, ffn=True)


@register("heads_ffn")
def _heads_ffn(model: nn.Module, ratio: float) -> PruneReport:
    """Heads and FFN neurons, both at ``ratio``."""
    return _structured(model, ratio, heads=True, ffn=True)


def prune(model: nn.Module, config: PruneConfig) -> PruneReport:
    """Apply ``config`` to ``model`` in place; a ratio of 0 leaves it unchanged."""
    if config.ratio == 0.0:
        return PRUNERS["none"](model, 0.0)
    return PRUNERS[config.kind](model, config.ratio)


def nonzero_parameters(model: nn.Module) -> int:
    """Non-zero entries over all floating-point parameters of a (not yet quantized) model."""
    return sum(int(torch.count_nonzero(p)) for p in model.parameters() if p.is_floating_point())
