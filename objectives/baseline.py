"""The non-neural reference: TF-IDF (char 1-4 + word 1-2) with logistic regression, measured like a trial."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score

from objectives.measure import Speed, measure_text_speed
from study.core.config import MeasureSettings
from study.core.data import DataSplit
from study.core.tfidf import tfidf_pipeline
from study.core.training import macro_f1


@dataclass(frozen=True)
class BaselineResult:
    macro_f1: float  # on the test texts
    accuracy: float
    macro_f1_validation: float  # on the validation texts, like every trial's objective
    speed: Speed
    size_bytes: int  # the pickled scikit-learn pipeline
    predictions: np.ndarray  # on the test texts (for paired intervals against another model)

    def as_metrics(self, prefix: str = "baseline_") -> dict[str, float]:
        return {f"{prefix}macro_f1": self.macro_f1, f"{prefix}accuracy": self.accuracy,
                f"{prefix}macro_f1_validation": self.macro_f1_validation,
                f"{prefix}latency_ms": self.speed.latency_ms, f"{prefix}throughput_per_s": self.speed.throughput_per_s,
                f"{prefix}latency_e2e_ms": self.speed.latency_ms,  # it takes raw text: its latency is end to end
                f"{prefix}size_mb": self.size_bytes / 1e6}


def run_baseline(split: DataSplit, settings: MeasureSettings, seed: int) -> BaselineResult:
    """Fit on the training texts (as the students learn from them), score on validation (as trials are chosen)
    and on test (as they are reported), time like every model."""
    pipe = tfidf_pipeline(seed)
    pipe.fit(list(split.train.texts), list(split.train.labels))
    validation = macro_f1(split.validation.labels, pipe.predict(list(split.validation.texts)))
    predictions = pipe.predict(list(split.test.texts))
    speed = measure_text_speed(pipe.predict_proba, split.test.texts, settings, runtime="scikit-learn")
    return BaselineResult(macro_f1(split.test.labels, predictions),
                          float(accuracy_score(split.test.labels, predictions)), validation, speed,
                          len(pickle.dumps(pipe)), np.asarray(predictions))
