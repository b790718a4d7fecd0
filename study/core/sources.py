"""Where a study's rows come from: the ``--data`` family of flags resolved into the tables of one corpus.

``--data`` names a data file (.xlsx/.csv/.tsv/.jsonl/.parquet), a folder written by ``Dataset.save_to_disk``
or ``DatasetDict.save_to_disk``, or a Hugging Face hub dataset id (``org/name``, with ``--data-config``).
A dataset with splits gives its training split (``--data-split``, default ``train``) and, unless
``--validation-data``/``--test-data`` name others, its own ``validation`` and ``test`` splits; the parts
it lacks are carved from the training part as for a single file (``study.core.data.split_corpus``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.core import hfdata
from study.core.data import LABEL_COLUMN_NAMES, Corpus, Origin, Table, corpus_from_parts, file_table, pick_column
from study.core.errors import UserError

OWN_SPLITS = {"validation": ("validation", "valid", "dev"), "test": ("test",)}  # a dataset's held-out splits
PART_FLAGS = {"validation": "--validation-data", "test": "--test-data"}


@dataclass(frozen=True)
class DataSpec:
    """The data flags of a study, as given (nothing read yet)."""

    source: str | None = None  # --data: a data file, a save_to_disk folder or a hub id; None: the demo corpus
    config: str | None = None  # --data-config: the hub dataset's config
    split: str | None = None  # --data-split: the dataset split to train on (default "train")
    validation: str | None = None  # --validation-data: a data file or folder, or a split of the --data dataset
    test: str | None = None  # --test-data: the same, for the test part
    text_col: str | None = None
    label_col: str | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, str], source: str | None = None) -> DataSpec:
        """The data flags a run resolved (its ``data_*`` params), with ``source`` instead of its data_source."""
        return cls(source=source or params.get("data_source"), config=params.get("data_config"),
                   split=params.get("data_split"), validation=params.get("data_validation"),
                   test=params.get("data_test"), text_col=params.get("data_text_col"),
                   label_col=params.get("data_label_col"))


@dataclass(frozen=True)
class _Opened:
    """An opened ``--data``: one table (a data file or a saved Dataset) or a dataset's splits by name."""

    name: str
    kind: str  # "file", "disk" or "hub"
    config: str | None
    single: Table | None = None
    splits: Mapping[str, Any] | None = None  # split name -> datasets.Dataset

    @property
    def label(self) -> str:
        return f"{'dataset' if self.kind == 'hub' else 'dataset folder'} {self.name}"

    def table(self, split: str) -> Table:
        return dataset_table(self.splits[split], self.name, self.kind, self.config, split)


def dataset_table(dataset: Any, name: str, kind: str, config: str | None, split: str | None) -> Table:
    """One ``datasets.Dataset`` as a table (rows are numbered from 0 in messages, as datasets index them)."""
    frame, class_labels = hfdata.dataset_frame(dataset)
    where = f"{'dataset' if kind == 'hub' else 'dataset folder'} {name}" + (f" split {split!r}" if split else "")
    return Table(frame, Origin(name, kind, hfdata.frame_sha256(frame), config, split), where=where,
                 class_labels=class_labels, first_row=0)


def open_source(source: str, config: str | None, flag: str = "--data") -> _Opened:
    """Open a data file, a save_to_disk folder or a hub dataset id."""
    if hfdata.is_hub_id(source):
        return _Opened(source, "hub", config, splits=dict(hfdata.load_hub(source, config)))
    if config is not None:
        raise UserError(f"--data-config {config!r} is for a Hugging Face hub dataset id (org/name); "
                        f"{flag} {source} is a local path")
    path = Path(source)
    if not path.exists():
        hint = "" if path.suffix else " (a Hugging Face dataset id looks like org/name)"
        raise UserError(f"{flag}: data file {path} does not exist{hint}")
    if not path.is_dir():
        return _Opened(source, "file", None, single=file_table(path))
    loaded = hfdata.load_saved(path)
    splits = hfdata.splits_of(loaded)
    if splits is None:
        return _Opened(source, "disk", None, single=dataset_table(loaded, source, "disk", None, None))
    return _Opened(source, "disk", None, splits=splits)


