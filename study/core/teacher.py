"""Get a teacher once per (teacher, data, seed, settings): fine-tune it, or take an already fine-tuned
checkpoint as it is; cache it with its logits (and its TF-IDF member, when the teacher is a two-model ensemble)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import softmax

from study.core.atomic import atomic_dir
from study.core.config import SCRATCH_BASELINE_KD, TEACHER_FINETUNE, TrainSettings
from study.core.data import DataSplit
from study.core.errors import UserError
from study.core.models import (ModelSpec, build_model, checkpoint_identity, head_match, load_fitted, load_tokenizer,
                               train_wordpiece)
from study.core.pretrain import mlm_pretrain
from study.core.tfidf import load_pipeline, out_of_fold_logits, save_pipeline, tfidf_pipeline
from study.core.training import encode, fit, kd_loss, macro_f1, torch_logits


MEMBER_WEIGHTS = tuple(i / 10 for i in range(11))  # the TF-IDF member weights tried on validation
MEMBER_FILE = "tfidf.skops"  # the fitted member, in the skops format (a cache folder machines share: no pickle)


@dataclass(frozen=True)
class TeacherArtifacts:
    """A trained teacher on disk and its cached logits on the train and validation parts.

    The teacher is its network, or with ``tfidf_weight`` > 0 a two-model ensemble: the network's
    probabilities averaged with the TF-IDF model's (weight ``tfidf_weight``). The logits and
    ``validation_macro_f1`` are the teacher's as a whole (what students learn from); the network alone is
    the fp32 model that is compressed and timed.
    """

    name: str
    directory: Path  # model/ and tokenizer/ inside
    train_logits: np.ndarray
    validation_logits: np.ndarray
    validation_macro_f1: float
    cache_key: str
    from_cache: bool
    kd_from_baseline: float = 0.0  # the weight of KD from the TF-IDF model it was trained with
    network_validation_macro_f1: float | None = None  # None: the same as validation_macro_f1
    tfidf_weight: float = 0.0  # of the TF-IDF member; 0: the teacher is its network alone
    member_dir: Path | None = None  # the TF-IDF member (tfidf.skops, member.json), when there is one
    finetuned_here: bool = True  # False: an already fine-tuned checkpoint, used as it is

    @property
    def model_dir(self) -> Path:
        return self.directory / "model"

    @property
    def tokenizer_dir(self) -> Path:
        return self.directory / "tokenizer"

    @property
    def network_f1(self) -> float:
        """Validation macro-F1 of the network alone."""
        return self.validation_macro_f1 if self.network_validation_macro_f1 is None else self.network_validation_macro_f1

    def load_tokenizer(self):
        """The teacher's tokenizer, from its cache folder."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.tokenizer_dir))

    def load_network(self):
        """The teacher's fine-tuned network (fp32, in eval mode), from its cache folder."""
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(str(self.model_dir)).eval()

    def predictions(self, texts, max_length: int) -> np.ndarray:
        """The teacher's labels for ``texts`` (with its TF-IDF member, if it has one): what students learn from."""
        from study.core.training import encode, torch_logits

        tokenizer, model = self.load_tokenizer(), self.load_network()
        logits = torch_logits(model, encode(tokenizer, texts, max_length), tokenizer.pad_token_id)
        return self.blend(logits, texts).argmax(axis=1)

    def blend(self, network_logits: np.ndarray, texts) -> np.ndarray:
        """The teacher's log-probabilities on ``texts``, given its network's logits on them."""
        if not self.tfidf_weight:
            return network_logits
        member = load_pipeline(self.member_dir / MEMBER_FILE)
        return mix_log_probabilities(network_logits, member.predict_proba(list(texts)), self.tfidf_weight)


def mix_log_probabilities(network_logits: np.ndarray, tfidf_proba: np.ndarray, weight: float) -> np.ndarray:
    """log((1 - weight) * softmax(network_logits) + weight * tfidf_proba)."""
    mixed = (1.0 - weight) * softmax(network_logits, axis=1) + weight * tfidf_proba
    return np.log(np.clip(mixed, 1e-6, 1.0)).astype(np.float32)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:16]


