"""A machine-wide lock that a timing holds alone and training steps share, so no timing overlaps training.

"Training steps" are every stretch of heavy compute a study does besides timing: optimizer steps, scoring
batches (validation each epoch, teacher logits, the served artifact on validation and test) and an artifact's
export with its calibration.

Two flock files make it, without starving the timing: a timing first takes the gate exclusively (training
steps only pass the gate briefly), then waits for the steps in flight to finish (the work lock). The kernel
releases flock locks when a process dies, so a killed worker never leaves the machine locked.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

LOCK_DIR_ENV = "STUDY_TIMING_LOCK_DIR"  # machine-wide by default: every study on this machine shares it


_files: dict[str, int] = {}


def _lock_fd(name: str) -> int:
    directory = Path(os.environ.get(LOCK_DIR_ENV) or tempfile.gettempdir())
    path = str(directory / f"bert-compress-study-timing.{name}.lock")
    if path not in _files:
        directory.mkdir(parents=True, exist_ok=True)  # a $STUDY_TIMING_LOCK_DIR not made yet is made, not a crash
        _files[path] = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    return _files[path]


@contextmanager
def _held(fd: int, mode: int):
    fcntl.flock(fd, mode)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


@contextmanager
def timing_exclusive():
    """Held while timing: no training step of any study on this machine runs meanwhile."""
    gate, work = _lock_fd("gate"), _lock_fd("work")
    with _held(gate, fcntl.LOCK_EX), _held(work, fcntl.LOCK_EX):
        yield


@contextmanager
def training_step():
    """Held around one training step (or scoring batch, or export): waits while any process on this machine is
    timing. Not re-entrant: never nest two."""
    gate, work = _lock_fd("gate"), _lock_fd("work")
    with _held(gate, fcntl.LOCK_SH):  # the gate only orders entry: a waiting timer blocks new steps
        fcntl.flock(work, fcntl.LOCK_SH)
    try:
        yield
    finally:
        fcntl.flock(work, fcntl.LOCK_UN)
