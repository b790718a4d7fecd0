"""The frozen context a trial runs in, built once per teacher/student pair and passed down."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from objectives.timing import PairedTimer
from search_spaces import SearchSpace
from study.core.config import MeasureSettings, TrainSettings
from study.core.data import DataSplit
from study.core.models import ModelSpec
from study.core.teacher import TeacherArtifacts


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
        seed: base seed; trial seed = seed + trial number.
        workdir: where trial artifacts are written (one sub-folder per trial).
        device: where this worker distils (``cpu``, ``cuda:1``, ``mps``; see study.core.devices.worker_device);
            the distilled model comes back to the CPU to be pruned, quantized, exported and timed.
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
    timer: PairedTimer | None = None  # times exported bundles in a separate process (None: in this one)
    teacher_test_predictions: np.ndarray | None = None  # the teacher's on the test texts (for paired intervals)
    device: str = "cpu"  # where this worker distils

    def trial_seed(self, number: int) -> int:
        return self.seed + number

    def trial_dir(self, number: int) -> Path:
        return self.workdir / f"trial-{number:05d}"
