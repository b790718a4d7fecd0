"""Hugging Face datasets (hub ids, ``save_to_disk`` folders, ``.parquet`` files) read into frames of strings,
every ``ClassLabel`` column's integers mapped to its names.

``datasets`` is imported only here, and only when such data is read.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pandas as pd

from study.core.errors import UserError

# org/name as the hub spells it; a path with a data file's suffix is never taken for one
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
FILE_SUFFIXES = (".xlsx", ".csv", ".tsv", ".jsonl", ".json", ".parquet", ".txt", ".arrow")
SAVED_MARKERS = ("dataset_dict.json", "state.json")  # what Dataset(Dict).save_to_disk writes at the top


def is_hub_id(source: str) -> bool:
    """Whether ``source`` names a hub dataset (``org/name``) rather than a local file or folder."""
    return (bool(HUB_ID.match(source)) and not Path(source).exists()
            and not source.lower().endswith(FILE_SUFFIXES))


def is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return path.is_dir() and any((path / marker).is_file() for marker in SAVED_MARKERS)


def load_saved(path: Path) -> Any:
    """The ``Dataset`` or ``DatasetDict`` saved in folder ``path``."""
    import datasets

    if not is_saved_dataset(path):
        raise UserError(f"data path {path} is not a file, nor a folder written by Dataset.save_to_disk or "
                        f"DatasetDict.save_to_disk (it has no {' or '.join(SAVED_MARKERS)})")
    try:
        return datasets.load_from_disk(str(path))
    except Exception as exc:  # a damaged or foreign folder: datasets raises several types
        raise UserError(f"data folder {path} could not be read as a saved dataset: {exc}") from None


def load_hub(name: str, config: str | None) -> Any:
    """Every split of hub dataset ``name`` (a ``DatasetDict``), through ``datasets.load_dataset``: from the hub,
    or from the local cache when offline (``HF_HUB_OFFLINE=1``) or when the hub cannot be reached."""
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    what = f"Hugging Face dataset {name!r}" + (f" (config {config!r})" if config else "")
    offline = bool(datasets.config.HF_HUB_OFFLINE)
    try:
        loaded = datasets.load_dataset(name, config)
    except (ConnectionError, TimeoutError) as exc:
        raise UserError(f"{what} is not in the local Hugging Face cache and the hub cannot be reached "
                        f"({'HF_HUB_OFFLINE is set' if offline else exc}): loading it needs the network once. "
                        "Run once with network access (and HF_HUB_OFFLINE unset) to fill the cache, or pass a "
                        f"folder written by save_to_disk or a data file (there is no local file or folder {name} "
                        "either)") from None
    except DatasetNotFoundError as exc:
        raise UserError(f"{what} was not found on the hub ({exc}); check the id, or log in "
                        "(`hf auth login`) for a private or gated dataset") from None
    except ValueError as exc:  # an unknown config, or a config missing from the cache when offline
        network = " (offline, only the local cache is searched: loading it needs the network)" if offline else ""
        raise UserError(f"{what} could not be loaded{network}: {exc}; name the config with --data-config") from None
    except Exception as exc:  # a broken download or data files datasets cannot build
        raise UserError(f"{what} could not be loaded: {exc}") from None
    if isinstance(loaded, datasets.DatasetDict):
        return loaded
    return datasets.DatasetDict({"train": loaded})


def splits_of(loaded: Any) -> dict[str, Any] | None:
    """A ``DatasetDict``'s splits by name; None for a single ``Dataset``."""
    import datasets

    return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else None


def class_label_names(features: Any) -> dict[str, tuple[str, ...]]:
    """Each top-level ``ClassLabel`` column's names, in the order of their integer values."""
    from datasets import ClassLabel

    return {str(col).strip(): tuple(feature.names) for col, feature in features.items()
            if isinstance(feature, ClassLabel)}


def dataset_frame(dataset: Any) -> tuple[pd.DataFrame, dict[str, tuple[str, ...]]]:
    """A dataset's rows as strings (missing values blank) and its ClassLabel columns' names; a ClassLabel value
    becomes its name, and -1 (datasets' "no label", as in hidden test splits) a blank."""
    names = class_label_names(dataset.features)
    frame = dataset.to_pandas()
    frame.columns = [str(c).strip() for c in frame.columns]
    for col, labels in names.items():
        frame[col] = [labels[v] if 0 <= v < len(labels) else "" for v in frame[col].tolist()]
    frame = frame.astype(object).where(frame.notna(), "").astype(str)
    return frame, names


def frame_sha256(frame: pd.DataFrame) -> str:
    """sha256 of a dataset split's rows (all columns, as strings): the same rows give the same digest however
    they were saved or cached."""
    return hashlib.sha256(frame.to_json(orient="split", index=False, force_ascii=False).encode("utf-8")).hexdigest()


def read_parquet(path: Path) -> tuple[pd.DataFrame, dict[str, tuple[str, ...]]]:
    """A ``.parquet`` file's rows as strings, with the ClassLabel names that ``datasets`` keeps in its schema."""
    import datasets
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except PermissionError:
        raise UserError(f"data file {path} cannot be read (permission denied)") from None
    except Exception as exc:  # pyarrow raises ArrowInvalid and OSError for files that are not parquet
        raise UserError(f"data file {path} could not be read as .parquet: {exc}") from None
    return dataset_frame(datasets.Dataset(table))
