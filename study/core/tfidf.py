"""The TF-IDF (char 1-4 + word 1-2) + logistic-regression pipeline, its out-of-fold probabilities, and its
file format: skops (no pickle), loaded only if it builds nothing but the pipeline's own scikit-learn types."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline, make_union


def tfidf_pipeline(seed: int):
    features = make_union(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), min_df=2, sublinear_tf=True, max_features=200_000),
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), min_df=1, sublinear_tf=True, token_pattern=r"\S+"))
    return make_pipeline(features, LogisticRegression(max_iter=2000, C=10.0, random_state=seed))


def out_of_fold_logits(texts: tuple[str, ...], labels: np.ndarray, seed: int, folds: int = 5) -> np.ndarray:
    """Log-probabilities the pipeline gives each text when trained on the other folds only (so they are
    honest soft labels for the texts it did not see), in the texts' order."""
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    proba = cross_val_predict(tfidf_pipeline(seed), list(texts), labels, cv=cv, method="predict_proba")
    return np.log(np.clip(proba, 1e-6, 1.0)).astype(np.float32)


# The scikit-learn classes a fitted tfidf_pipeline is made of: the only objects its saved file may build
# (besides the numpy arrays, strings and containers skops rebuilds as data).
PIPELINE_TYPES = ("sklearn.pipeline.Pipeline", "sklearn.pipeline.FeatureUnion",
                  "sklearn.feature_extraction.text.TfidfVectorizer",
                  "sklearn.feature_extraction.text.TfidfTransformer",
                  "sklearn.linear_model._logistic.LogisticRegression")
_OBJECT_LOADERS = ("ObjectNode", "ReduceNode")  # skops nodes that build an instance of a named class


def save_pipeline(pipe, path: Path) -> None:
    """Write a fitted pipeline in the skops format: JSON and .npy arrays in a zip, no code."""
    import skops.io as sio

    sio.dump(pipe, path)


def load_pipeline(path: Path):
    """A pipeline written by save_pipeline. Refused (UserError) before anything is built if the file names a
    class outside PIPELINE_TYPES, or anything skops does not trust by default (functions, other types)."""
    import skops.io as sio
    from skops.io.exceptions import UntrustedTypesFoundException

    from study.core.errors import UserError

    try:
        with zipfile.ZipFile(path) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not a TF-IDF pipeline saved in the skops format ({exc})") from None
    built = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            if node.get("__loader__") in _OBJECT_LOADERS:
                built.add(f"{node.get('__module__')}.{node.get('__class__')}")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    try:
        walk(schema)
    except RecursionError:
        raise UserError(f"{path} is refused: its schema is nested too deeply to check") from None
    if unexpected := sorted(built - set(PIPELINE_TYPES)):
        raise UserError(f"{path} is refused: it would build {', '.join(unexpected)}, which the TF-IDF pipeline "
                        f"is not made of; delete the folder {path.parent} to fit the member again")
    try:
        return sio.load(path, trusted=list(PIPELINE_TYPES))
    except UntrustedTypesFoundException as exc:
        raise UserError(f"{path} is refused: it holds types that are not trusted ({exc}); delete the folder "
                        f"{path.parent} to fit the member again") from None
