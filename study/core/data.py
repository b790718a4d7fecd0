"""Read a labelled text corpus, clean it, and split it reproducibly.

Cleaning, in order (``corpus_from_frame``):

1. every text is normalised (Unicode NFC, whitespace runs folded, ends stripped) and every label stripped;
2. duplicate (normalised text, label) rows are dropped, the first kept (``Corpus.duplicates_dropped``);
3. conflicting labels: a normalised text that still occurs with more than one label is dropped entirely,
   every row of it (``Corpus.conflicting_dropped``). Its label is ambiguous, and keeping one row per label
   would let the same text sit in training and in test with different answers.

Given parts (``corpus_from_parts``: a validation or test part read from its own file or split) are cleaned
one by one as above, then a text that occurs in more than one part is kept in one: test before validation
before train. Training texts that are also validation or test texts are dropped from the training part, and
validation texts that are also test texts from the validation part; each overlap is counted
(``Corpus.overlap``) and reported, because given parts cannot be trusted to be disjoint.

After cleaning every text occurs exactly once, so the parts of ``split_corpus`` are disjoint as sets of texts.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from study.core.errors import UserError
from study.core.textnorm import normalize_text

SUPPORTED_SUFFIXES = (".xlsx", ".csv", ".tsv", ".jsonl", ".parquet")
TEXT_COLUMN_NAMES = ("text", "texts", "sentence", "content", "comment", "review")
LABEL_COLUMN_NAMES = ("classes", "class", "label", "labels", "emotion", "category", "target")
PARTS = ("train", "validation", "test")
CONTEXTS = {"train": "training", "validation": "validation", "test": "test"}  # MLflow's dataset input contexts
OVERLAPS = ("test_train", "validation_train", "test_validation")  # "<kept in>_<dropped from>"


def _frozen(mapping: Mapping | None = None) -> MappingProxyType:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Origin:
    """Where rows came from: a file, a ``save_to_disk`` folder or a hub dataset (and which split of it)."""

    source: str  # a file or folder path, a hub id, or the demo's description
    kind: str  # "file", "disk", "hub" or "demo"
    sha256: str  # of a file's bytes, or of a dataset split's rows (see study.core.hfdata.frame_sha256)
    config: str | None = None  # a hub dataset's config
    split: str | None = None  # a dataset's split

    def describe(self) -> str:
        extra = []
        if self.config:
            extra.append(f"config {self.config}")
        if self.split:
            extra.append(f"split {self.split}")
        return f"{self.source} ({', '.join(extra)})" if extra else self.source

    @property
    def name(self) -> str:
        """A short name for the MLflow runs table: the file or folder name, or the hub id (and its config)."""
        if self.kind in ("file", "disk"):
            return Path(self.source).name
        if self.kind == "demo":
            return "demo"
        return f"{self.source}/{self.config}" if self.config else self.source


@dataclass(frozen=True)
class Table:
    """The rows of one source before cleaning, every cell a string."""

    frame: pd.DataFrame
    origin: Origin
    where: str  # names the source in messages: "data file x.csv", "dataset org/name split 'test'"
    class_labels: Mapping[str, tuple[str, ...]] = field(default_factory=_frozen)  # ClassLabel column -> its names
    first_row: int = 2  # the number messages give the first row (2 in a spreadsheet, under its header)


@dataclass(frozen=True)
class Corpus:
    """Cleaned texts with integer labels, plus the facts every run records about them."""

    texts: tuple[str, ...]
    labels: np.ndarray  # int64, index into label_names
    label_names: tuple[str, ...]
    source: str
    sha256: str  # the source's; with given parts, a sha256 of every part's source sha256
    rows_read: int
    duplicates_dropped: int
    conflicting_dropped: int = 0  # rows of texts that occur with more than one label (all dropped)
    text_col: str = "text"
    label_col: str = "label"
    # where each part came from: "train" (the whole data when it is split here) and every given part
    origins: Mapping[str, Origin] = field(default_factory=_frozen)
    part_of: tuple[str, ...] = ()  # each text's given part ("train", "validation", "test"); () when split here
    overlap: Mapping[str, int] = field(default_factory=_frozen)  # OVERLAPS -> texts dropped from the later part
    flags: Mapping[str, str] = field(default_factory=_frozen)  # the data flags as resolved (data_split, ...)
    notes: tuple[str, ...] = ()  # what reading the data decided that its user should hear

    @property
    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.label_names))
        return {name: int(c) for name, c in zip(self.label_names, counts)}

    @property
    def given(self) -> tuple[str, ...]:
        """The held-out parts given with the data (not carved from it here)."""
        return tuple(p for p in ("validation", "test") if p in self.part_of)

    def origin(self, part: str) -> Origin:
        """Where ``part``'s rows came from: its own source when given, else the data it is carved from."""
        found = self.origins.get(part) or self.origins.get("train")
        return found or Origin(self.source, "demo", self.sha256)


