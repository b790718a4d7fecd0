"""Data as users keep it (#17 item 2): saved datasets, .parquet, hub ids, given validation/test parts, their
overlap, and every part logged as an MLflow dataset input. Every dataset is built here; nothing goes online."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pandas as pd
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from objectives.trial import DIRECTIONS
from study.core.config import StudyConfig, TrainSettings, study_split
from study.core.data import load_corpus, split_corpus
from study.core.errors import UserError
from study.core.sources import DataSpec, load_data
from study.run import main

NAMES = ["sadness", "joy", "anger"]  # ClassLabel order on purpose not sorted
FEATURES = Features({"sentence": Value("string"), "label": ClassLabel(names=NAMES)})


def _rows(part: str, n_per_class: int) -> dict[str, list]:
    return {"sentence": [f"{part} {NAMES[c]} text {i}" for c in range(3) for i in range(n_per_class)],
            "label": [c for c in range(3) for _ in range(n_per_class)]}


def _dataset(part: str, n_per_class: int, extra: dict[str, list] | None = None) -> Dataset:
    rows = _rows(part, n_per_class)
    for key, values in (extra or {}).items():
        rows[key] += values
    return Dataset.from_dict(rows, features=FEATURES)


def _saved_dict(tmp_path, name="dd", **parts) -> str:
    parts = parts or {"train": _dataset("train", 8), "validation": _dataset("validation", 3),
                      "test": _dataset("test", 4)}
    folder = tmp_path / name
    DatasetDict(parts).save_to_disk(str(folder))
    return str(folder)


def test_a_saved_dataset_dict_gives_its_own_parts_and_classlabel_names(tmp_path):
    corpus = load_data(DataSpec(source=_saved_dict(tmp_path)))
    assert corpus.label_names == ("sadness", "joy", "anger")  # ClassLabel order, not sorted
    assert corpus.text_col == "sentence" and corpus.label_col == "label"
    assert corpus.labels[corpus.texts.index("test anger text 2")] == 2
    assert corpus.given == ("validation", "test")
    assert dict(corpus.flags) == {"data_split": "train", "data_validation": "validation", "data_test": "test"}
    split = split_corpus(corpus, seed=0)
    assert (len(split.train), len(split.validation), len(split.test)) == (24, 9, 12)
    assert all(t.startswith("test ") for t in split.test.texts)
    assert all(t.startswith("validation ") for t in split.validation.texts)
    assert [split.label_names[i] for i in split.test.labels[:4]] == ["sadness"] * 4
    facts = split.facts(corpus)
    assert facts["split_given"] == "validation,test" and facts["data_overlap_test_train"] == "0"
    assert len({facts[f"split_{p}_sha256"] for p in ("train", "validation", "test")}) == 3
    # the same rows saved again are the same data (the digest is of the rows, not of the files datasets wrote)
    again = load_data(DataSpec(source=_saved_dict(tmp_path, "again")))
    assert again.sha256 == corpus.sha256 and len(corpus.sha256) == 64


def test_a_split_named_for_one_part_is_not_another_parts_own(tmp_path):
    corpus = load_data(DataSpec(source=_saved_dict(tmp_path), test="validation"))
    assert dict(corpus.flags) == {"data_split": "train", "data_test": "validation"}
    split = split_corpus(corpus, seed=0)
    assert split.given == ("test",) and all(t.startswith("validation ") for t in split.test.texts)
    assert all(t.startswith("train ") for t in split.validation.texts)  # carved: the dataset's test split unused


def test_a_quick_study_caps_only_the_training_part_of_given_parts(tmp_path):
    corpus = load_data(DataSpec(source=_saved_dict(tmp_path)))
    cfg = StudyConfig(data=str(tmp_path / "dd"), train=TrainSettings(max_train_examples=12))
    capped = study_split(corpus, cfg)
    assert (len(capped.train), len(capped.validation), len(capped.test)) == (12, 9, 12)
    assert np.bincount(capped.train.labels).tolist() == [4, 4, 4]  # stratified


def test_a_single_saved_dataset_is_split_here_like_a_file(tmp_path):
    folder = tmp_path / "one"
    _dataset("all", 20).save_to_disk(str(folder))
    corpus = load_data(DataSpec(source=str(folder)))
    assert corpus.given == () and corpus.label_names == tuple(NAMES)
    split = split_corpus(corpus, seed=1)
    assert len(split.train) + len(split.validation) + len(split.test) == 60 and len(split.test) == 18


def test_parquet_files_from_pandas_and_from_datasets(tmp_path):
    frame = pd.DataFrame({"review": [f"text {c} {i}" for c in "ab" for i in range(6)],
                          "target": [c for c in "ba" for _ in range(6)], "stars": list(range(12))})
    frame.to_parquet(tmp_path / "plain.parquet")
    corpus = load_corpus(tmp_path / "plain.parquet")
    assert (corpus.text_col, corpus.label_col, corpus.label_names) == ("review", "target", ("a", "b"))
    assert corpus.class_counts == {"a": 6, "b": 6}
    _dataset("p", 5).to_parquet(str(tmp_path / "labels.parquet"))  # datasets keeps the ClassLabel in the schema
    corpus = load_data(DataSpec(source=str(tmp_path / "labels.parquet")))
    assert corpus.label_names == tuple(NAMES) and corpus.class_counts == {"sadness": 5, "joy": 5, "anger": 5}
    assert corpus.origins["train"].kind == "file" and corpus.sha256 == load_corpus(tmp_path / "labels.parquet").sha256


def _csv(path, rows):
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def _file_rows(prefix, n, classes=("joy", "anger")):
    return [{"text": f"{prefix} {c} {i}", "classes": c} for c in classes for i in range(n)]


def test_validation_and_test_files_replace_the_carved_parts(tmp_path):
    train = _csv(tmp_path / "train.csv", _file_rows("train", 20))
    val = _csv(tmp_path / "val.csv", _file_rows("val", 4))
    pd.DataFrame(_file_rows("test", 6)).to_json(tmp_path / "test.jsonl", orient="records", lines=True)
    both = load_data(DataSpec(source=train, validation=val, test=str(tmp_path / "test.jsonl")))
    split = split_corpus(both, seed=0)
    assert (len(split.train), len(split.validation), len(split.test)) == (40, 8, 12)
    assert both.flags["data_validation"] == val and both.origins["test"].source == str(tmp_path / "test.jsonl")
    assert both.sha256 != load_corpus(tmp_path / "train.csv").sha256  # the parts are part of the data's identity
    only_test = load_data(DataSpec(source=train, test=str(tmp_path / "test.jsonl")))
    split = split_corpus(only_test, seed=0, validation_size=0.25)
    assert split.given == ("test",) and (len(split.train), len(split.validation), len(split.test)) == (30, 10, 12)
    assert set(split.validation.texts) < {r["text"] for r in _file_rows("train", 20)}  # carved from train


def test_texts_in_several_given_parts_stay_in_one_and_are_counted(tmp_path):
    train_rows = _file_rows("train", 20)
    test_rows = _file_rows("test", 6) + [{"text": "train  joy 0", "classes": "joy"},  # train's, once normalised
                                         {"text": "train anger 1", "classes": "joy"},  # train's, another label
                                         {"text": "val joy 0", "classes": "joy"}]
    val_rows = _file_rows("val", 4) + [{"text": "train joy 5", "classes": "joy"}]
    corpus = load_data(DataSpec(source=_csv(tmp_path / "tr.csv", train_rows), validation=_csv(tmp_path / "v.csv", val_rows),
                                test=_csv(tmp_path / "te.csv", test_rows)))
    assert dict(corpus.overlap) == {"test_train": 2, "validation_train": 1, "test_validation": 1}
    split = split_corpus(corpus, seed=0)
    assert (len(split.train), len(split.validation), len(split.test)) == (40 - 3, 9 - 1, 15)
    assert "train joy 0" in split.test.texts and "train joy 0" not in split.train.texts
    assert split.test.labels[split.test.texts.index("train anger 1")] == split.label_names.index("joy")
    assert not set(split.train.texts) & (set(split.test.texts) | set(split.validation.texts))
    facts = split.facts(corpus)
    assert (facts["data_overlap_test_train"], facts["data_overlap_validation_train"],
            facts["data_overlap_test_validation"]) == ("2", "1", "1")
    from study.orchestration.prepare import data_lines

    said = "\n".join(data_lines(corpus, split))
    assert "2 test and 1 validation texts dropped from the training part" in said
    assert f"validation: {tmp_path / 'v.csv'}" in said


def test_a_hidden_test_split_is_carved_instead_and_said(tmp_path):
    hidden = Dataset.from_dict({"sentence": [f"hidden {i}" for i in range(9)], "label": [-1] * 9}, features=FEATURES)
    folder = _saved_dict(tmp_path, train=_dataset("train", 10), test=hidden)
    corpus = load_data(DataSpec(source=folder))
    assert corpus.given == () and "'test' split has no labels" in corpus.notes[0]
    assert not any(t.startswith("hidden") for t in corpus.texts)
    with pytest.raises(UserError, match=r"split 'test': column 'label' is blank in 9 row\(s\) \(ClassLabel value -1"):
        load_data(DataSpec(source=folder, test="test"))


@pytest.mark.parametrize("spec, message", [
    ({"split": "training"}, r"--data-split 'training': dataset folder .* has no such split; its splits are "
                            r"'train', 'validation', 'test'"),
    ({"test": "holdout"}, r"--test-data 'holdout': dataset .* has no split of that name"),
    ({"validation": "train"}, r"--validation-data 'train' is the split trained on"),
    ({"label_col": "emotion"}, r"dataset folder .*dd split 'train' has no label column 'emotion' \(given with "
                               r"--label-col\); its columns are: 'sentence', 'label'"),
    ({"text_col": "body"}, r"no text column 'body'"),
    ({"config": "default"}, r"--data-config 'default' is for a Hugging Face hub dataset id"),
])
def test_bad_dataset_flags_are_user_errors(tmp_path, spec, message):
    with pytest.raises(UserError, match=message):
        load_data(DataSpec(source=_saved_dict(tmp_path), **spec))


def test_bad_parts_are_user_errors(tmp_path):
    train = _csv(tmp_path / "train.csv", _file_rows("train", 10))
    with pytest.raises(UserError, match="--test-data: data file .*nope.csv does not exist"):
        load_data(DataSpec(source=train, test=str(tmp_path / "nope.csv")))
    with pytest.raises(UserError, match=r"te.csv: label\(s\) 'fear' never occur in the training part"):
        load_data(DataSpec(source=train, test=_csv(tmp_path / "te.csv", _file_rows("t", 3, ("joy", "fear")))))
    with pytest.raises(UserError, match="--test-data need --data"):
        load_data(DataSpec(test=train))
    with pytest.raises(UserError, match="--data-split 'train': --data .* is a single table"):
        load_data(DataSpec(source=train, split="train"))
    with pytest.raises(UserError, match="every validation text is also a test text"):
        load_data(DataSpec(source=train, validation=_csv(tmp_path / "v.csv", _file_rows("v", 3)),
                           test=str(tmp_path / "v.csv")))
    with pytest.raises(UserError, match="a DatasetDict folder holds several splits"):
        load_data(DataSpec(source=train, test=_saved_dict(tmp_path)))


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face datasets cache, offline (as conftest sets HF_HUB_OFFLINE=1 for every test)."""
    import datasets

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    return cache


