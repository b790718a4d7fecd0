"""Knowledge distillation from cached teacher logits (black-box KD, the paper's loss)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from study.core.errors import UserError
from study.core.training import kd_loss


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


def kd_loss_fn(teacher_train_logits: np.ndarray, config: DistillConfig):
    """A training loss that looks up the cached teacher logits of each batch by its train index."""
    teacher = torch.from_numpy(np.ascontiguousarray(teacher_train_logits, dtype=np.float32))

    def loss(logits: torch.Tensor, labels: torch.Tensor, index: np.ndarray) -> torch.Tensor:
        return kd_loss(logits, labels, teacher[torch.from_numpy(np.asarray(index))], config.temperature,
                       config.kd_lambda)

    return loss