def scratch_tokenizer(split: DataSplit, cache_dir: Path) -> Path:
    """The WordPiece tokenizer shared by scratch models, trained on the training part only."""
    key = _digest("wordpiece-v2", split.corpus_sha256, str(split.seed), str(len(split.train)))
    final = cache_dir / "tokenizers" / key
    if not (final / "tokenizer.json").exists():
        atomic_dir(final, lambda tmp: train_wordpiece(split.train.texts, tmp))
    return final


@dataclass(frozen=True)
class TeacherPlan:
    """How a study gets its teacher, decided before anything is written (see ``plan_teacher``)."""

    spec: ModelSpec
    finetune: bool  # True: fine-tuned here (then cached); False: an already fine-tuned checkpoint used as it is
    head: str = "new"  # what happens to its head: kept, reordered, reinitialised or new (models.HEAD_STATES)
    label_map: tuple[tuple[str, str], ...] = ()  # --label-map: checkpoint label -> corpus label
    checkpoint: str = ""  # models.checkpoint_identity; "" for a teacher built from scratch
    why: str = ""  # one line: what is done with the teacher and why

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.label_map)


def plan_teacher(spec: ModelSpec, label_names: tuple[str, ...], finetune: str = "auto",
                 label_map: dict[str, str] | None = None) -> TeacherPlan:
    """Whether to fine-tune ``spec`` here or use it as it is (``finetune``: auto, yes or no).

    A checkpoint whose sequence-classification head has the corpus's labels (``config.id2label`` names, after
    ``label_map``) is used as it is under auto and no, its outputs put in the corpus's label order; yes fine-tunes it
    from that head. A head matching some labels but not all, or a map that does not make it fit, is a UserError
    (never a silent reorder); so is ``no`` for a teacher that does not fit.
    """
    if finetune not in TEACHER_FINETUNE:
        raise UserError(f"--teacher-finetune must be one of {', '.join(TEACHER_FINETUNE)}, got {finetune!r}")
    if spec.from_teacher:
        raise UserError(f"--teacher {spec.name}: a student made of a teacher's layers cannot be the teacher")
    if spec.source is None:
        if finetune == "no" or label_map:
            flag = "--teacher-finetune no" if finetune == "no" else "--label-map"
            raise UserError(f"{flag}: teacher {spec.name} is built from scratch, so it has to be trained here; "
                            "give a fine-tuned checkpoint (a folder or hub id) as --teacher")
        return TeacherPlan(spec, True, why=f"{spec.name} is trained here from scratch")
    match = head_match(spec, label_names, label_map)
    plan = TeacherPlan(spec, finetune == "yes" or not match.fits, match.state if match.fits else
                       ("reinitialised" if match.trained else "new"), tuple(sorted((label_map or {}).items())),
                       checkpoint_identity(spec))
    corpus = ", ".join(label_names)
    if not match.fits and (finetune == "no" or label_map or (finetune == "auto" and match.shared)):
        advice = ("give --label-map FILE ({checkpoint label: corpus label}) to use it as it is, or --teacher-finetune "
                  "yes to fine-tune it here under a new head")
        raise UserError(f"teacher {spec.name} ({spec.source}) does not fit the corpus's labels ({corpus}): it has "
                        f"{match.describe()}. Labels are matched by name, never by position: {advice}")
    if not plan.finetune:
        return replace(plan, why=f"{spec.name} is used as it is, not trained again: {match.describe()}")
    head = {"kept": "from its own head", "reordered": "from its own head, put in the corpus's order",
            "reinitialised": "under a re-initialised head", "new": "under a new head"}[plan.head]
    reason = "--teacher-finetune yes" if match.fits else match.describe()
    return replace(plan, why=f"{spec.name} is fine-tuned here {head} for the corpus's {len(label_names)} labels "
                             f"({reason})")