@dataclass(frozen=True)
class Part:
    """One part of a split: texts and their integer labels."""

    texts: tuple[str, ...]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class PartInput:
    """One part of a split as an MLflow dataset input: plain data (study.reporting.tracking logs it)."""

    origin: Origin
    context: str  # "training", "validation" or "test"
    digest: str  # sha256 of the part as used (see part_sha256)
    texts: tuple[str, ...]
    labels: tuple[str, ...]  # label names, one per text


def part_sha256(part: Part, label_names: tuple[str, ...]) -> str:
    """sha256 of a part as the models see it: its cleaned texts and their label names, in order."""
    rows = [[text, label_names[i]] for text, i in zip(part.texts, part.labels.tolist())]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode("utf-8")).hexdigest()


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
    given: tuple[str, ...] = ()  # parts given with the data rather than carved here ("validation", "test")

    def parts(self) -> dict[str, Part]:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def facts(self, corpus: Corpus) -> dict[str, str]:
        """The data facts logged as params of every MLflow run."""
        return {
            "data_source": corpus.source,
            "data_text_col": corpus.text_col,
            "data_label_col": corpus.label_col,
            "data_sha256": corpus.sha256,
            **corpus.flags,
            "data_rows": str(len(corpus.texts)),
            "data_rows_read": str(corpus.rows_read),
            "data_duplicates_dropped": str(corpus.duplicates_dropped),
            "data_conflicting_dropped": str(corpus.conflicting_dropped),
            **{f"data_overlap_{k}": str(corpus.overlap.get(k, 0)) for k in OVERLAPS},
            "data_class_counts": json.dumps(corpus.class_counts, ensure_ascii=False),
            "split_train": str(len(self.train)),
            "split_validation": str(len(self.validation)),
            "split_test": str(len(self.test)),
            **{f"split_{name}_sha256": part_sha256(part, self.label_names) for name, part in self.parts().items()},
            "split_given": ",".join(self.given) or "none",
            "split_seed": str(self.seed),
            "split_test_size": str(self.test_size),
            "split_validation_size": str(self.validation_size),
        }

    def inputs(self, corpus: Corpus) -> tuple[PartInput, ...]:
        """Every part as an MLflow dataset input, with the source it came from and its sha256."""
        return tuple(PartInput(origin=corpus.origin(name), context=CONTEXTS[name],
                               digest=part_sha256(part, self.label_names), texts=part.texts,
                               labels=tuple(self.label_names[i] for i in part.labels.tolist()))
                     for name, part in self.parts().items())


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
    if suffix not in SUPPORTED_SUFFIXES or suffix == ".parquet":
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


def file_table(path: Path) -> Table:
    """A data file's rows (.parquet through study.core.hfdata, keeping its ClassLabel names), sha256 of its bytes."""
    if path.suffix.lower() == ".parquet" and path.is_file():
        from study.core.hfdata import read_parquet

        frame, class_labels = read_parquet(path)
    else:
        frame, class_labels = read_table(path), {}
    return Table(frame, Origin(str(path), "file", file_sha256(path)), where=f"data file {path}",
                 class_labels=_frozen(class_labels))


