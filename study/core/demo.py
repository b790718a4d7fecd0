"""A small synthetic demo corpus, built deterministically, for runs without ``--data``."""

from __future__ import annotations

import hashlib
import random

import pandas as pd

from study.core.data import Corpus, corpus_from_frame

DEMO_SOURCE = "built-in demo corpus (synthetic, 3 classes)"

_CUES = {
    "joy": ["happy", "delighted", "wonderful", "খুশি", "আনন্দ", "loved it", "great day", "smiling"],
    "sadness": ["sad", "heartbroken", "lonely", "দুঃখ", "কষ্ট", "miss them", "crying", "gloomy"],
    "anger": ["furious", "angry", "outrageous", "রাগ", "ক্ষোভ", "unacceptable", "fed up", "shameful"],
}
_SUBJECTS = ["I", "we", "my friend", "the family", "everyone here", "আমি", "আমরা", "the crowd"]
_CONTEXTS = ["after the match", "about the drama", "this morning", "at the news", "নাটকটি দেখে",
             "after the exam", "with the result", "at the office", "গানটি শুনে", "on the trip"]
_FILLERS = ["really", "so", "very", "honestly", "একদম", "truly", "", "", "just"]


def demo_frame(rows_per_class: int = 400, seed: int = 7) -> pd.DataFrame:
    """Template sentences with one emotion cue each; ~10% carry a second, misleading cue, and ~12%
    have their label replaced by another class (annotator noise), so no model scores perfectly."""
    rng = random.Random(seed)
    records = []
    names = sorted(_CUES)
    for label in names:
        for _ in range(rows_per_class):
            cue = rng.choice(_CUES[label])
            words = [rng.choice(_SUBJECTS), "feel", rng.choice(_FILLERS), cue, rng.choice(_CONTEXTS)]
            if rng.random() < 0.1:
                other = rng.choice([n for n in names if n != label])
                words.append("but not " + rng.choice(_CUES[other]))
            noisy = rng.random() < 0.12
            shown = rng.choice([n for n in names if n != label]) if noisy else label
            records.append({"text": " ".join(w for w in words if w), "label": shown})
    rng.shuffle(records)
    return pd.DataFrame.from_records(records)


def demo_corpus() -> Corpus:
    frame = demo_frame()
    digest = hashlib.sha256(frame.to_json(orient="records", force_ascii=False).encode("utf-8")).hexdigest()
    return corpus_from_frame(frame, source=DEMO_SOURCE, sha256=digest, path=DEMO_SOURCE)
