"""Fit a sequence classifier with a given loss, early-stopping on validation macro-F1."""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score

from study.core.devices import as_device, autocast
from study.core.timing_lock import training_step

if TYPE_CHECKING:
    from study.core.config import TrainSettings


@dataclass(frozen=True)
class Encoded:
    """Token ids of a list of texts, unpadded (batches are padded to their own longest text)."""

    ids: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.ids])


_ENCODED: OrderedDict[tuple, Encoded] = OrderedDict()  # this process's tokenized texts, most recent last
_ENCODED_KEEP = 16


def encode(tokenizer, texts: tuple[str, ...] | list[str], max_length: int) -> Encoded:
    """Token ids of ``texts``; tokenized once per (tokenizer, texts, max_length) in a process, so trials
    and pair studies after the first reuse them."""
    texts = tuple(texts)
    key = (str(getattr(tokenizer, "name_or_path", "")), type(tokenizer).__name__, len(tokenizer), max_length,
           len(texts), hash(texts))
    if key in _ENCODED:
        _ENCODED.move_to_end(key)
        return _ENCODED[key]
    out = tokenizer(list(texts), truncation=True, max_length=max_length, add_special_tokens=True,
                    return_attention_mask=False, return_token_type_ids=False)
    enc = Encoded(tuple(np.asarray(x, dtype=np.int64) for x in out["input_ids"]))
    if key[0]:  # only tokenizers loaded from a folder or hub id have a name to key on
        _ENCODED[key] = enc
        while len(_ENCODED) > _ENCODED_KEEP:
            _ENCODED.popitem(last=False)
    return enc


def pad_batch(enc: Encoded, index: np.ndarray, pad_id: int, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) for ``index``, padded to the longest of them (dynamic padding) or to
    ``width`` tokens."""
    rows = [enc.ids[i][:width] if width else enc.ids[i] for i in index]
    width = width or max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for k, r in enumerate(rows):
        ids[k, : len(r)] = r
        mask[k, : len(r)] = 1
    return ids, mask


def ordered_batches(n: int, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, n, batch_size):
        yield np.arange(start, min(start + batch_size, n))


def bucketed_batches(enc: Encoded, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of similar-length texts: less padding, same randomness across epochs."""
    order = rng.permutation(len(enc))
    lengths = enc.lengths()
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


_COMPUTE_THREADS: int | None = None


def set_compute_threads(n: int) -> None:
    """Threads for training and bulk inference in this process (workers split the cores)."""
    global _COMPUTE_THREADS
    _COMPUTE_THREADS = max(1, n)
    torch.set_num_threads(_COMPUTE_THREADS)


def train_threads() -> int:
    return _COMPUTE_THREADS or max(1, os.cpu_count() or 1)


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(array).to(device, non_blocking=True)


def forward(model, enc: Encoded, index: np.ndarray, pad_id: int, device: torch.device) -> torch.Tensor:
    """The model's logits (fp32) for the texts ``index`` of ``enc``, padded as one batch, on ``device`` (the
    forward pass under bf16 autocast where ``autocast`` says so)."""
    ids, mask = pad_batch(enc, index, pad_id)
    with autocast(device):
        logits = model(input_ids=to_device(ids, device), attention_mask=to_device(mask, device)).logits
    return logits.float()


@torch.inference_mode()
def torch_logits(model, enc: Encoded, pad_id: int, batch_size: int = 64, device=None) -> np.ndarray:
    """Logits (fp32) of a PyTorch model for every encoded text, in order, computed on ``device`` (None: where
    the model is; bf16 autocast on a CUDA GPU that has it); the model is left where it was."""
    home = model_device(model)
    device = home if device is None else as_device(device)
    model.to(device).eval()
    torch.set_num_threads(train_threads())
    order = np.argsort(enc.lengths(), kind="stable")  # sort by length for speed, then restore order
    out = np.zeros((len(enc), model.config.num_labels), dtype=np.float32)
    try:
        for batch in ordered_batches(len(order), batch_size):
            index = order[batch]
            with training_step():  # scoring loads the cores as training does: not while a study is timing
                out[index] = forward(model, enc, index, pad_id, device).cpu().numpy()
    finally:
        model.to(home)
    return out