def _where(path: Path | str) -> str:
    return f"data file {path}" if isinstance(path, Path) else str(path)


def pick_column(frame: pd.DataFrame, path: Path | str, given: str | None, candidates: tuple[str, ...],
                what: str, flag: str) -> str:
    """The ``what`` column: ``given`` if it exists, else the first of ``candidates`` (any case); ``path`` names
    the source in messages (a Path as "data file <path>", a string as it is)."""
    columns = list(frame.columns)
    if given is not None:
        if given not in columns:
            raise UserError(f"{_where(path)} has no {what} column {given!r} (given with {flag}); "
                            f"its columns are: {', '.join(map(repr, columns))}")
        return given
    lowered = {c.lower(): c for c in columns}
    for name in candidates:
        if name in lowered:
            return lowered[name]
    raise UserError(f"{_where(path)}: no {what} column found (looked for {', '.join(candidates)}); "
                    f"its columns are: {', '.join(map(repr, columns))}; name it with {flag}")


@dataclass(frozen=True)
class _Cleaned:
    """One source's rows after normalisation, de-duplication and conflicting-label dropping."""

    texts: list[str]
    labels: list[str]
    rows_read: int
    duplicates: int
    conflicting: int
    text_col: str
    label_col: str


def _clean(table: Table, text_col: str | None, label_col: str | None) -> _Cleaned:
    """Normalise texts, drop duplicate (normalised text, label) rows, drop every row of a text that occurs with
    more than one label (see the module docstring); blank texts or labels are errors naming their rows."""
    frame, where = table.frame, table.where
    tcol = pick_column(frame, where, text_col, TEXT_COLUMN_NAMES, "text", "--text-col")
    lcol = pick_column(frame, where, label_col, LABEL_COLUMN_NAMES, "label", "--label-col")
    if tcol == lcol:
        raise UserError(f"{where}: text and label column are both {tcol!r}")
    rows = frame[[tcol, lcol]].astype(str)
    if rows.empty:
        raise UserError(f"{where} has no data rows")
    texts_norm = [normalize_text(t) for t in rows[tcol].tolist()]
    labels_raw = [s.strip() for s in rows[lcol].tolist()]
    blank_text = [i + table.first_row for i, t in enumerate(texts_norm) if not t]
    blank_label = [i + table.first_row for i, lab in enumerate(labels_raw) if not lab]
    if blank_text:
        raise UserError(f"{where}: column {tcol!r} is blank in {len(blank_text)} row(s), "
                        f"e.g. row {', '.join(map(str, blank_text[:5]))}; every row needs a text")
    if blank_label:
        hint = " (ClassLabel value -1: an unlabelled split)" if lcol in table.class_labels else ""
        raise UserError(f"{where}: column {lcol!r} is blank in {len(blank_label)} row(s){hint}, "
                        f"e.g. row {', '.join(map(str, blank_label[:5]))}; every row needs a label")
    clean = pd.DataFrame({"text": texts_norm, "label": labels_raw}).drop_duplicates(keep="first")
    labels_per_text = clean.groupby("text", sort=False)["label"].nunique()
    conflicting = clean["text"].isin(labels_per_text.index[labels_per_text > 1])
    kept = clean[~conflicting]
    if kept.empty:
        raise UserError(f"{where}: every text in column {tcol!r} occurs with more than one label in "
                        f"column {lcol!r}, and such texts are dropped; nothing is left to train on")
    return _Cleaned(texts=kept["text"].tolist(), labels=kept["label"].tolist(), rows_read=len(rows),
                    duplicates=len(rows) - len(clean), conflicting=int(conflicting.sum()), text_col=tcol,
                    label_col=lcol)


