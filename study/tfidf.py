"""The TF-IDF (char 1-4 + word 1-2) + logistic-regression pipeline, and its out-of-fold probabilities."""

from __future__ import annotations

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
