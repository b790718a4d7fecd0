"""Shared fixtures: tiny data, a tiny trained model, temporary stores. Nothing touches the network."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# This session's own machine-wide timing lock: its studies time and train as in production, without waiting on
# another test session or benchmark that happens to run on the same machine.
os.environ.setdefault("STUDY_TIMING_LOCK_DIR", tempfile.mkdtemp(prefix="study-timing-lock-"))

UBMEC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ubmec" / "UBMEC.xlsx"


@pytest.fixture(scope="session")
def demo_split():
    from study.core.data import split_corpus
    from study.core.demo import demo_corpus

    return split_corpus(demo_corpus(), seed=3)


@pytest.fixture(scope="session")
def tokenizer_dir(demo_split, tmp_path_factory):
    from study.core.teacher import scratch_tokenizer

    return scratch_tokenizer(demo_split, tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def trained_tiny(demo_split, tokenizer_dir):
    """scratch-tiny trained with cross-entropy on the demo corpus (a few seconds on 2 cores)."""
    import torch.nn.functional as F

    from study.core.config import TrainSettings
    from study.core.models import ZOO, build_model, load_tokenizer
    from study.core.training import encode, fit

    spec = ZOO["scratch-tiny"]
    tok = load_tokenizer(spec, tokenizer_dir)
    model = build_model(spec, demo_split.label_names, vocab_size=len(tok), seed=0)
    settings = TrainSettings(max_epochs=4, patience=2, max_length=64)
    fit(model, train=encode(tok, demo_split.train.texts, 64), train_labels=demo_split.train.labels,
        validation=encode(tok, demo_split.validation.texts, 64), validation_labels=demo_split.validation.labels,
        loss_fn=lambda logits, labels, _i: F.cross_entropy(logits, labels), settings=settings,
        learning_rate=5e-4, pad_id=tok.pad_token_id, seed=0)
    return model, tok


@pytest.fixture()
def fresh_copy():
    """A deep copy of a model, so a test may prune or quantize it without touching the fixture."""
    import copy

    return copy.deepcopy
