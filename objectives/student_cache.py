"""Distilled students on disk, keyed by everything that determines them."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from study.core.config import TrainSettings
from study.core.data import DataSplit
from study.core.models import ModelSpec
from study.core.atomic import atomic_dir
from study.core.teacher import TeacherArtifacts

# Bump when what a key names changes meaning (the distillation code, the entry's layout): old entries are
# then never hit again and age out of the cache.
FORMAT_VERSION = 1
META_FILE = "meta.json"  # written last: an entry without it does not exist
MODEL_DIR = "model"  # the student's save_pretrained folder (fp32, CPU)
LOCK_SUFFIX = ".lock"  # <root>/<key>.lock beside <root>/<key>/: one distillation per key at a time
FOLDER = "students"  # under --cache-dir


def key_ingredients(*, teacher: TeacherArtifacts, student: ModelSpec, temperature: float, kd_lambda: float,
                    seed: int, train: TrainSettings, split: DataSplit, device: str = "cpu") -> dict[str, Any]:
    """Everything a distilled student's weights depend on, as JSON-ready data (kept in each entry's meta). The
    device's kind is one of them (``cuda:1`` -> ``cuda``): a student trained under bf16 autocast on a GPU is not
    the one a CPU would train, so the two never stand in for each other."""
    return {"format": FORMAT_VERSION, "train_device": str(device).split(":")[0],
            "teacher": {"cache_key": teacher.cache_key, "tfidf_weight": float(teacher.tfidf_weight)},
            "student": student.key(), "temperature": float(temperature), "kd_lambda": float(kd_lambda),
            "seed": int(seed), "train": asdict(train),
            "split": {"corpus_sha256": split.corpus_sha256, "seed": split.seed, "train": len(split.train),
                      "validation": len(split.validation), "test": len(split.test)}}


def student_key(ingredients: dict[str, Any]) -> str:
    """sha256 of the ingredients' canonical JSON."""
    return hashlib.sha256(json.dumps(ingredients, sort_keys=True).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One cached student: its folder and its distillation's metrics; ``hit``: it was distilled earlier (by
    this or another worker), not by this call."""

    path: Path
    meta: dict[str, Any]
    hit: bool

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL_DIR


@dataclass(frozen=True)
class StudentCache:
    """A folder of entries ``<root>/<key>/`` (the model and meta.json), at most ``max_bytes`` in all: after each
    write the least recently used entries (meta.json's mtime, touched on every hit) are removed first."""

    root: Path
    max_bytes: int

    @contextmanager
    def open(self, key: str, build: Callable[[Path], dict[str, Any]],
             ingredients: dict[str, Any] | None = None) -> Iterator[Entry]:
        """The entry of ``key``, distilled by ``build(folder)`` (which saves the model into ``folder/model``
        and returns the metrics) if no worker did before. The entry cannot be evicted while the caller reads
        it inside the ``with`` block. Two workers asking for one key at once distil it once: the second waits
        on the key's lock and then reads the first one's entry."""
        final = self.root / key
        self.root.mkdir(parents=True, exist_ok=True)
        with _flock(self.root / f"{key}{LOCK_SUFFIX}", fcntl.LOCK_SH):
            meta = _read_meta(final)
            if meta is not None:
                _touch(final)
                yield Entry(final, meta, hit=True)
                return
        with _flock(self.root / f"{key}{LOCK_SUFFIX}", fcntl.LOCK_EX):
            meta = _read_meta(final)  # another worker may have distilled it while this one waited
            hit = meta is not None
            if not hit:
                atomic_dir(final, lambda tmp: _write_entry(tmp, key, build, ingredients))
                meta = _read_meta(final)
            _touch(final)
            yield Entry(final, meta, hit=hit)
        if not hit:
            self.evict()

    def entries(self) -> list[tuple[float, int, Path]]:
        """(last use, bytes, folder) of every complete entry, least recently used first."""
        out = []
        for path in self.root.iterdir() if self.root.exists() else ():
            meta = path / META_FILE
            if path.name.startswith(".") or not meta.is_file():
                continue
            try:
                out.append((meta.stat().st_mtime, _folder_bytes(path), path))
            except FileNotFoundError:  # evicted meanwhile by another worker
                continue
        return sorted(out, key=lambda e: (e[0], e[2].name))

    def evict(self) -> list[str]:
        """Remove least recently used entries until the total is within ``max_bytes`` (entries being read or
        written are skipped), and folders left half-built or half-removed by killed workers; returns the keys
        removed."""
        self._remove_leftovers()
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        removed = []
        for _, size, path in entries:
            if total <= self.max_bytes:
                break
            if _remove_unless_busy(self.root, path.name, path):
                total -= size
                removed.append(path.name)
        return removed

    def _remove_leftovers(self) -> None:
        for path in self.root.glob(".*"):  # .<key>.<random>: a build in progress, or one a killed worker left
            key = path.name[1:].split(".", 1)[0]
            if path.is_dir():
                _remove_unless_busy(self.root, key, path)


def student_cache(cache_dir: Path, gigabytes: float) -> StudentCache | None:
    """The cache under ``cache_dir``, bounded to ``gigabytes`` (0: no cache, every trial distils)."""
    if gigabytes <= 0:
        return None
    return StudentCache(Path(cache_dir) / FOLDER, int(gigabytes * 1e9))


@contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    """Hold an flock on ``path`` (created if missing; lock files are kept: removing one could let two
    workers lock different files of one name)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # releases the lock


def _remove_unless_busy(root: Path, key: str, path: Path) -> bool:
    """Remove ``path`` (an entry or a leftover of ``key``) unless a worker holds ``key``'s lock; renamed first,
    so a kill in the middle never leaves a half-deleted entry that still looks complete."""
    fd = os.open(root / f"{key}{LOCK_SUFFIX}", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if not path.exists():
            return False
        doomed = path if path.name.startswith(".") else path.rename(
            root / f".{key}.removed-{os.getpid()}-{time.time_ns()}")
        shutil.rmtree(doomed, ignore_errors=True)
        return True
    finally:
        os.close(fd)


def _write_entry(folder: Path, key: str, build: Callable[[Path], dict[str, Any]],
                 ingredients: dict[str, Any] | None) -> None:
    metrics = build(folder)
    meta = {"format": FORMAT_VERSION, "key": key, **metrics, "ingredients": ingredients}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / META_FILE).read_text())
    except FileNotFoundError:
        return None


def _touch(folder: Path) -> None:
    os.utime(folder / META_FILE)


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
