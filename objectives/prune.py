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
    layers: int  # layers pruned
    weights: int  # weights in those layers
    zeros: int  # weights that are zero afterwards

    @property
    def sparsity(self) -> float:
        return self.zeros / self.weights if self.weights else 0.0


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


def prune(model: nn.Module, config: PruneConfig) -> PruneReport:
    """Apply ``config`` to ``model`` in place; a ratio of 0 leaves it unchanged."""
    if config.ratio == 0.0:
        return PRUNERS["none"](model, 0.0)
    return PRUNERS[config.kind](model, config.ratio)


def nonzero_parameters(model: nn.Module) -> int:
    """Non-zero entries over all floating-point parameters of a (not yet quantized) model."""
    return sum(int(torch.count_nonzero(p)) for p in model.parameters() if p.is_floating_point())