def teacher_cache_key(spec: ModelSpec, split: DataSplit, settings: TrainSettings, seed: int,
                      plan: TeacherPlan | None = None) -> str:
    """The network's key; the TF-IDF member is cached inside the network's folder, under its own weight.

    A checkpoint's key holds its identity (content or hub commit), the label map and whether it is fine-tuned
    here; a checkpoint used as it is depends on no training setting but ``max_length``.
    """
    sizes = (str(len(split.train)), str(len(split.validation)), str(len(split.test)))
    if plan is not None and not plan.finetune:
        return _digest("teacher-as-is-v1", plan.checkpoint, json.dumps(plan.label_map), split.corpus_sha256,
                       str(seed), *sizes, str(settings.max_length))
    network = {k: v for k, v in asdict(settings).items() if k != "tfidf_member_weight"}
    checkpoint = () if plan is None or spec.from_scratch else ("checkpoint", plan.checkpoint,
                                                              json.dumps(plan.label_map), "fine-tuned here")
    return _digest("teacher-v2", spec.key(), split.corpus_sha256, str(seed), *sizes,
                   json.dumps(network, sort_keys=True), *checkpoint)


def teacher_settings(spec: ModelSpec, settings: TrainSettings) -> TrainSettings:
    """``settings`` with the teacher's defaults filled in: KD from the TF-IDF model (weight
    ``SCRATCH_BASELINE_KD``) and a TF-IDF member (weight chosen on validation: None stays) for a teacher
    trained from scratch; neither for a pretrained checkpoint."""
    if settings.baseline_kd_lambda is None:
        settings = replace(settings, baseline_kd_lambda=SCRATCH_BASELINE_KD if spec.from_scratch else 0.0)
    if settings.tfidf_member_weight is None and not spec.from_scratch:
        settings = replace(settings, tfidf_member_weight=0.0)
    return settings


def teacher_identity(spec: ModelSpec, split: DataSplit, settings: TrainSettings, seed: int,
                     plan: TeacherPlan | None = None) -> str:
    """What students of a study learn from, known before any training: the teacher's name, its network's
    cache key and its TF-IDF member's weight ("auto": chosen on validation; 0: none)."""
    settings = teacher_settings(spec, settings)
    weight = settings.tfidf_member_weight
    return (f"{spec.name}-{teacher_cache_key(spec, split, settings, seed, plan)}, "
            f"tfidf member {'auto' if weight is None else weight}")


def prepare_teacher(spec: ModelSpec, split: DataSplit, settings: TrainSettings, cache_dir: Path, seed: int,
                    log=print, progress: bool = False, plan: TeacherPlan | None = None,
                    device=None) -> TeacherArtifacts:
    """Load the cached teacher for this key, or make it on ``device`` (None: the CPU) — fine-tune it, or take it
    as it is: ``plan``, by default ``plan_teacher(spec, split.label_names)`` — and cache it."""
    plan = plan_teacher(spec, split.label_names) if plan is None else plan
    settings = teacher_settings(spec, settings)
    key = teacher_cache_key(spec, split, settings, seed, plan)
    final = cache_dir / "teachers" / f"{spec.name}-{key}"
    from_cache = (final / "meta.json").exists()
    if from_cache:
        log(f"[teacher] reusing cached {spec.name} from {final}")
    elif plan.finetune:
        log(f"[teacher] fine-tuning {spec.name} once on {len(split.train)} training texts "
            f"(cached at {final}; later studies reuse it)")
        tokenizer_dir = scratch_tokenizer(split, cache_dir) if spec.from_scratch else None
        atomic_dir(final, lambda tmp: _train_teacher(spec, split, settings, seed, tmp, tokenizer_dir, log, progress,
                                                      plan.labels, device))
    else:
        log(f"[teacher] {spec.name}, used as it is: its logits on the {len(split.train)} training and "
            f"{len(split.validation)} validation texts are computed once (cached at {final}; later studies reuse them)")
        atomic_dir(final, lambda tmp: _use_as_is(plan, split, settings, seed, tmp, log, device))
    meta = json.loads((final / "meta.json").read_text())
    logits = np.load(final / "logits.npz")
    network = TeacherArtifacts(name=spec.name, directory=final, train_logits=logits["train"],
                               validation_logits=logits["validation"],
                               validation_macro_f1=meta["validation_macro_f1"], cache_key=key, from_cache=from_cache,
                               kd_from_baseline=settings.baseline_kd_lambda if plan.finetune else 0.0,
                               finetuned_here=meta.get("finetuned_here", True))
    if settings.tfidf_member_weight == 0.0:
        return network
    member_dir = tfidf_member(network, split, settings.tfidf_member_weight, seed, log)
    member = json.loads((member_dir / "member.json").read_text())
    blended = np.load(member_dir / "logits.npz")
    return replace(network, train_logits=blended["train"], validation_logits=blended["validation"],
                   validation_macro_f1=member["validation_macro_f1"],
                   network_validation_macro_f1=network.validation_macro_f1, tfidf_weight=member["weight"],
                   member_dir=member_dir)


