"""A trial's distilled student: loaded from the student cache, or distilled (and cached for later trials)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from objectives.context import TrialContext
from objectives.distill import DistillConfig, kd_loss_fn
from objectives.student_cache import MODEL_DIR, key_ingredients, student_key
from study.core.models import build_model, load_tokenizer, teacher_subset
from study.core.training import encode, fit


@dataclass(frozen=True)
class Student:
    """A distilled student (fp32, on the CPU, in eval mode) with its tokenizer and how it came to be."""

    tokenizer: Any
    model: Any
    metrics: dict[str, float]  # distill_validation_macro_f1, best_epoch, epochs_run, distill_seconds, distill_cache_hit
    tags: dict[str, str]  # distill_cache_hit ("true"/"false"), distill_seed


def distilled_student(ctx: TrialContext, kd: DistillConfig, seed: int, progress: str | None = None) -> Student:
    """``ctx.student`` distilled from ``ctx.teacher`` with ``kd`` and ``seed``: from ``ctx.student_cache`` when a
    trial (of any study or worker sharing the cache) distilled the same key before, else distilled now and
    cached. A hit loads the very weights its miss saved, and a miss reads them back from the cache too, so both
    give a trial the same numbers."""
    tokenizer = student_tokenizer(ctx)
    if ctx.student_cache is None:  # no cache (--distill-cache-gb 0): distil in memory, as every trial did before
        model, metrics = distil(ctx, tokenizer, kd, seed, progress)
        return _student(tokenizer, model, metrics, hit=False, seed=seed)
    ingredients = key_ingredients(teacher=ctx.teacher, student=ctx.student, temperature=kd.temperature,
                                  kd_lambda=kd.kd_lambda, seed=seed, train=ctx.train, split=ctx.split,
                                  device=ctx.device)

    def build(folder: Path) -> dict[str, float]:
        model, metrics = distil(ctx, tokenizer, kd, seed, progress)
        model.to("cpu").float().save_pretrained(str(folder / MODEL_DIR))
        return metrics

    with ctx.student_cache.open(student_key(ingredients), build, ingredients) as entry:
        model = load_student(entry.model_dir)
    metrics = {k: float(entry.meta[k]) for k in DISTILL_METRICS}
    return _student(tokenizer, model, metrics, hit=entry.hit, seed=seed)


DISTILL_METRICS = ("distill_validation_macro_f1", "best_epoch", "epochs_run", "distill_seconds")


def _student(tokenizer, model, metrics: dict[str, float], hit: bool, seed: int) -> Student:
    return Student(tokenizer, model, {**metrics, "distill_cache_hit": float(hit)},
                   {"distill_cache_hit": "true" if hit else "false", "distill_seed": str(seed)})


def student_tokenizer(ctx: TrialContext):
    """The student's tokenizer: the teacher's for a student made of its layers, else the student's own (the
    study's WordPiece one for scratch students); derived from the spec, never cached with the student."""
    if ctx.student.from_teacher:
        return ctx.teacher.load_tokenizer()
    return load_tokenizer(ctx.student, ctx.scratch_tokenizer_dir)


def distil(ctx: TrialContext, tokenizer, kd: DistillConfig, seed: int,
           progress: str | None = None) -> tuple[Any, dict[str, float]]:
    """Initialise ``ctx.student`` (seeded) and train it on the teacher's cached logits on ``ctx.device``,
    early-stopping on validation macro-F1; returns the model (back on the CPU, fp32) and its distillation metrics."""
    s = ctx.split
    if ctx.student.from_teacher:  # the teacher's own layers: its weights
        model = teacher_subset(ctx.teacher.model_dir, ctx.student.teacher_layers)
    else:
        model = build_model(ctx.student, s.label_names, vocab_size=len(tokenizer), seed=seed)
    train_enc = encode(tokenizer, s.train.texts, ctx.train.max_length)
    val_enc = encode(tokenizer, s.validation.texts, ctx.train.max_length)
    lr = ctx.train.learning_rate_scratch if ctx.student.from_scratch else ctx.train.learning_rate_pretrained
    result = fit(model, train=train_enc, train_labels=s.train.labels, validation=val_enc,
                 validation_labels=s.validation.labels, loss_fn=kd_loss_fn(ctx.teacher.train_logits, kd),
                 settings=ctx.train, learning_rate=lr, pad_id=tokenizer.pad_token_id, seed=seed, progress=progress,
                 device=ctx.device)
    return model, {"distill_validation_macro_f1": result.best_validation_macro_f1,
                   "best_epoch": float(result.best_epoch), "epochs_run": float(result.epochs_run),
                   "distill_seconds": result.seconds}


def load_student(model_dir: Path):
    """A cached student's model (fp32, eval mode)."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
