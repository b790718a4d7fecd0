import json
import unicodedata

import numpy as np
import pandas as pd
import pytest

from study.data import load_corpus, normalize_text, split_corpus
from study.errors import UserError

from conftest import UBMEC


def _rows(n_per_class=6, classes=("joy", "anger")):
    return [{"text": f"{c} text number {i}", "classes": c} for c in classes for i in range(n_per_class)]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".xlsx"])
def test_reads_every_supported_format(tmp_path, suffix):
    frame = pd.DataFrame(_rows())
    path = tmp_path / f"data{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        frame.to_excel(path, index=False)
    corpus = load_corpus(path)
    assert len(corpus.texts) == 12
    assert corpus.label_names == ("anger", "joy")
    assert corpus.class_counts == {"anger": 6, "joy": 6}
    assert len(corpus.sha256) == 64


def test_drops_exact_duplicates_only_and_normalises(tmp_path):
    decomposed = unicodedata.normalize("NFD", "কোথাও")  # Bengali vowel sign, decomposed
    rows = _rows() + [{"text": "joy text number 0", "classes": "joy"},  # exact duplicate -> dropped
                      {"text": "joy text number 0", "classes": "anger"},  # same text, other label -> kept
                      {"text": f"  {decomposed}\t\n  আছে ", "classes": "joy"}]
    path = tmp_path / "d.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    corpus = load_corpus(path)
    assert corpus.rows_read == 15
    assert corpus.duplicates_dropped == 1
    assert len(corpus.texts) == 14
    assert unicodedata.normalize("NFC", "কোথাও") + " আছে" in corpus.texts
    assert normalize_text(" a \u00a0 b\n") == "a b"


def test_explicit_columns(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame([{"body": r["text"], "y": r["classes"]} for r in _rows()]).to_csv(path, index=False)
    with pytest.raises(UserError, match="no text column found"):
        load_corpus(path)
    corpus = load_corpus(path, text_col="body", label_col="y")
    assert len(corpus.texts) == 12


@pytest.mark.parametrize("rows, message", [
    ([], "no data rows"),
    ([{"text": "", "classes": "joy"}] + _rows(), "blank in 1 row"),
    ([{"text": "x", "classes": " "}] + _rows(), "'classes' is blank"),
    (_rows(classes=("joy",)), "single class"),
])
def test_bad_content_is_a_user_error(tmp_path, rows, message):
    path = tmp_path / "d.csv"
    pd.DataFrame(rows, columns=["text", "classes"]).to_csv(path, index=False)
    with pytest.raises(UserError, match=message):
        load_corpus(path)


def test_bad_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_corpus(tmp_path / "missing.csv")
    (tmp_path / "d.parquet").write_bytes(b"x")
    with pytest.raises(UserError, match="unsupported format"):
        load_corpus(tmp_path / "d.parquet")
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("text,classes\ncaf\xe9,joy\n".encode("latin-1"))
    with pytest.raises(UserError, match="not valid UTF-8"):
        load_corpus(bad)
    missing = tmp_path / "cols.csv"
    pd.DataFrame(_rows()).to_csv(missing, index=False)
    with pytest.raises(UserError, match="no label column 'emotion'.*columns are: 'text', 'classes'"):
        load_corpus(missing, label_col="emotion")


def test_class_too_small_to_stratify(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame(_rows() + [{"text": "rare", "classes": "fear"}]).to_csv(path, index=False)
    with pytest.raises(UserError, match="'fear' has 1"):
        split_corpus(load_corpus(path), seed=0)


def test_split_is_seeded_stratified_and_disjoint(demo_split):
    from study.demo import demo_corpus

    again = split_corpus(demo_corpus(), seed=3)
    assert again.test.texts == demo_split.test.texts
    other = split_corpus(demo_corpus(), seed=4)
    assert other.test.texts != demo_split.test.texts
    total = len(demo_split.train) + len(demo_split.validation) + len(demo_split.test)
    assert abs(len(demo_split.test) / total - 0.3) < 0.01
    for part in (demo_split.train, demo_split.validation, demo_split.test):
        share = np.bincount(part.labels) / len(part)
        assert np.allclose(share, np.bincount(again.train.labels) / len(again.train), atol=0.03)


@pytest.mark.skipif(not UBMEC.exists(), reason="UBMEC corpus not present at ../shared/data/ubmec/UBMEC.xlsx")
def test_ubmec_facts():
    corpus = load_corpus(UBMEC)
    assert corpus.rows_read == 13436
    assert corpus.duplicates_dropped == 364
    assert len(corpus.texts) == 13072
    assert corpus.class_counts == {"joy": 3290, "sadness": 2622, "anger": 2422, "disgust": 2049,
                                   "fear": 1348, "surprise": 1341}
    assert corpus.sha256 == "8f0cdd9d6c250ca982379ec7a390684d39db214520144031a4fd5d612041b180"
    split = split_corpus(corpus, seed=42)
    assert len(split.train) + len(split.validation) == 9150
    assert len(split.test) == 3922
    assert json.loads(split.facts(corpus)["data_class_counts"])["joy"] == 3290