def tfidf_member(network: TeacherArtifacts, split: DataSplit, weight: float | None, seed: int, log=print) -> Path:
    """The cached TF-IDF member of ``network``'s ensemble, fitted on the training texts, with its weight
    (``weight``, or None: the one of ``MEMBER_WEIGHTS`` with the best validation macro-F1) and the
    ensemble's logits: on the training texts from the member's out-of-fold probabilities (honest soft
    labels), on the validation texts from the member fitted on all training texts."""
    name = "auto" if weight is None else f"{weight:g}"
    final = network.directory / f"tfidf-member-v2-{name}"  # v2: skops; v1 (tfidf-member-NAME) was a pickle
    if (final / "member.json").exists():
        member = json.loads((final / "member.json").read_text())
        log(f"[teacher] reusing its TF-IDF member (weight {member['weight']:g}): validation macro-F1 "
            f"{member['validation_macro_f1']:.4f}")
        return final
    old = network.directory / f"tfidf-member-{name}"
    if (old / "tfidf.pkl").exists():  # never unpickled: a cache miss
        log(f"[teacher] ignoring the old TF-IDF member in {old}: it is a pickle, which could run code when "
            "loaded; fitting it again and saving it without one")

    def build(tmp: Path) -> None:
        log(f"[teacher] fitting the TF-IDF member on the {len(split.train)} training texts")
        pipe = tfidf_pipeline(seed).fit(list(split.train.texts), split.train.labels)
        save_pipeline(pipe, tmp / MEMBER_FILE)
        validation = pipe.predict_proba(list(split.validation.texts))
        train = np.exp(out_of_fold_logits(split.train.texts, split.train.labels, seed))
        scores = {w: macro_f1(split.validation.labels,
                              mix_log_probabilities(network.validation_logits, validation, w).argmax(axis=1))
                  for w in MEMBER_WEIGHTS}
        chosen = max(scores, key=lambda w: (scores[w], -w)) if weight is None else weight  # ties: less TF-IDF
        mixed_validation = mix_log_probabilities(network.validation_logits, validation, chosen)
        np.savez(tmp / "logits.npz", train=mix_log_probabilities(network.train_logits, train, chosen),
                 validation=mixed_validation)
        f1 = macro_f1(split.validation.labels, mixed_validation.argmax(axis=1))
        member = {"weight": chosen, "chosen_on": "validation macro-F1" if weight is None else "given",
                  "validation_macro_f1": f1, "network_validation_macro_f1": network.validation_macro_f1,
                  "validation_macro_f1_by_weight": {f"{w:g}": v for w, v in scores.items()}}
        (tmp / "member.json").write_text(json.dumps(member, indent=2))
        log(f"[teacher] TF-IDF member weight {chosen:g} ({member['chosen_on']}): the ensemble's validation "
            f"macro-F1 {f1:.4f}, the network's alone {network.validation_macro_f1:.4f}")

    atomic_dir(final, build)
    return final


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
                   tokenizer_dir: Path | None, log, progress: bool, label_map: dict[str, str] | None = None,
                   device=None) -> None:
    tokenizer = load_tokenizer(spec, tokenizer_dir)
    model = build_model(spec, split.label_names, vocab_size=len(tokenizer), seed=seed, label_map=label_map)
    train = encode(tokenizer, split.train.texts, settings.max_length)
    validation = encode(tokenizer, split.validation.texts, settings.max_length)
    lr = settings.learning_rate_scratch if spec.from_scratch else settings.learning_rate_pretrained
    pretrain_seconds = 0.0
    if spec.from_scratch and settings.mlm_epochs > 0:
        log(f"[teacher] masked-LM pre-training of {spec.name} on the {len(train)} training texts")
        pretrain_seconds = mlm_pretrain(model, tokenizer, train, epochs=settings.mlm_epochs, learning_rate=lr,
                                        batch_size=settings.batch_size, weight_decay=settings.weight_decay,
                                        warmup_ratio=settings.warmup_ratio, seed=seed, log=log, device=device)
    result = fit(model, train=train, train_labels=split.train.labels, validation=validation,
                 validation_labels=split.validation.labels, loss_fn=_teacher_loss(split, settings, seed, log),
                 settings=settings, learning_rate=lr, pad_id=tokenizer.pad_token_id, seed=seed,
                 on_epoch=lambda e, f1: log(f"[teacher] epoch {e}: validation macro-F1 {f1:.4f}"),
                 progress="teacher epochs" if progress else None, device=device)
    train_logits = torch_logits(model, train, tokenizer.pad_token_id, device=device)
    validation_logits = torch_logits(model, validation, tokenizer.pad_token_id, device=device)
    model.save_pretrained(str(out / "model"))
    tokenizer.save_pretrained(str(out / "tokenizer"))
    np.savez(out / "logits.npz", train=train_logits, validation=validation_logits)
    meta = {"teacher": spec.name, "source": spec.source, "arch": spec.arch, "data_sha256": split.corpus_sha256,
            "finetuned_here": True, "label_map": label_map or {},
            "seed": seed, "settings": asdict(settings), "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run, "train_seconds": round(result.seconds, 1),
            "mlm_pretrain_seconds": round(pretrain_seconds, 1), "train_device": str(device or "cpu"),
            "validation_macro_f1": macro_f1(split.validation.labels, validation_logits.argmax(axis=1))}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    log(f"[teacher] done in {result.seconds:.0f}s: best epoch {result.best_epoch}, "
        f"validation macro-F1 {meta['validation_macro_f1']:.4f}")