def kd_loss(student_logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float, kd_lambda: float) -> torch.Tensor:
    """(1 - lambda) * CE(y, s) + lambda * T^2 * KL(softmax(t/T) || softmax(s/T)), batch mean (the teacher's
    logits are moved to the student's device)."""
    teacher_logits = teacher_logits.to(student_logits.device, non_blocking=True)
    ce = F.cross_entropy(student_logits, labels)
    kl = F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                  F.log_softmax(teacher_logits / temperature, dim=-1), reduction="batchmean", log_target=True)
    return (1.0 - kd_lambda) * ce + kd_lambda * temperature**2 * kl


def macro_f1(labels: np.ndarray, predictions: np.ndarray) -> float:
    return float(f1_score(labels, predictions, average="macro", zero_division=0))


def step(loss: torch.Tensor, model, optimizer, schedule, where: str) -> float:
    """One optimizer step on ``loss`` (gradients clipped to norm 1); a NaN or infinite loss raises
    FloatingPointError naming ``where``."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"training loss became {loss.item()} in {where}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    schedule.step()
    return loss.item()


@dataclass(frozen=True)
class TrainResult:
    best_validation_macro_f1: float
    best_epoch: int
    epochs_run: int
    seconds: float


LossFn = Callable[[torch.Tensor, torch.Tensor, np.ndarray], torch.Tensor]  # (logits, labels, train index)


def _optimizer(model, settings: TrainSettings, learning_rate: float, n_train: int):
    """AdamW and its linear warm-up/decay schedule over ``settings.max_epochs`` epochs of ``n_train`` texts."""
    from transformers import get_linear_schedule_with_warmup

    total = math.ceil(n_train / settings.batch_size) * settings.max_epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=settings.weight_decay)
    return optimizer, get_linear_schedule_with_warmup(optimizer, int(settings.warmup_ratio * total), total)


def fit(model, *, train: Encoded, train_labels: np.ndarray, validation: Encoded, validation_labels: np.ndarray,
        loss_fn: LossFn, settings: TrainSettings, learning_rate: float, pad_id: int, seed: int,
        on_epoch: Callable[[int, float], None] | None = None, progress: str | None = None,
        device=None) -> TrainResult:
    """Train with AdamW + linear warm-up/decay for up to ``settings.max_epochs`` epochs (``settings.patience``
    without improvement stop it); keep the best validation macro-F1 epoch's weights. A NaN/infinite loss raises
    FloatingPointError; ``progress`` names an epochs bar (on a terminal only). Trains on ``device`` (None: the CPU;
    bf16 autocast on a CUDA GPU that has it) and hands the model back on the CPU, in fp32 and eval mode."""
    from tqdm import tqdm

    device = as_device(device)
    torch.manual_seed(seed)
    torch.set_num_threads(train_threads())
    rng = np.random.default_rng(seed)
    model.to(device)
    optimizer, schedule = _optimizer(model, settings, learning_rate, len(train))
    labels_t = to_device(train_labels, device)
    best_f1, best_epoch, best_state, stale = -1.0, 0, None, 0
    start = time.perf_counter()
    epoch = 0
    bar = tqdm(total=settings.max_epochs, desc=progress, unit="epoch", leave=False, file=sys.stderr,
               disable=None if progress else True, dynamic_ncols=True)
    try:
        for epoch in range(1, settings.max_epochs + 1):
            model.train()
            for index in bucketed_batches(train, settings.batch_size, rng):
                with training_step():  # waits while a study on this machine is timing an artifact
                    logits = forward(model, train, index, pad_id, device)
                    step(loss_fn(logits, labels_t[to_device(index, device)], index), model, optimizer, schedule,
                         f"epoch {epoch}")
            f1 = macro_f1(validation_labels, torch_logits(model, validation, pad_id).argmax(axis=1))
            bar.update(1)
            bar.set_postfix(val_f1=f"{f1:.4f}")
            if on_epoch is not None:
                on_epoch(epoch, f1)
            if f1 > best_f1:
                best_f1, best_epoch, stale = f1, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
                if stale >= settings.patience:
                    break
        if best_state is not None:
            model.load_state_dict(best_state)
    finally:
        bar.close()
        model.to("cpu").eval()  # saved, pruned, quantized, exported and timed on the CPU
    return TrainResult(best_f1, best_epoch, epoch, time.perf_counter() - start)
