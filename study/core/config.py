"""Typed settings of a study: defaults here, ``--quick`` overrides, CLI flags last."""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from study.core.budgets import Budgets
from study.core.data import Corpus, DataSplit, limit_part, split_corpus
from study.core.devices import DEVICES
from study.core.errors import UserError
from study.core.sources import DataSpec

KEEP_MODELS = ("pareto", "all", "none")  # which trials keep their model bundle in MLflow (--keep-models)
DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"
DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
DEFAULT_TEACHER = "scratch-base"
DEFAULT_STUDENTS = ("teacher-l2", "scratch-tiny")  # half of the teacher's own layers; the smallest scratch BERT
SAMPLERS = ("tpe", "nsga2", "random")
# --teacher-finetune: auto fine-tunes a teacher unless it is a checkpoint whose head already has the corpus's labels;
# yes always fine-tunes; no never does (a teacher whose head does not fit is refused)
TEACHER_FINETUNE = ("auto", "yes", "no")


SCRATCH_BASELINE_KD = 0.5  # the default teacher KD weight towards the TF-IDF model, for scratch teachers


@dataclass(frozen=True)
class TrainSettings:
    """How a model (teacher or student) is trained: the paper's recipe, scaled for CPUs."""

    max_epochs: int = 20  # the paper: up to 20 epochs
    patience: int = 3  # early stopping on validation macro-F1, the paper's patience
    batch_size: int = 32  # the paper used 8; 32 keeps 2 CPU cores busy
    max_length: int = 128  # tokens; UBMEC's median text is 15 words
    learning_rate_scratch: float = 5e-4  # for models initialised from scratch
    learning_rate_pretrained: float = 5e-5  # for fine-tuning pretrained checkpoints
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_train_examples: int | None = None  # None: the whole training part
    mlm_epochs: int = 0  # masked-LM pre-training epochs of a scratch teacher on the training texts
    # teacher loss weight of KD from the TF-IDF model's out-of-fold probabilities; None: SCRATCH_BASELINE_KD for
    # a teacher trained from scratch (measured: +4.6 macro-F1 points on UBMEC), 0 for a pretrained checkpoint
    baseline_kd_lambda: float | None = None
    # weight of the TF-IDF model's probabilities averaged into the teacher's (the teacher becomes a two-model
    # ensemble for KD); None: chosen on validation macro-F1 for a teacher trained from scratch, 0 for a
    # pretrained checkpoint
    tfidf_member_weight: float | None = None


@dataclass(frozen=True)
class MeasureSettings:
    """One latency/throughput protocol for every model (see objectives/measure.py)."""

    threads: int = 1  # intra-op threads of the serving runtime during timing
    warmup: int = 10  # untimed calls before timing, then one untimed pass over every timed input
    warmup_seconds: float = 1.0  # ... and the warm-up calls last at least this long
    latency_examples: int = 100  # test texts timed one by one at batch 1, in order
    repeats: int = 5  # timed passes over those texts (the CV across passes is reported); of throughput and
    #                   end-to-end latency: at most this many ...
    min_repeats: int = 3  # ... and at least this many, stopping as soon as their pass-to-pass CV <= stop_cv
    stop_cv: float = 0.03
    # a timed pass repeats whole sweeps over its inputs until it lasts this long; 0.25 s (0.5 s before #18): a block
    # of the paired timing then takes about 1.1 s instead of 1.8 s, its three passes lie closer together in time (the
    # ratio pairs better), and the paired ratio's interval was no wider (docs/metrics.md, "When timing stops")
    min_pass_seconds: float = 0.25
    max_cv: float = 0.10  # a measurement whose pass-to-pass CV exceeds this is taken again ...
    max_attempts: int = 3  # ... up to this many times in all; the steadiest attempt is reported
    throughput_batch_size: int = 32
    throughput_batches: int = 10
    fixed_length: int | None = None  # pad every timed input to this many tokens (None: real lengths)
    paired_blocks: int = 6  # blocks of (teacher, candidate, teacher in ONNX Runtime) passes in the timing process;
    #                         6 is the fewest whose min..max of paired ratios covers the median with >= 95%
    # more blocks, up to this many, while latency_vs_teacher's interval is wider than +- interval_tolerance of its
    # median (docs/metrics.md, "When timing stops"); 9, not 10 (before #18): the interval first drops the extremes at
    # 9 blocks (2nd..8th smallest, 96.1%), a 10th block does not narrow it further (2nd..9th), and blocks 7 and 8
    # can only widen min..max; +-15%, not 10%: at +-10% 31 of 40 full-setting trials ran to the cap, so the rule
    # cost 4 blocks per trial and still ended wider (about +-20%); the front's students differ by far more
    max_paired_blocks: int = 9
    interval_tolerance: float = 0.15
    timing_process_tasks: int = 10  # artifacts a timing process times before a fresh one replaces it

    def all_cores(self) -> MeasureSettings:
        """The same protocol at every core of this machine (reported beside the fixed-thread numbers)."""
        return replace(self, threads=max(1, os.cpu_count() or 1))


