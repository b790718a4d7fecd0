"""Knowledge distillation from cached teacher logits (black-box KD, the paper's loss)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from study.errors import UserError


@dataclass(frozen=True)
class DistillConfig:
    """KD temperature T > 0 and weight lambda in [0, 1] of the soft-label term."""

    temperature: float
    kd_lambda: float

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise UserError(f"KD temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.kd_lambda <= 1.0:
            raise UserError(f"KD lambda must be in [0, 1], got {self.kd_lambda}")


def kd_loss(student_logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float, kd_lambda: float) -> torch.Tensor:
    """(1 - lambda) * CE(y, s) + lambda * T^2 * KL(softmax(t/T) || softmax(s/T)), batch mean."""
    ce = F.cross_entropy(student_logits, labels)
    kl = F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                  F.log_softmax(teacher_logits / temperature, dim=-1), reduction="batchmean", log_target=True)
    return (1.0 - kd_lambda) * ce + kd_lambda * temperature**2 * kl


def kd_loss_fn(teacher_train_logits: np.ndarray, config: DistillConfig):
    """A training loss that looks up the cached teacher logits of each batch by its train index."""
    teacher = torch.from_numpy(np.ascontiguousarray(teacher_train_logits, dtype=np.float32))

    def loss(logits: torch.Tensor, labels: torch.Tensor, index: np.ndarray) -> torch.Tensor:
        return kd_loss(logits, labels, teacher[torch.from_numpy(np.asarray(index))], config.temperature,
                       config.kd_lambda)

    return loss
