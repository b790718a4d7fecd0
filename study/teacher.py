"""Fine-tune a teacher once per (teacher, data, seed, settings) and cache it with its logits."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from study.config import SCRATCH_BASELINE_KD, TrainSettings
from study.data import DataSplit
from study.models import ModelSpec, build_model, load_tokenizer, train_wordpiece
from study.pretrain import mlm_pretrain
from study.tfidf import out_of_fold_logits
from study.training import encode, fit, kd_loss, macro_f1, torch_logits


@dataclass(frozen=True)
class TeacherArtifacts:
    """A trained teacher on disk and its cached logits on the train and validation parts."""

    name: str
    directory: Path  # model/ and tokenizer/ inside
    train_logits: np.ndarray
    validation_logits: np.ndarray
    validation_macro_f1: float
    cache_key: str
    from_cache: bool
    kd_from_baseline: float = 0.0  # the weight of KD from the TF-IDF model it was trained with

    @property
    def model_dir(self) -> Path:
        return self.directory / "model"

    @property
    def tokenizer_dir(self) -> Path:
        return self.directory / "tokenizer"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:16]


def _atomic_dir(final: Path, build) -> None:
    """Build a directory in a temporary sibling, then rename it into place (no half-written cache)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        build(tmp)
        if final.exists():  # another worker finished first: keep theirs
            shutil.rmtree(tmp)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def scratch_tokenizer(split: DataSplit, cache_dir: Path) -> Path:
    """The WordPiece tokenizer shared by scratch models, trained on the training part only."""
    key = _digest("wordpiece-v2", split.corpus_sha256, str(split.seed), str(len(split.train)))
    final = cache_dir / "tokenizers" / key
    if not (final / "tokenizer.json").exists():
        _atomic_dir(final, lambda tmp: train_wordpiece(split.train.texts, tmp))
    return final


def teacher_cache_key(spec: ModelSpec, split: DataSplit, settings: TrainSettings, seed: int) -> str:
    return _digest("teacher-v2", spec.key(), split.corpus_sha256, str(seed), str(len(split.train)),
                   str(len(split.validation)), str(len(split.test)), json.dumps(asdict(settings), sort_keys=True))


def teacher_settings(spec: ModelSpec, settings: TrainSettings) -> TrainSettings:
    """``settings`` with the teacher's defaults filled in: KD from the TF-IDF model (weight
    ``SCRATCH_BASELINE_KD``) for a teacher trained from scratch, none for a pretrained checkpoint."""
    if settings.baseline_kd_lambda is not None:
        return settings
    return replace(settings, baseline_kd_lambda=SCRATCH_BASELINE_KD if spec.from_scratch else 0.0)


def prepare_teacher(spec: ModelSpec, split: DataSplit, settings: TrainSettings, cache_dir: Path, seed: int,
                    log=print, progress: bool = False) -> TeacherArtifacts:
    """Load the cached teacher for this key, or fine-tune it and cache it."""
    settings = teacher_settings(spec, settings)
    key = teacher_cache_key(spec, split, settings, seed)
    final = cache_dir / "teachers" / f"{spec.name}-{key}"
    from_cache = (final / "meta.json").exists()
    if not from_cache:
        log(f"[teacher] fine-tuning {spec.name} once on {len(split.train)} training texts "
            f"(cached at {final}; later studies reuse it)")
        tokenizer_dir = scratch_tokenizer(split, cache_dir) if spec.from_scratch else None
        _atomic_dir(final, lambda tmp: _train_teacher(spec, split, settings, seed, tmp, tokenizer_dir, log, progress))
    else:
        log(f"[teacher] reusing cached {spec.name} from {final}")
    meta = json.loads((final / "meta.json").read_text())
    logits = np.load(final / "logits.npz")
    return TeacherArtifacts(name=spec.name, directory=final, train_logits=logits["train"],
                            validation_logits=logits["validation"],
                            validation_macro_f1=meta["validation_macro_f1"], cache_key=key, from_cache=from_cache,
                            kd_from_baseline=settings.baseline_kd_lambda)


def _teacher_loss(split: DataSplit, settings: TrainSettings, seed: int, log):
    """Cross-entropy, or with ``baseline_kd_lambda`` > 0 the KD loss (T = 1) towards the TF-IDF model's
    out-of-fold probabilities on the training texts (black-box KD from the stronger baseline)."""
    lam = settings.baseline_kd_lambda
    if not lam:
        return lambda logits, labels, _index: F.cross_entropy(logits, labels)
    log(f"[teacher] soft labels: TF-IDF out-of-fold probabilities on the training texts (lambda {lam})")
    soft = torch.from_numpy(out_of_fold_logits(split.train.texts, split.train.labels, seed))
    return lambda logits, labels, index: kd_loss(logits, labels, soft[torch.from_numpy(index)], 1.0, lam)


def _train_teacher(spec: ModelSpec, split: DataSplit, settings: TrainSettings, seed: int, out: Path,
                   tokenizer_dir: Path | None, log, progress: bool) -> None:
    tokenizer = load_tokenizer(spec, tokenizer_dir)
    model = build_model(spec, split.label_names, vocab_size=len(tokenizer), seed=seed)
    train = encode(tokenizer, split.train.texts, settings.max_length)
    validation = encode(tokenizer, split.validation.texts, settings.max_length)
    lr = settings.learning_rate_scratch if spec.from_scratch else settings.learning_rate_pretrained
    pretrain_seconds = 0.0
    if spec.from_scratch and settings.mlm_epochs > 0:
        log(f"[teacher] masked-LM pre-training of {spec.name} on the {len(train)} training texts")
        pretrain_seconds = mlm_pretrain(model, tokenizer, train, epochs=settings.mlm_epochs, learning_rate=lr,
                                        batch_size=settings.batch_size, weight_decay=settings.weight_decay,
                                        warmup_ratio=settings.warmup_ratio, seed=seed, log=log)
    result = fit(model, train=train, train_labels=split.train.labels, validation=validation,
                 validation_labels=split.validation.labels, loss_fn=_teacher_loss(split, settings, seed, log),
                 settings=settings, learning_rate=lr, pad_id=tokenizer.pad_token_id, seed=seed,
                 on_epoch=lambda e, f1: log(f"[teacher] epoch {e}: validation macro-F1 {f1:.4f}"),
                 progress="teacher epochs" if progress else None)
    train_logits = torch_logits(model, train, tokenizer.pad_token_id)
    validation_logits = torch_logits(model, validation, tokenizer.pad_token_id)
    model.save_pretrained(str(out / "model"))
    tokenizer.save_pretrained(str(out / "tokenizer"))
    np.savez(out / "logits.npz", train=train_logits, validation=validation_logits)
    meta = {"teacher": spec.name, "source": spec.source, "arch": spec.arch, "data_sha256": split.corpus_sha256,
            "seed": seed, "settings": asdict(settings), "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run, "train_seconds": round(result.seconds, 1),
            "mlm_pretrain_seconds": round(pretrain_seconds, 1),
            "validation_macro_f1": macro_f1(split.validation.labels, validation_logits.argmax(axis=1))}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    log(f"[teacher] done in {result.seconds:.0f}s: best epoch {result.best_epoch}, "
        f"validation macro-F1 {meta['validation_macro_f1']:.4f}")