def _drop_overlap(cleaned: dict[str, _Cleaned]) -> tuple[dict[str, tuple[list, list]], dict[str, int]]:
    """Keep each text in one part (test before validation before train); count the texts dropped per pair."""
    holder: dict[str, str] = {}
    kept: dict[str, tuple[list, list]] = {}
    overlap = dict.fromkeys(OVERLAPS, 0)
    for name in ("test", "validation", "train"):
        if name not in cleaned:
            continue
        part = cleaned[name]
        keep = []
        for i, text in enumerate(part.texts):
            if text in holder:
                overlap[f"{holder[text]}_{name}"] += 1
            else:
                keep.append(i)
        holder.update((part.texts[i], name) for i in keep)
        kept[name] = ([part.texts[i] for i in keep], [part.labels[i] for i in keep])
    return kept, overlap


def _label_names(kept: dict[str, tuple[list, list]], train: _Cleaned, tables: Mapping[str, Table]) -> tuple[str, ...]:
    """The training part's classes: in ClassLabel order when its label column is a ClassLabel, else sorted.
    A training part of one class, or a held-out label the training part lacks, is a UserError."""
    counts = Counter(kept["train"][1])
    where = tables["train"].where
    if len(counts) < 2:
        held_out = len(train.texts) - len(kept["train"][0])
        raise UserError(f"{where}: column {train.label_col!r} has a single class {next(iter(counts))!r}"
                        + (f" after dropping {train.conflicting} row(s) of texts with conflicting labels"
                           if train.conflicting else "")
                        + (f" and {held_out} text(s) that are also held-out texts" if held_out else "")
                        + "; a classifier needs at least two")
    for name in ("validation", "test"):
        unknown = sorted(set(kept.get(name, ([], []))[1]) - set(counts))
        if unknown:
            raise UserError(f"{tables[name].where}: label(s) {', '.join(map(repr, unknown))} never occur in the "
                            f"training part ({where}); a classifier cannot learn them")
    order = tables["train"].class_labels.get(train.label_col, ())
    return tuple(n for n in order if n in counts) + tuple(sorted(set(counts) - set(order)))


def corpus_from_parts(tables: Mapping[str, Table], *, text_col: str | None = None, label_col: str | None = None,
                      flags: Mapping[str, str] | None = None, notes: tuple[str, ...] = ()) -> Corpus:
    """Clean every part (``"train"``, and ``"validation"``/``"test"`` when given), keep each text in one part,
    and encode labels (see the module docstring). With one part, the corpus is split here later."""
    cleaned = {name: _clean(table, text_col, label_col) for name, table in tables.items()}
    kept, overlap = _drop_overlap(cleaned)
    train = cleaned["train"]
    if not kept["train"][0]:
        raise UserError(f"{tables['train'].where}: every training text is also a validation or test text; "
                        "nothing is left to train on")
    if "validation" in kept and not kept["validation"][0]:
        raise UserError(f"{tables['validation'].where}: every validation text is also a test text; give a "
                        "validation part of its own")
    label_names = _label_names(kept, train, tables)
    index = {name: i for i, name in enumerate(label_names)}
    names = [p for p in PARTS if p in kept]
    texts = tuple(t for p in names for t in kept[p][0])
    labels = np.array([index[s] for p in names for s in kept[p][1]], dtype=np.int64)
    given = len(names) > 1
    if given:
        listing = "\n".join(f"{p}={tables[p].origin.sha256}" for p in names)
        sha256 = hashlib.sha256(listing.encode("utf-8")).hexdigest()
    else:
        sha256 = tables["train"].origin.sha256
    return Corpus(texts=texts, labels=labels, label_names=label_names, source=tables["train"].origin.source,
                  sha256=sha256, rows_read=sum(c.rows_read for c in cleaned.values()),
                  duplicates_dropped=sum(c.duplicates for c in cleaned.values()),
                  conflicting_dropped=sum(c.conflicting for c in cleaned.values()),
                  text_col=train.text_col, label_col=train.label_col,
                  origins=_frozen({p: tables[p].origin for p in names}),
                  part_of=tuple(p for p in names for _ in kept[p][0]) if given else (),
                  overlap=_frozen(overlap), flags=_frozen(flags), notes=notes)


