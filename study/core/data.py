"""Read a labelled text corpus, clean it, and split it reproducibly.

Cleaning, in order (``corpus_from_frame``):

1. every text is normalised (Unicode NFC, whitespace runs folded, ends stripped) and every label stripped;
2. duplicate (normalised text, label) rows are dropped, the first kept (``Corpus.duplicates_dropped``);
3. conflicting labels: a normalised text that still occurs with more than one label is dropped entirely,
   every row of it (``Corpus.conflicting_dropped``). Its label is ambiguous, and keeping one row per label
   would let the same text sit in training and in test with different answers.

After cleaning every text occurs exactly once, so the parts of ``split_corpus`` are disjoint as sets of texts.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from study.core.errors import UserError
from study.core.textnorm import normalize_text

SUPPORTED_SUFFIXES = (".xlsx", ".csv", ".tsv", ".jsonl")
TEXT_COLUMN_NAMES = ("text", "texts", "sentence", "content", "comment", "review")
LABEL_COLUMN_NAMES = ("classes", "class", "label", "labels", "emotion", "category", "target")


@dataclass(frozen=True)
class Corpus:
    """Cleaned texts with integer labels, plus the facts every run records about them."""

    texts: tuple[str, ...]
    labels: np.ndarray  # int64, index into label_names
    label_names: tuple[str, ...]
    source: str
    sha256: str
    rows_read: int
    duplicates_dropped: int
    conflicting_dropped: int = 0  # rows of texts that occur with more than one label (all dropped)
    text_col: str = "text"
    label_col: str = "label"

    @property
    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.label_names))
        return {name: int(c) for name, c in zip(self.label_names, counts)}


@dataclass(frozen=True)
class Part:
    """One part of a split: texts and their integer labels."""

    texts: tuple[str, ...]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class DataSplit:
    """Train (for fitting), validation (early stopping) and held-out test parts of a corpus."""

    train: Part
    validation: Part
    test: Part
    label_names: tuple[str, ...]
    corpus_sha256: str
    seed: int
    test_size: float = 0.3
    validation_size: float = 0.1

    def facts(self, corpus: Corpus) -> dict[str, str]:
        """The data facts logged as params of every MLflow run."""
        return {
            "data_source": corpus.source,
            "data_text_col": corpus.text_col,
            "data_label_col": corpus.label_col,
            "data_sha256": corpus.sha256,
            "data_rows": str(len(corpus.texts)),
            "data_rows_read": str(corpus.rows_read),
            "data_duplicates_dropped": str(corpus.duplicates_dropped),
            "data_conflicting_dropped": str(corpus.conflicting_dropped),
            "data_class_counts": json.dumps(corpus.class_counts, ensure_ascii=False),
            "split_train": str(len(self.train)),
            "split_validation": str(len(self.validation)),
            "split_test": str(len(self.test)),
            "split_seed": str(self.seed),
            "split_test_size": str(self.test_size),
            "split_validation_size": str(self.validation_size),
        }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_table(path: Path) -> pd.DataFrame:
    """Read .xlsx/.csv/.tsv/.jsonl into a frame of strings; every failure is a UserError."""
    if not path.exists():
        raise UserError(f"data file {path} does not exist")
    if not path.is_file():
        raise UserError(f"data path {path} is not a file")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UserError(f"data file {path}: unsupported format {suffix or '(no extension)'!r}; "
                        f"expected one of {', '.join(SUPPORTED_SUFFIXES)}")
    try:
        if suffix == ".xlsx":
            frame = pd.read_excel(path, dtype=str, keep_default_na=False)
        elif suffix in (".csv", ".tsv"):
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str,
                                keep_default_na=False, encoding="utf-8", encoding_errors="strict")
        else:
            frame = pd.read_json(path, lines=True, dtype=False, encoding="utf-8")
            frame = frame.astype(str).where(frame.notna(), "")
    except UnicodeDecodeError as exc:
        raise UserError(f"data file {path} is not valid UTF-8 text (byte {exc.start}): "
                        "save it as UTF-8 and try again") from None
    except PermissionError:
        raise UserError(f"data file {path} cannot be read (permission denied)") from None
    except Exception as exc:  # pandas/openpyxl raise many types for malformed files
        raise UserError(f"data file {path} could not be read as {suffix}: {exc}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def pick_column(frame: pd.DataFrame, path: Path | str, given: str | None, candidates: tuple[str, ...],
                 what: str, flag: str) -> str:
    columns = list(frame.columns)
    if given is not None:
        if given not in columns:
            raise UserError(f"data file {path} has no {what} column {given!r} (given with {flag}); "
                            f"its columns are: {', '.join(map(repr, columns))}")
        return given
    lowered = {c.lower(): c for c in columns}
    for name in candidates:
        if name in lowered:
            return lowered[name]
    raise UserError(f"data file {path}: no {what} column found (looked for {', '.join(candidates)}); "
                    f"its columns are: {', '.join(map(repr, columns))}; name it with {flag}")


def corpus_from_frame(frame: pd.DataFrame, *, source: str, sha256: str, path: Path | str,
                      text_col: str | None = None, label_col: str | None = None) -> Corpus:
    """Normalise texts, drop duplicate (normalised text, label) rows, drop every row of a text that
    occurs with more than one label, validate, and encode labels (see the module docstring)."""
    tcol = pick_column(frame, path, text_col, TEXT_COLUMN_NAMES, "text", "--text-col")
    lcol = pick_column(frame, path, label_col, LABEL_COLUMN_NAMES, "label", "--label-col")
    if tcol == lcol:
        raise UserError(f"data file {path}: text and label column are both {tcol!r}")
    rows = frame[[tcol, lcol]].astype(str)
    if rows.empty:
        raise UserError(f"data file {path} has no data rows")
    # Spreadsheet row numbers (header is row 1) for messages.
    texts_norm = [normalize_text(t) for t in rows[tcol].tolist()]
    labels_raw = [s.strip() for s in rows[lcol].tolist()]
    blank_text = [i + 2 for i, t in enumerate(texts_norm) if not t]
    blank_label = [i + 2 for i, lab in enumerate(labels_raw) if not lab]
    if blank_text:
        raise UserError(f"data file {path}: column {tcol!r} is blank in {len(blank_text)} row(s), "
                        f"e.g. row {', '.join(map(str, blank_text[:5]))}; every row needs a text")
    if blank_label:
        raise UserError(f"data file {path}: column {lcol!r} is blank in {len(blank_label)} row(s), "
                        f"e.g. row {', '.join(map(str, blank_label[:5]))}; every row needs a label")
    rows_read = len(rows)
    clean = pd.DataFrame({"text": texts_norm, "label": labels_raw}).drop_duplicates(keep="first")
    labels_per_text = clean.groupby("text", sort=False)["label"].nunique()
    conflicting = clean["text"].isin(labels_per_text.index[labels_per_text > 1])
    kept = clean[~conflicting]
    if kept.empty:
        raise UserError(f"data file {path}: every text in column {tcol!r} occurs with more than one label in "
                        f"column {lcol!r}, and such texts are dropped; nothing is left to train on")
    texts = tuple(kept["text"].tolist())
    labels_str = kept["label"].tolist()
    counts = Counter(labels_str)
    if len(counts) < 2:
        raise UserError(f"data file {path}: column {lcol!r} has a single class {next(iter(counts))!r}"
                        + (f" after dropping {int(conflicting.sum())} row(s) of texts with conflicting labels"
                           if conflicting.any() else "") + "; a classifier needs at least two")
    label_names = tuple(sorted(counts))
    index = {name: i for i, name in enumerate(label_names)}
    return Corpus(texts=texts, labels=np.array([index[s] for s in labels_str], dtype=np.int64),
                  label_names=label_names, source=source, sha256=sha256, rows_read=rows_read,
                  duplicates_dropped=rows_read - len(clean), conflicting_dropped=int(conflicting.sum()),
                  text_col=tcol, label_col=lcol)


def load_corpus(path: Path, *, text_col: str | None = None, label_col: str | None = None) -> Corpus:
    """Read and clean the corpus at ``path``."""
    frame = read_table(path)
    return corpus_from_frame(frame, source=str(path), sha256=file_sha256(path), path=path,
                             text_col=text_col, label_col=label_col)


MIN_PER_CLASS = 5  # test, validation and train parts all need examples of every class


def split_corpus(corpus: Corpus, *, seed: int, test_size: float = 0.3,
                 validation_size: float = 0.1) -> DataSplit:
    """Seeded stratified test split, then a stratified validation part carved from the training part only.

    The test part depends on (seed, test_size) alone, never on validation_size. The parts are disjoint sets
    of texts because cleaning (``corpus_from_frame``) leaves every text exactly once.
    """
    small = {n: c for n, c in corpus.class_counts.items() if c < MIN_PER_CLASS}
    if small:
        detail = ", ".join(f"{n!r} has {c}" for n, c in small.items())
        raise UserError(f"data from {corpus.source}: too few examples to stratify a train/validation/test "
                        f"split ({detail}; each class needs at least {MIN_PER_CLASS})")
    idx = np.arange(len(corpus.texts))
    try:
        train_idx, test_idx = train_test_split(idx, test_size=test_size, random_state=seed,
                                               stratify=corpus.labels)
    except ValueError as exc:  # too small a part for one example per class
        raise UserError(f"data from {corpus.source}: too few examples to stratify a train/test split with "
                        f"test_size {test_size} ({exc})") from None
    try:
        fit_idx, val_idx = train_test_split(train_idx, test_size=validation_size, random_state=seed,
                                            stratify=corpus.labels[train_idx])
    except ValueError as exc:
        raise UserError(f"data from {corpus.source}: too few examples to stratify a train/validation split "
                        f"of the {len(train_idx)} training examples with validation_size {validation_size} "
                        f"({exc})") from None

    def part(ix: np.ndarray) -> Part:
        ix = np.sort(ix)
        return Part(texts=tuple(corpus.texts[i] for i in ix), labels=corpus.labels[ix].copy())

    return DataSplit(train=part(fit_idx), validation=part(val_idx), test=part(test_idx),
                     label_names=corpus.label_names, corpus_sha256=corpus.sha256, seed=seed,
                     test_size=test_size, validation_size=validation_size)


def limit_part(part: Part, n: int | None, seed: int) -> Part:
    """A stratified subset of at most ``n`` examples (for --quick); the part itself when n is None."""
    if n is None or len(part) <= n:
        return part
    keep, _ = train_test_split(np.arange(len(part)), train_size=n, random_state=seed, stratify=part.labels)
    keep = np.sort(keep)
    return Part(texts=tuple(part.texts[i] for i in keep), labels=part.labels[keep].copy())
