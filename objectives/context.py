"""The frozen context a trial runs in, built once per teacher/student pair and passed down."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from objectives.student_cache import StudentCache
from objectives.timing import PairedTimer
from search_spaces import SearchSpace
from study.core.config import MeasureSettings, TrainSettings
from study.core.data import DataSplit
from study.core.models import ModelSpec
from study.core.teacher import TeacherArtifacts


DISTILL_SEED_RULES = ("study_seed", "trial_seed")  # see TrialContext.distill_seed


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial reads; nothing in it is changed by a trial.

    Attributes:
        study_name: the Optuna study of this pair, ``<study-name>.<teacher>.<student>``.
        split: train (possibly limited by --quick), validation and test parts.
        teacher: the cached teacher and its logits, aligned with ``split.train``/``split.validation``.
        student: the student architecture or checkpoint to distil into; None compresses the teacher.
        scratch_tokenizer_dir: the WordPiece tokenizer of scratch models (None if not needed).
        space: the search space the trial samples from.
        seed: base seed; trial seed = seed + trial number (pruning, quantization, bootstrap); the distillation
            seed is ``distill_seed(trial number)``.
        workdir: where trial artifacts are written (one sub-folder per trial).
        device: where this worker distils (``cpu``, ``cuda:1``, ``mps``; see study.core.devices.worker_device);
            the distilled model comes back to the CPU to be pruned, quantized, exported and timed.
        student_cache: distilled students shared by trials (None: every trial distils its own).
        distill_seed_rule: ``study_seed`` or, for a study started before #18, ``trial_seed``.
    """

    study_name: str
    split: DataSplit
    teacher: TeacherArtifacts
    student: ModelSpec | None  # None: compress the teacher itself (no distillation)
    scratch_tokenizer_dir: Path | None
    space: SearchSpace
    train: TrainSettings
    measure: MeasureSettings
    seed: int
    workdir: Path
    data_facts: MappingProxyType  # str -> str, logged with every run
    show_progress: bool = False  # an epochs bar while distilling (on a terminal only)
    timer: PairedTimer | None = None  # times exported bundles in a separate process (a trial needs one)
    teacher_test_predictions: np.ndarray | None = None  # the teacher's on the test texts (for paired intervals)
    device: str = "cpu"  # where this worker distils
    student_cache: StudentCache | None = None  # None: no cache (--distill-cache-gb 0)
    distill_seed_rule: str = "study_seed"  # see distill_seed

    def __post_init__(self) -> None:
        if self.distill_seed_rule not in DISTILL_SEED_RULES:
            raise ValueError(f"distill_seed_rule must be one of {DISTILL_SEED_RULES}, got {self.distill_seed_rule!r}")

    def trial_seed(self, number: int) -> int:
        return self.seed + number

    def distill_seed(self, number: int) -> int:
        """The seed a trial distils with. Since #18 the study's seed, not the trial seed: trials that share the
        student, T and lambda then share one distilled student (one cache entry), and differ only after training
        (pruning, quantization and the bootstrap keep the trial seed). A study started before that keeps the
        rule it was started with (``distill_seed_rule`` "trial_seed", recorded on the study)."""
        return self.seed + number if self.distill_seed_rule == "trial_seed" else self.seed

    def trial_dir(self, number: int) -> Path:
        return self.workdir / f"trial-{number:05d}"