def corpus_from_frame(frame: pd.DataFrame, *, source: str, sha256: str, path: Path | str,
                      text_col: str | None = None, label_col: str | None = None) -> Corpus:
    """Clean one frame into a corpus that is split here (``path`` names it in messages; a Path is a file)."""
    origin = Origin(source, "file" if isinstance(path, Path) else "demo", sha256)
    return corpus_from_parts({"train": Table(frame, origin, where=_where(path))}, text_col=text_col,
                             label_col=label_col)


def load_corpus(path: Path, *, text_col: str | None = None, label_col: str | None = None) -> Corpus:
    """Read and clean the corpus in the file at ``path`` (study.core.sources reads folders, hub ids and parts)."""
    if not path.exists():
        raise UserError(f"data file {path} does not exist")
    return corpus_from_parts({"train": file_table(path)}, text_col=text_col, label_col=label_col)


MIN_PER_CLASS = 5  # test, validation and train parts all need examples of every class


def _carve(corpus: Corpus, pool: np.ndarray, size: float, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """A seeded stratified (rest, carved) split of the indices in ``pool``."""
    try:
        return train_test_split(pool, test_size=size, random_state=seed, stratify=corpus.labels[pool])
    except ValueError as exc:  # too small a part for one example per class
        if what == "test":
            message = f"a train/test split with test_size {size}"
        else:
            message = f"a train/validation split of the {len(pool)} training examples with validation_size {size}"
        raise UserError(f"data from {corpus.source}: too few examples to stratify {message} ({exc})") from None


def split_corpus(corpus: Corpus, *, seed: int, test_size: float = 0.3,
                 validation_size: float = 0.1) -> DataSplit:
    """Seeded stratified test split, then a stratified validation part carved from the training part only.

    Parts given with the corpus (``Corpus.given``) are used as they are; only the missing ones are carved from
    the training part. The test part depends on (seed, test_size) alone, never on validation_size. The parts are
    disjoint sets of texts because cleaning (``corpus_from_parts``) leaves every text exactly once.
    """
    given = corpus.given
    part_of = np.array(corpus.part_of) if corpus.part_of else np.full(len(corpus.texts), "train")
    pool = np.flatnonzero(part_of == "train")
    if len(given) < 2:
        counts = Counter(corpus.label_names[i] for i in corpus.labels[pool].tolist())
        small = {n: counts[n] for n in corpus.label_names if counts[n] < MIN_PER_CLASS}
        if small:
            detail = ", ".join(f"{n!r} has {c}" for n, c in small.items())
            parts = "/".join(p for p in PARTS if p not in given)
            raise UserError(f"data from {corpus.source}: too few examples to stratify a {parts} "
                            f"split ({detail}; each class needs at least {MIN_PER_CLASS})")
    if "test" in given:
        test_idx = np.flatnonzero(part_of == "test")
    else:
        pool, test_idx = _carve(corpus, pool, test_size, seed, "test")
    if "validation" in given:
        val_idx = np.flatnonzero(part_of == "validation")
    else:
        pool, val_idx = _carve(corpus, pool, validation_size, seed, "validation")

    def part(ix: np.ndarray) -> Part:
        ix = np.sort(ix)
        return Part(texts=tuple(corpus.texts[i] for i in ix), labels=corpus.labels[ix].copy())

    return DataSplit(train=part(pool), validation=part(val_idx), test=part(test_idx),
                     label_names=corpus.label_names, corpus_sha256=corpus.sha256, seed=seed,
                     test_size=test_size, validation_size=validation_size, given=given)


def limit_part(part: Part, n: int | None, seed: int) -> Part:
    """A stratified subset of at most ``n`` examples (for --quick); the part itself when n is None."""
    if n is None or len(part) <= n:
        return part
    keep, _ = train_test_split(np.arange(len(part)), train_size=n, random_state=seed, stratify=part.labels)
    keep = np.sort(keep)
    return Part(texts=tuple(part.texts[i] for i in keep), labels=part.labels[keep].copy())