@dataclass(frozen=True)
class StudyConfig:
    """Everything one invocation of ``python -m study.run`` needs, resolved once."""

    objective: str = "pareto"
    data: Path | str | None = None  # a data file, a save_to_disk folder or a hub dataset id (see study.core.sources)
    text_col: str | None = None
    label_col: str | None = None
    data_config: str | None = None  # the hub dataset's config
    data_split: str | None = None  # the dataset split trained on
    validation_data: str | None = None  # a given validation part: a file, or a split of the --data dataset
    test_data: str | None = None  # a given test part, the same way
    teacher: str = DEFAULT_TEACHER
    teacher_finetune: str = "auto"  # one of TEACHER_FINETUNE
    label_map: Path | None = None  # --label-map: {checkpoint label: corpus label} of a fine-tuned teacher's head
    students: tuple[str, ...] = DEFAULT_STUDENTS
    n_trials: int = 20
    timeout: float | None = None
    study_name: str = "compression"
    storage: str = DEFAULT_STORAGE
    tracking_uri: str = DEFAULT_TRACKING_URI
    seed: int = 42
    # the sampler's base seed (None: ``seed``): another one searches again on the same split and teacher
    sampler_seed: int | None = None
    sampler: str = "tpe"  # beat random (4 of 5 seeds) and NSGA-II at 20 trials in benchmarks.samplers (README)
    space: str = "default"
    quick: bool = False
    cache_dir: Path = field(default_factory=lambda: default_cache_dir())
    train: TrainSettings = field(default_factory=TrainSettings)
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    test_size: float = 0.3  # the paper's 70/30 split
    # carved from the training part: early stopping and every choice of the search are made on it; 0.2 (about
    # 1,800 UBMEC texts) rather than 0.1: a trial's validation macro-F1 has about half the variance (it scales
    # as 1/n), so trials a point apart are told apart more often (measured in docs/results-ubmec.md)
    validation_size: float = 0.2
    max_failures: int | None = None  # consecutive failed trials before giving up; None: n_trials
    quiet: bool = False  # no progress bars, no per-trial lines
    keep_models: str = "pareto"  # model bundles logged to MLflow: pareto (dominated ones removed), all, none
    workers: int = 1  # processes sharing each pair study on this machine
    heartbeat_s: int = 20  # Optuna heartbeat; a trial silent for 3 beats is failed and retried once
    budgets: Budgets = field(default_factory=Budgets)  # constraints of the search; the front is among trials meeting them
    # where teachers and students train and bulk logits are computed (timing stays on the CPU); the CLI resolves
    # auto once (study.core.devices.resolve_device), worker i of a study takes GPU i mod the visible GPUs
    device: str = "auto"
    # distilled students kept under <cache_dir>/students for later trials (least recently used removed first);
    # 0: no cache, every trial distils (docs/distill-cache.md)
    distill_cache_gb: float = 5.0
    # trials per new distillation: after the first trial of a (T, lambda), K - 1 more are queued with that T and
    # lambda (the sampler draws the rest), which load its student from the cache; 1: none
    variants_per_distillation: int | str = "auto"  # K, or auto (docs/distill-cache.md)

    def __post_init__(self) -> None:
        if self.n_trials < 1:
            raise UserError(f"--n-trials must be at least 1, got {self.n_trials}")
        if self.timeout is not None and self.timeout <= 0:
            raise UserError(f"--timeout must be a positive number of seconds, got {self.timeout}")
        if self.teacher_finetune not in TEACHER_FINETUNE:
            raise UserError(f"--teacher-finetune must be one of {', '.join(TEACHER_FINETUNE)}, got {self.teacher_finetune!r}")
        if self.sampler not in SAMPLERS:
            raise UserError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if not self.students:
            raise UserError("--students needs at least one student model")
        if len(set(self.students)) != len(self.students):
            raise UserError(f"--students lists a model twice: {','.join(self.students)}")
        if not self.study_name or any(c in self.study_name for c in "/\\ "):
            raise UserError(f"--study-name must be a non-empty name without spaces or slashes, got {self.study_name!r}")
        if self.keep_models not in KEEP_MODELS:
            raise UserError(f"--keep-models must be pareto, all or none, got {self.keep_models!r}")
        if self.workers < 1:
            raise UserError(f"--workers must be at least 1, got {self.workers}")
        if not 0.05 <= self.validation_size <= 0.5:
            raise UserError(f"--validation-size must be a fraction in [0.05, 0.5], got {self.validation_size}")
        if self.heartbeat_s < 1:
            raise UserError(f"--heartbeat must be at least 1 second, got {self.heartbeat_s}")
        if self.measure.fixed_length is not None and self.measure.fixed_length < 2:
            raise UserError(f"--fixed-length must be at least 2 tokens, got {self.measure.fixed_length}")
        if self.device not in DEVICES:
            raise UserError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if not (self.distill_cache_gb >= 0 and math.isfinite(self.distill_cache_gb)):
            raise UserError(f"--distill-cache-gb must be 0 (no cache) or a positive size in GB, got "
                            f"{self.distill_cache_gb}")
        k = self.variants_per_distillation
        if not (k == "auto" or (isinstance(k, int) and not isinstance(k, bool) and k >= 1)):
            raise UserError(f"--variants-per-distillation must be auto or a whole number of at least 1 (1: none "
                            f"queued), got {k!r}")
        if self.measure.threads < 1:
            raise UserError(f"--threads must be at least 1, got {self.measure.threads}")

    @property
    def data_spec(self) -> DataSpec:
        """The data flags, to be read by ``study.core.sources.load_data``."""
        return DataSpec(source=None if self.data is None else str(self.data), config=self.data_config,
                        split=self.data_split, validation=self.validation_data, test=self.test_data,
                        text_col=self.text_col, label_col=self.label_col)