def _use_as_is(plan: TeacherPlan, split: DataSplit, settings: TrainSettings, seed: int, out: Path, log,
               device=None) -> None:
    """Cache an already fine-tuned checkpoint as the teacher, untrained: its head put in the corpus's label order,
    its logits on the train and validation parts (computed on ``device``; None: the CPU)."""
    spec = plan.spec
    tokenizer = load_tokenizer(spec, None)
    model = load_fitted(spec, split.label_names, head_match(spec, split.label_names, plan.labels))
    train = encode(tokenizer, split.train.texts, settings.max_length)
    validation = encode(tokenizer, split.validation.texts, settings.max_length)
    train_logits = torch_logits(model, train, tokenizer.pad_token_id, device=device)
    validation_logits = torch_logits(model, validation, tokenizer.pad_token_id, device=device)
    model.save_pretrained(str(out / "model"))
    tokenizer.save_pretrained(str(out / "tokenizer"))
    np.savez(out / "logits.npz", train=train_logits, validation=validation_logits)
    meta = {"teacher": spec.name, "source": spec.source, "checkpoint": plan.checkpoint, "finetuned_here": False,
            "train_device": str(device or "cpu"),
            "head": plan.head, "label_map": plan.labels, "data_sha256": split.corpus_sha256, "seed": seed,
            "max_length": settings.max_length,
            "validation_macro_f1": macro_f1(split.validation.labels, validation_logits.argmax(axis=1))}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    log(f"[teacher] {spec.name} as it is: validation macro-F1 {meta['validation_macro_f1']:.4f} (no training epoch)")
