import json
import unicodedata

import numpy as np
import pandas as pd
import pytest

from study.core.data import load_corpus, normalize_text, split_corpus
from study.core.errors import UserError

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


def test_normalises_then_drops_duplicates_and_conflicting_texts(tmp_path):
    composed = unicodedata.normalize("NFC", "কোথাও আছে")  # Bengali vowel sign o: one code point in NFC
    decomposed = unicodedata.normalize("NFD", "কোথাও আছে")  # ... two in NFD
    assert composed != decomposed
    rows = _rows(n_per_class=10) + [
        {"text": composed, "classes": "joy"},
        {"text": f"  {decomposed}\t\n ", "classes": " joy"},  # same text and label once normalised -> dropped
        {"text": "joy text number 0", "classes": "joy"},  # exact duplicate -> dropped
        {"text": "joy  text number 1", "classes": "anger"},  # conflicts with "joy text number 1"/joy -> both dropped
        {"text": "mixed feelings", "classes": "joy"},  # a conflicting text that is also duplicated:
        {"text": "mixed feelings", "classes": "anger"},
        {"text": "mixed\tfeelings", "classes": "anger"},  # duplicate of the row above -> dropped, then all 2 rows
    ]
    path = tmp_path / "d.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    corpus = load_corpus(path)
    assert corpus.rows_read == 27
    assert corpus.duplicates_dropped == 3
    assert corpus.conflicting_dropped == 4
    assert len(corpus.texts) == 20 == 27 - 3 - 4
    assert len(set(corpus.texts)) == len(corpus.texts)
    assert composed in corpus.texts and decomposed not in corpus.texts
    assert "joy text number 1" not in corpus.texts and "mixed feelings" not in corpus.texts
    assert "joy text number 0" in corpus.texts
    assert corpus.class_counts == {"anger": 10, "joy": 10}
    assert corpus.labels[corpus.texts.index(composed)] == corpus.label_names.index("joy")
    facts = split_corpus(corpus, seed=0).facts(corpus)
    assert (facts["data_rows_read"], facts["data_duplicates_dropped"], facts["data_conflicting_dropped"],
            facts["data_rows"]) == ("27", "3", "4", "20")
    assert normalize_text(" a \u00a0 b\n") == "a b"


def test_exact_duplicates_count_when_nothing_conflicts(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame(_rows() + _rows(n_per_class=2)).to_csv(path, index=False)
    corpus = load_corpus(path)
    counts = (corpus.rows_read, corpus.duplicates_dropped, corpus.conflicting_dropped, len(corpus.texts))
    assert counts == (16, 4, 0, 12)


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
    (_rows(classes=("joy",)) + [{"text": "joy  text number 0", "classes": "anger"}],
     "single class 'joy' after dropping 2 row\\(s\\) of texts with conflicting labels"),
    ([{"text": "same", "classes": "joy"}, {"text": " same ", "classes": "anger"}],
     "'text' occurs with more than one label in column 'classes'"),
])
def test_bad_content_is_a_user_error(tmp_path, rows, message):
    path = tmp_path / "d.csv"
    pd.DataFrame(rows, columns=["text", "classes"]).to_csv(path, index=False)
    with pytest.raises(UserError, match=message):
        load_corpus(path)


def test_bad_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_corpus(tmp_path / "missing.csv")
    (tmp_path / "d.feather").write_bytes(b"x")
    with pytest.raises(UserError, match="unsupported format '.feather'.*parquet"):
        load_corpus(tmp_path / "d.feather")
    (tmp_path / "d.parquet").write_bytes(b"x")
    with pytest.raises(UserError, match="d.parquet could not be read as .parquet"):
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
    path = tmp_path / "small.csv"  # 5 per class passes the count check, yet leaves no room for a validation part
    pd.DataFrame(_rows(n_per_class=5)).to_csv(path, index=False)
    with pytest.raises(UserError, match=r"small.csv: too few examples to stratify.*validation"):
        split_corpus(load_corpus(path), seed=0)