def quick_overrides(cfg: StudyConfig) -> StudyConfig:
    """Shrink training and measurement so a few-trial study runs in minutes on 2 CPU cores."""
    train = replace(cfg.train, max_epochs=3, patience=2, max_length=64, max_train_examples=3000)
    measure = replace(cfg.measure, warmup=10, warmup_seconds=0.25, latency_examples=40, repeats=5, throughput_batches=4,
                      min_pass_seconds=0.15)
    return replace(cfg, train=train, measure=measure)


def default_cache_dir() -> Path:
    """Teacher checkpoints and logits live here, outside the repository and ``shared/``."""
    env = os.environ.get("STUDY_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bert-compress-study"


def variants_count(text: str) -> int | str:
    """``--variants-per-distillation``: auto, or a whole number (checked, with the other flags, by StudyConfig)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a whole number, got {text!r}") from None


VARIANTS_HELP = ("after the first trial of a KD temperature and lambda, queue K-1 more trials with them (the sampler "
                 "draws pruning and quantization), which reuse its cached student; 1: none; auto: as many as fit in "
                 "the time its distillation took, at what that trial spent after it (at most 15)")


def add_variants_flag(p: argparse.ArgumentParser, note: str = "") -> None:
    """``--variants-per-distillation K|auto`` (default: the study's, auto), with ``note`` after its help."""
    p.add_argument("--variants-per-distillation", type=variants_count, default=StudyConfig.variants_per_distillation,
                   metavar="K|auto", help=VARIANTS_HELP + note)


def add_store_flags(p: argparse.ArgumentParser) -> None:
    """--study-name/--storage/--tracking-uri for the commands that read an existing study."""
    p.add_argument("--study-name", required=True, help="the --study-name given to study.run")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="Optuna storage URL")
    p.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI, help="MLflow tracking URI (also the registry)")


def study_split(corpus: Corpus, cfg: StudyConfig, seed: int | None = None) -> DataSplit:
    """The one split of a study: the parts given with the data as they are, the others drawn with ``seed``
    (the study's by default); the training part limited to ``cfg.train.max_train_examples``."""
    seed = cfg.seed if seed is None else seed
    split = split_corpus(corpus, seed=seed, test_size=cfg.test_size, validation_size=cfg.validation_size)
    return replace(split, train=limit_part(split.train, cfg.train.max_train_examples, seed))