def _train_split(spec: DataSpec, opened: _Opened) -> str | None:
    """The split to train on: --data-split, else ``train``, else a dataset's only split."""
    if opened.splits is None:
        if spec.split is not None:
            raise UserError(f"--data-split {spec.split!r}: --data {opened.name} is a single table, not a dataset "
                            "with splits")
        return None
    names = ", ".join(map(repr, opened.splits))
    if spec.split is not None:
        if spec.split not in opened.splits:
            raise UserError(f"--data-split {spec.split!r}: {opened.label} has no such split; its splits "
                            f"are {names}")
        return spec.split
    if "train" in opened.splits:
        return "train"
    if len(opened.splits) == 1:
        return next(iter(opened.splits))
    raise UserError(f"{opened.label} has no 'train' split; name the one to train on with --data-split "
                    f"(its splits are {names})")


def _given_part(part: str, value: str, opened: _Opened, train: str | None) -> tuple[Table, str]:
    """The table of ``--validation-data``/``--test-data`` ``value``: a split of the --data dataset, or a file
    or saved Dataset folder of its own; and the value to record."""
    flag = PART_FLAGS[part]
    if opened.splits is not None and value in opened.splits:
        if value == train:
            raise UserError(f"{flag} {value!r} is the split trained on; name another split or file")
        return opened.table(value), value
    if opened.splits is not None and not Path(value).exists():
        raise UserError(f"{flag} {value!r}: {opened.label} has no split of that name (its splits are "
                        f"{', '.join(map(repr, opened.splits))}) and there is no such file")
    other = open_source(value, None, flag)
    if other.single is None:
        raise UserError(f"{flag} {value}: a DatasetDict folder holds several splits; save the {part} split alone "
                        f"(Dataset.save_to_disk), or make it a split of the --data dataset and name it")
    return other.single, value


def _labelled(table: Table, label_col: str | None) -> bool:
    """Whether a dataset's own split has labels (hidden test splits have none, or ClassLabel -1 throughout)."""
    try:
        column = pick_column(table.frame, table.where, label_col, LABEL_COLUMN_NAMES, "label", "--label-col")
    except UserError:
        return False
    return bool(table.frame[column].str.strip().ne("").any())


def _own_part(part: str, opened: _Opened, taken: set[str],
              label_col: str | None) -> tuple[tuple[Table, str] | None, str | None]:
    """A dataset's own validation/test split (not one already ``taken`` by another part), if it has one with
    labels; else a note when it has one without (hidden test labels), for the part is then carved here."""
    for name in OWN_SPLITS[part] if opened.splits is not None else ():
        if name in opened.splits and name not in taken:
            table = opened.table(name)
            if _labelled(table, label_col):
                return (table, name), None
            return None, (f"the dataset's own {name!r} split has no labels: a {part} part is carved from the "
                          "training part instead")
    return None, None


def resolve_tables(spec: DataSpec) -> tuple[dict[str, Table], dict[str, str], tuple[str, ...]]:
    """The tables of each part (``train``, and ``validation``/``test`` when given or the dataset's own), the
    data flags as resolved (logged, so the data can be read again), and notes on what was skipped."""
    opened = open_source(spec.source, spec.config)
    train = _train_split(spec, opened)
    tables = {"train": opened.single if train is None else opened.table(train)}
    flags = {"data_config": spec.config, "data_split": train}
    notes = []
    taken = {train, spec.validation, spec.test}  # a split named for one part is no other part's own split
    for part in ("validation", "test"):
        value = getattr(spec, part)
        if value is not None:
            found = _given_part(part, value, opened, train)
        else:
            found, note = _own_part(part, opened, taken, spec.label_col)
            notes += [note] if note else []
        if found is not None:
            tables[part], flags[f"data_{part}"] = found
    return tables, {k: v for k, v in flags.items() if v is not None}, tuple(notes)


def load_data(spec: DataSpec) -> Corpus:
    """Read and clean every part of the data ``spec`` names (the demo corpus when it names none)."""
    if spec.source is None:
        given = [flag for flag, value in (("--data-config", spec.config), ("--data-split", spec.split),
                                          (PART_FLAGS["validation"], spec.validation),
                                          (PART_FLAGS["test"], spec.test)) if value is not None]
        if given:
            raise UserError(f"{', '.join(given)} need --data (a data file, a saved dataset folder or a hub id)")
        from study.core.demo import demo_corpus

        return demo_corpus()
    tables, flags, notes = resolve_tables(spec)
    return corpus_from_parts(tables, text_col=spec.text_col, label_col=spec.label_col, flags=flags, notes=notes)