def test_split_is_seeded_stratified_and_disjoint(demo_split):
    from study.core.demo import demo_corpus

    again = split_corpus(demo_corpus(), seed=3)
    assert again.test.texts == demo_split.test.texts
    other = split_corpus(demo_corpus(), seed=4)
    assert other.test.texts != demo_split.test.texts
    total = len(demo_split.train) + len(demo_split.validation) + len(demo_split.test)
    assert abs(len(demo_split.test) / total - 0.3) < 0.01
    for part in (demo_split.train, demo_split.validation, demo_split.test):
        share = np.bincount(part.labels) / len(part)
        assert np.allclose(share, np.bincount(again.train.labels) / len(again.train), atol=0.03)


def _assert_disjoint(corpus, split):
    """Every text in exactly one part, with its corpus label; the parts together are the whole corpus."""
    parts = (split.train, split.validation, split.test)
    sets = [set(p.texts) for p in parts]
    assert [len(s) for s in sets] == [len(p) for p in parts]  # no text twice within a part
    assert not sets[0] & sets[1] and not sets[0] & sets[2] and not sets[1] & sets[2]
    assert sets[0] | sets[1] | sets[2] == set(corpus.texts)
    assert sum(len(p) for p in parts) == len(corpus.texts)
    label_of = dict(zip(corpus.texts, corpus.labels.tolist()))
    for p in parts:
        assert [label_of[t] for t in p.texts] == p.labels.tolist()


def _assert_validation_is_carved_from_train(corpus, seed, test_size=0.3):
    """train + validation is the first-stage training part; the validation size never touches the test part."""
    from sklearn.model_selection import train_test_split

    first_train, first_test = train_test_split(np.arange(len(corpus.texts)), test_size=test_size,
                                               random_state=seed, stratify=corpus.labels)
    first_train_texts = {corpus.texts[i] for i in first_train}
    splits = [split_corpus(corpus, seed=seed, test_size=test_size, validation_size=v) for v in (0.1, 0.2)]
    for split in splits:
        assert set(split.train.texts) | set(split.validation.texts) == first_train_texts
        assert set(split.test.texts) == {corpus.texts[i] for i in first_test}
        assert abs(len(split.validation) / len(first_train) - split.validation_size) < 0.01
    assert splits[0].test.texts == splits[1].test.texts
    assert splits[0].test.labels.tolist() == splits[1].test.labels.tolist()
    assert len(splits[1].validation) > len(splits[0].validation)


def test_split_parts_are_disjoint_and_validation_comes_from_train_demo():
    from study.core.demo import demo_corpus

    corpus = demo_corpus()
    assert len(set(corpus.texts)) == len(corpus.texts)
    for seed in (3, 42):
        _assert_disjoint(corpus, split_corpus(corpus, seed=seed))
        _assert_validation_is_carved_from_train(corpus, seed)


@pytest.fixture(scope="module")
def ubmec():
    if not UBMEC.exists():
        pytest.skip("UBMEC corpus not present at ../shared/data/ubmec/UBMEC.xlsx")
    return load_corpus(UBMEC)


def test_ubmec_split_parts_are_disjoint_and_validation_comes_from_train(ubmec):
    _assert_disjoint(ubmec, split_corpus(ubmec, seed=42))
    _assert_validation_is_carved_from_train(ubmec, 42)


def test_ubmec_facts(ubmec):
    corpus = ubmec
    # Measured on this file (sha256 below): 383 duplicate (NFC text, label) rows, then 61 texts with
    # more than one label (130 rows) dropped.
    assert corpus.rows_read == 13436
    assert corpus.duplicates_dropped == 383
    assert corpus.conflicting_dropped == 130
    assert len(corpus.texts) == 12923
    assert corpus.class_counts == {"joy": 3267, "sadness": 2586, "anger": 2393, "disgust": 2020,
                                   "fear": 1335, "surprise": 1322}
    assert corpus.sha256 == "8f0cdd9d6c250ca982379ec7a390684d39db214520144031a4fd5d612041b180"
    split = split_corpus(corpus, seed=42)
    assert (len(split.train), len(split.validation), len(split.test)) == (8141, 905, 3877)
    facts = split.facts(corpus)
    assert json.loads(facts["data_class_counts"])["joy"] == 3267
    assert (facts["data_duplicates_dropped"], facts["data_conflicting_dropped"]) == ("383", "130")