def test_a_hub_id_offline_without_a_cache_says_the_network_is_needed(tmp_path, hub_cache, capsys):
    with pytest.raises(UserError, match="'nobody/nothing' is not in the local Hugging Face cache.*needs the network"):
        load_data(DataSpec(source="nobody/nothing"))
    stores = tmp_path / "stores"
    assert main(["--quick", "--data", "nobody/nothing", "--storage", f"sqlite:///{stores}/o.db",
                 "--tracking-uri", f"sqlite:///{stores}/m.db"]) == 2
    assert "needs the network" in capsys.readouterr().err
    assert not stores.exists()


def test_a_hub_id_offline_reads_a_warm_cache(tmp_path, hub_cache):
    """The cache as ``load_dataset("org/name")`` leaves it (``<cache>/org___name/<config>/<version>/<hash>``),
    made here by datasets' own parquet builder, since nothing may be downloaded in a test."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    files = {}
    for part, n in (("train", 8), ("test", 4)):
        files[part] = str(tmp_path / f"{part}.parquet")
        _dataset(part, n).to_parquet(files[part])
    Parquet(cache_dir=str(hub_cache), dataset_name="name", config_id="default", hash="0123abcd",
            data_files=files).download_and_prepare()
    (hub_cache / "name").rename(hub_cache / "org___name")
    corpus = load_data(DataSpec(source="org/name"))
    assert corpus.label_names == tuple(NAMES) and corpus.given == ("test",)
    test = corpus.origins["test"]
    assert (test.source, test.kind, test.config, test.split, test.describe()) == (
        "org/name", "hub", None, "test", "org/name (split test)")
    split = split_corpus(corpus, seed=0)
    assert len(split.test) == 12 and len(split.train) + len(split.validation) == 24


def test_every_part_is_a_dataset_input_with_its_digest_and_source(tmp_path):
    from mlflow.tracking import MlflowClient

    from study.reporting.tracking import Tracker

    corpus = load_data(DataSpec(source=_saved_dict(tmp_path)))
    split = split_corpus(corpus, seed=0)
    facts = split.facts(corpus)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri)
    experiment = tracker.experiment("inputs")
    run_id = tracker.create_run(experiment, "r", {})
    tracker.log_inputs(run_id, split.inputs(corpus))
    tracker.log_inputs(run_id, split.inputs(corpus))  # logged again (a resumed study): still three inputs
    client = MlflowClient(tracking_uri=uri)
    inputs = client.get_run(run_id).inputs.dataset_inputs
    by_context = {i.tags[0].value: i.dataset for i in inputs}
    assert sorted(by_context) == ["test", "training", "validation"] and len(inputs) == 3
    for context, part in (("training", "train"), ("validation", "validation"), ("test", "test")):
        dataset = by_context[context]
        assert dataset.name == "dd" and dataset.source_type == "local"
        assert dataset.digest == facts[f"split_{part}_sha256"][:36]
        assert json.loads(dataset.source)["uri"].endswith("/dd")
        assert json.loads(dataset.profile)["num_rows"] == int(facts[f"split_{part}"])
    tracker.create_run(experiment, "no inputs", {})  # found by none of the conditions below
    for condition in (f"dataset.digest = '{by_context['test'].digest}'", "dataset.context = 'validation'",
                      "dataset.name = 'dd'"):
        assert [r.info.run_id for r in client.search_runs([experiment], condition)] == [run_id], condition
    assert not client.search_runs([experiment], f"dataset.digest = '{'0' * 36}'")


def test_a_hub_part_names_its_dataset_config_and_split():
    from study.core.data import Origin
    from study.reporting.tracking import dataset_source

    source = dataset_source(Origin("org/name", "hub", "0" * 64, "small", "validation"))
    assert (source.path, source.config_name, source.split) == ("org/name", "small", "validation")
    assert Origin("org/name", "hub", "0" * 64, "small", "test").name == "org/name/small"


def test_a_resumed_study_refuses_other_parts(tmp_path):
    from study.orchestration.prepare import prepare

    train = _csv(tmp_path / "train.csv", _file_rows("train", 20))
    test = _csv(tmp_path / "test.csv", _file_rows("test", 6))
    storage = f"sqlite:///{tmp_path}/optuna.db"
    cfg = StudyConfig(data=train, test_data=test, storage=storage, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                      students=("scratch-tiny",), study_name="s", cache_dir=tmp_path / "cache")
    study = optuna.create_study(study_name="s.scratch-base.scratch-tiny", storage=storage, directions=DIRECTIONS)
    study.set_user_attr("data_sha256", load_corpus(tmp_path / "train.csv").sha256)  # run on train.csv alone
    with pytest.raises(UserError, match="was run on other data"):
        prepare(cfg, quiet=True)
    study.set_user_attr("data_sha256", load_data(cfg.data_spec).sha256)
    assert prepare(cfg, quiet=True).split.given == ("test",)


@pytest.mark.slow
def test_a_quick_study_runs_on_a_saved_dataset_dict_with_its_own_parts(tmp_path):
    from mlflow.tracking import MlflowClient

    from study.core.demo import demo_corpus

    demo = demo_corpus()  # already clean: every text once, so each part keeps exactly its rows
    features = Features({"text": Value("string"), "label": ClassLabel(names=list(demo.label_names))})
    sizes = {"train": 450, "validation": 120, "test": 150}
    parts, start = {}, 0
    for part, n in sizes.items():
        parts[part] = Dataset.from_dict({"text": list(demo.texts[start:start + n]),
                                         "label": demo.labels[start:start + n].tolist()}, features=features)
        start += n
    folder = tmp_path / "demo-dict"
    DatasetDict(parts).save_to_disk(str(folder))
    storage, tracking = f"sqlite:///{tmp_path}/optuna.db", f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["--objective", "pareto", "--quick", "--n-trials", "1", "--study-name", "dd", "--data", str(folder),
                 "--teacher", "scratch-mini", "--students", "scratch-tiny", "--storage", storage,
                 "--tracking-uri", tracking, "--cache-dir", str(tmp_path / "cache"), "--quiet"]) == 0
    client = MlflowClient(tracking_uri=tracking)
    experiment = client.get_experiment_by_name("dd").experiment_id
    (trial,) = client.search_runs([experiment], "tags.role = 'trial'")
    (parent,) = client.search_runs([experiment], "tags.role = 'study'")
    params = trial.data.params
    assert (params["split_train"], params["split_validation"], params["split_test"]) == ("450", "120", "150")
    assert (params["split_given"], params["data_split"], params["data_test"]) == ("validation,test", "train", "test")
    counts = json.loads(params["data_class_counts"])
    assert list(counts) == list(demo.label_names) and sum(counts.values()) == sum(sizes.values())
    assert params["data_overlap_test_train"] == "0" and params["data_source"] == str(folder)
    for run in (trial, parent):
        inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
        assert sorted(inputs) == ["test", "training", "validation"]
        for context, part in (("training", "train"), ("validation", "validation"), ("test", "test")):
            assert inputs[context].digest == params[f"split_{part}_sha256"][:36]
            assert inputs[context].name == "demo-dict"
            assert json.loads(inputs[context].profile)["num_rows"] == sizes[part]
    study = optuna.load_study(study_name="dd.scratch-mini.scratch-tiny", storage=storage)
    assert study.user_attrs["data_sha256"] == params["data_sha256"] == load_data(DataSpec(source=str(folder))).sha256
