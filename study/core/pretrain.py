"""Masked-language-model pre-training of a scratch encoder on the study's training texts only."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from study.core.devices import as_device, autocast
from study.core.timing_lock import training_step
from study.core.training import Encoded, bucketed_batches, step, train_threads


def mlm_pretrain(model, tokenizer, texts: Encoded, *, epochs: int, learning_rate: float, batch_size: int,
                 weight_decay: float, warmup_ratio: float, seed: int, mask_probability: float = 0.15,
                 log=print, device=None) -> float:
    """Pre-train the encoder of ``model`` (a ``BertForSequenceClassification``) with BERT's masked-LM
    objective, then copy the encoder weights into it (its pooler and classifier stay as they were).

    Masking is transformers' ``DataCollatorForLanguageModeling`` (of the chosen tokens 80% [MASK], 10% a
    random token, 10% unchanged). Trains on ``device`` (None: the CPU; bf16 autocast on a CUDA GPU that has it);
    ``model`` stays where it is. Returns the seconds taken.
    """
    from transformers import BertForMaskedLM, DataCollatorForLanguageModeling, get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    torch.set_num_threads(train_threads())
    device = as_device(device)
    mlm = BertForMaskedLM(model.config).to(device)  # initialised on the CPU: the same weights on every device
    collate = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mask_probability, return_tensors="pt")
    rng = np.random.default_rng(seed)
    total = math.ceil(len(texts) / batch_size) * epochs
    optimizer = torch.optim.AdamW(mlm.parameters(), lr=learning_rate, weight_decay=weight_decay)
    schedule = get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * total), total)
    start = time.perf_counter()
    mlm.train()
    for epoch in range(1, epochs + 1):
        losses = []
        for index in bucketed_batches(texts, batch_size, rng):
            batch = collate([{"input_ids": texts.ids[i].tolist()} for i in index])
            batch = {k: batch[k].to(device, non_blocking=True) for k in ("input_ids", "attention_mask", "labels")}
            with training_step():  # waits while a study on this machine is timing an artifact
                with autocast(device):
                    loss = mlm(**batch).loss
                losses.append(step(loss, mlm, optimizer, schedule, f"masked-LM pre-training epoch {epoch}"))
        log(f"[teacher] masked-LM pre-training epoch {epoch}/{epochs}: loss {np.mean(losses):.3f}")
    missing, unexpected = model.bert.load_state_dict(mlm.bert.state_dict(), strict=False)  # copied to its device
    if unexpected or any(not key.startswith("pooler.") for key in missing):
        raise RuntimeError(f"masked-LM encoder does not match the classifier's: missing {missing}, "
                           f"unexpected {unexpected}")
    return time.perf_counter() - start
