"""An already fine-tuned teacher used as it is: labels matched by name (or a label map), its head put in the
corpus's order, no training epoch; heads and tokenizers of checkpoints stated in the run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from study.core.errors import UserError

CORPUS = ("anger", "joy", "sadness")  # the demo corpus's labels, sorted: its label indices


def _checkpoint(folder: Path, id2label: dict[int, str], tokenizer_dir: Path, *, seed: int = 0, layers: int = 1,
                trained_as: str = "BertForSequenceClassification") -> Path:
    """A tiny BERT classifier saved with ``id2label`` and the demo corpus's WordPiece tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=len(id2label),
                        id2label=id2label, label2id={v: k for k, v in id2label.items()})
    BertForSequenceClassification(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    if trained_as != "BertForSequenceClassification":  # as a base checkpoint's config says
        path = folder / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "architectures": [trained_as]}))
    return folder


def _spec(folder: Path):
    from study.core.models import resolve_model

    return resolve_model(str(folder))


# ---- label matching and label maps ----------------------------------------------------------------------------

def test_labels_are_matched_by_name_and_the_order_maps_each_corpus_label_to_its_head_column():
    from study.core.models import match_head

    match = match_head(("joy", "sadness", "anger"), CORPUS)
    assert match.fits and match.order == (2, 0, 1) and match.state == "reordered"
    same = match_head(CORPUS, CORPUS)
    assert same.order == (0, 1, 2) and same.state == "kept"
    mapped = match_head(("ANGRY", "happy", "sadness"), CORPUS, {"ANGRY": "anger", "happy": "joy"})
    assert mapped.order == (0, 1, 2)  # labels the map does not name keep their own
    partial = match_head(("joy", "fear", "anger"), CORPUS)
    assert not partial.fits and partial.missing == ("sadness",) and partial.extra == ("fear",)
    assert partial.shared == 2 and partial.state == "reinitialised"
    assert "missing corpus labels: sadness" in partial.describe() and "the corpus lacks: fear" in partial.describe()
    more = match_head((*CORPUS, "fear"), CORPUS)  # a head with labels the corpus lacks does not fit either
    assert not more.fits and more.extra == ("fear",) and more.missing == ()


def test_a_wrong_label_map_is_a_user_error():
    from study.core.models import match_head

    with pytest.raises(UserError, match="'happy', which .* does not have"):
        match_head(CORPUS, CORPUS, {"happy": "joy"})
    with pytest.raises(UserError, match="'glad', which the corpus does not have"):
        match_head(("happy", "anger", "sadness"), CORPUS, {"happy": "glad"})
    with pytest.raises(UserError, match="'joy' more than once"):
        match_head(("happy", "anger", "joy"), CORPUS, {"happy": "joy"})


def test_label_map_files_json_and_yaml(tmp_path):
    from study.core.models import load_label_map

    (tmp_path / "map.json").write_text(json.dumps({"0": "anger", "happy": "joy"}))
    assert load_label_map(tmp_path / "map.json") == {"0": "anger", "happy": "joy"}
    (tmp_path / "map.yaml").write_text("0: anger\nhappy: joy\n'no': sadness\n")
    assert load_label_map(tmp_path / "map.yaml") == {"0": "anger", "happy": "joy", "no": "sadness"}
    (tmp_path / "bool.yaml").write_text("no: sadness\n")  # YAML reads an unquoted no as False
    with pytest.raises(UserError, match="quote labels"):
        load_label_map(tmp_path / "bool.yaml")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="expected a non-empty mapping"):
        load_label_map(tmp_path / "list.json")
    with pytest.raises(UserError, match="no such file"):
        load_label_map(tmp_path / "absent.json")


# ---- the plan: fine-tune here or use as it is -------------------------------------------------------------------

def test_plan_auto_and_no_use_a_fitting_checkpoint_as_it_is_and_yes_fine_tunes_it(tmp_path, tokenizer_dir):
    from study.core.teacher import plan_teacher

    spec = _spec(_checkpoint(tmp_path / "fine-tuned", {0: "joy", 1: "sadness", 2: "anger"}, tokenizer_dir))
    auto, never, always = (plan_teacher(spec, CORPUS, mode) for mode in ("auto", "no", "yes"))
    assert not auto.finetune and not never.finetune and auto.head == "reordered"
    assert auto.checkpoint.startswith("sha256:") and "used as it is" in auto.why
    assert always.finetune and always.head == "reordered" and "--teacher-finetune yes" in always.why


def test_plan_refuses_a_partial_match_and_no_refuses_a_head_that_does_not_fit(tmp_path, tokenizer_dir):
    from study.core.models import ZOO
    from study.core.teacher import plan_teacher

    partial = _spec(_checkpoint(tmp_path / "partial", {0: "joy", 1: "fear", 2: "anger"}, tokenizer_dir))
    for mode in ("auto", "no"):
        with pytest.raises(UserError, match="missing corpus labels: sadness") as error:
            plan_teacher(partial, CORPUS, mode)
        assert "never by position" in str(error.value) and "--label-map" in str(error.value)
    assert plan_teacher(partial, CORPUS, "yes").head == "reinitialised"  # asked for: a new head, fine-tuned
    mapped = plan_teacher(partial, CORPUS, "auto", {"fear": "sadness"})
    assert not mapped.finetune and mapped.labels == {"fear": "sadness"}
    other = _spec(_checkpoint(tmp_path / "other-task", {0: "LABEL_0", 1: "LABEL_1"}, tokenizer_dir))
    plan = plan_teacher(other, CORPUS, "auto")  # nothing in common: fine-tuned here under a new head
    assert plan.finetune and plan.head == "reinitialised" and "re-initialised head" in plan.why
    with pytest.raises(UserError, match="missing corpus labels: anger, joy, sadness"):
        plan_teacher(other, CORPUS, "no")
    with pytest.raises(UserError, match="does not fit"):
        plan_teacher(other, CORPUS, "auto", {"LABEL_0": "joy"})  # a map that does not make it fit
    base = _spec(_checkpoint(tmp_path / "base", {0: "LABEL_0", 1: "LABEL_1"}, tokenizer_dir, trained_as="BertForMaskedLM"))
    assert plan_teacher(base, CORPUS, "auto").head == "new"
    with pytest.raises(UserError, match="has no sequence-classification head"):
        plan_teacher(base, CORPUS, "auto", {"LABEL_0": "joy"})
    with pytest.raises(UserError, match="built from scratch"):
        plan_teacher(ZOO["scratch-base"], CORPUS, "no")


# ---- the cached teacher -----------------------------------------------------------------------------------------

def _no_training(monkeypatch):
    import study.core.teacher

    def refuse(*_args, **_kwargs):
        raise AssertionError("the teacher was trained")

    for name in ("fit", "mlm_pretrain", "_train_teacher"):
        monkeypatch.setattr(study.core.teacher, name, refuse)


def test_an_as_is_teacher_is_cached_with_its_logits_in_the_corpus_order_and_no_training(
        tmp_path, demo_split, tokenizer_dir, monkeypatch):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from study.core.config import TrainSettings
    from study.core.teacher import plan_teacher, prepare_teacher
    from study.core.training import macro_f1

    assert demo_split.label_names == CORPUS
    folder = _checkpoint(tmp_path / "fine-tuned", {0: "joy", 1: "sadness", 2: "anger"}, tokenizer_dir, seed=3)
    plan = plan_teacher(_spec(folder), CORPUS)
    _no_training(monkeypatch)
    teacher = prepare_teacher(plan.spec, demo_split, TrainSettings(max_length=32), tmp_path / "cache", 0, plan=plan)
    assert not teacher.finetuned_here and teacher.kd_from_baseline == 0.0 and teacher.tfidf_weight == 0.0
    assert sorted(p.name for p in teacher.directory.iterdir()) == ["logits.npz", "meta.json", "model", "tokenizer"]

    # computed directly from the folder: the checkpoint's columns, taken in the corpus's order
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    texts = list(demo_split.validation.texts[:40])
    with torch.no_grad():
        own = model(**tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")).logits
    assert np.allclose(teacher.validation_logits[:40], own.numpy()[:, [2, 0, 1]], atol=1e-5)
    assert not np.allclose(teacher.validation_logits[:40], own.numpy(), atol=1e-3)  # the reorder did something
    assert teacher.validation_macro_f1 == pytest.approx(
        macro_f1(demo_split.validation.labels, teacher.validation_logits.argmax(axis=1)))
    # the cached network is in the corpus's order too (what trials compress and time, and teacher-lN copy)
    cached = teacher.load_network()
    assert cached.config.id2label == dict(enumerate(CORPUS))
    meta = json.loads((teacher.directory / "meta.json").read_text())
    assert meta["finetuned_here"] is False and meta["head"] == "reordered" and meta["checkpoint"] == plan.checkpoint
    again = prepare_teacher(plan.spec, demo_split, TrainSettings(max_length=32), tmp_path / "cache", 0, plan=plan)
    assert again.from_cache and again.directory == teacher.directory


def test_the_cache_key_holds_the_checkpoint_the_label_map_and_whether_it_is_fine_tuned(
        tmp_path, demo_split, tokenizer_dir):
    from study.core.config import TrainSettings
    from study.core.models import ZOO
    from study.core.teacher import plan_teacher, teacher_cache_key

    settings = TrainSettings(max_length=32)
    folder = _checkpoint(tmp_path / "t", {0: "joy", 1: "fear", 2: "anger"}, tokenizer_dir)
    spec = _spec(folder)

    def key(mode="auto", label_map=None, **changed):
        return teacher_cache_key(spec, demo_split, TrainSettings(**{"max_length": 32, **changed}), 0,
                                 plan_teacher(spec, CORPUS, mode, label_map))

    as_is = key(label_map={"fear": "sadness"})
    assert as_is == key("no", {"fear": "sadness"})  # the same teacher, untrained either way
    assert as_is == key(label_map={"fear": "sadness"}, max_epochs=1)  # no training setting matters but max_length
    assert as_is != key(label_map={"fear": "sadness"}, max_length=64)
    assert as_is != key("yes", {"fear": "sadness"}) != key("yes")
    assert as_is != key(label_map={"fear": "sadness", "joy": "anger", "anger": "joy"})
    _checkpoint(folder, {0: "joy", 1: "fear", 2: "anger"}, tokenizer_dir, seed=1)  # other weights, same name
    assert as_is != key(label_map={"fear": "sadness"})
    # a teacher trained from scratch keeps the key it had before plans existed (its cache and studies stay valid)
    scratch = ZOO["scratch-base"]
    assert (teacher_cache_key(scratch, demo_split, settings, 0, plan_teacher(scratch, CORPUS))
            == teacher_cache_key(scratch, demo_split, settings, 0))


def test_yes_fine_tunes_a_fitting_checkpoint_from_its_own_head_in_the_corpus_order(
        tmp_path, demo_split, tokenizer_dir, monkeypatch):
    import study.core.teacher
    from study.core.config import TrainSettings
    from study.core.teacher import plan_teacher, prepare_teacher

    folder = _checkpoint(tmp_path / "fine-tuned", {0: "joy", 1: "sadness", 2: "anger"}, tokenizer_dir)
    plan = plan_teacher(_spec(folder), CORPUS, "yes")
    seen = {}

    class Trained(Exception):
        pass

    def fit(model, **_kwargs):  # the teacher's fine-tuning starts from the checkpoint's head, reordered
        seen["id2label"] = dict(model.config.id2label)
        raise Trained

    monkeypatch.setattr(study.core.teacher, "fit", fit)
    with pytest.raises(Trained):
        prepare_teacher(plan.spec, demo_split, TrainSettings(max_length=32), tmp_path / "cache", 0, plan=plan)
    assert seen["id2label"] == dict(enumerate(CORPUS))


# ---- students' heads and tokenizers ------------------------------------------------------------------------------

def test_a_same_size_head_with_other_labels_is_re_initialised_and_the_encoder_kept(tmp_path, tokenizer_dir):
    import torch
    from transformers import AutoModelForSequenceClassification

    from study.core.models import build_model

    folder = _checkpoint(tmp_path / "other", {0: "positive", 1: "negative", 2: "neutral"}, tokenizer_dir, seed=5)
    own = AutoModelForSequenceClassification.from_pretrained(str(folder))
    model = build_model(_spec(folder), CORPUS, vocab_size=0, seed=0)
    assert model.config.id2label == dict(enumerate(CORPUS))
    assert torch.equal(model.bert.encoder.layer[0].output.dense.weight, own.bert.encoder.layer[0].output.dense.weight)
    assert not torch.equal(model.classifier.weight, own.classifier.weight)
    fitting = _checkpoint(tmp_path / "fits", {0: "joy", 1: "sadness", 2: "anger"}, tokenizer_dir)
    kept = build_model(_spec(fitting), CORPUS, vocab_size=0, seed=0)
    rows = AutoModelForSequenceClassification.from_pretrained(str(fitting)).classifier.weight[[2, 0, 1]]
    assert torch.equal(kept.classifier.weight, rows)  # its own head, rows in the corpus's order


def test_model_facts_state_heads_and_tokenizer_mismatches(tmp_path, demo_split, tokenizer_dir):
    from study.core.models import ZOO, resolve_model
    from study.core.teacher import plan_teacher
    from study.orchestration.prepare import model_facts

    teacher = _spec(_checkpoint(tmp_path / "teacher", {0: "joy", 1: "sadness", 2: "anger"}, tokenizer_dir, layers=2))
    two = _spec(_checkpoint(tmp_path / "two-labels", {0: "positive", 1: "negative"}, tokenizer_dir))
    students = (two, resolve_model("teacher-l1"), ZOO["scratch-tiny"])
    tags, notes = model_facts(plan_teacher(teacher, CORPUS), students, demo_split)
    assert tags["two-labels"] == {"teacher_finetuned_here": "false", "teacher_head": "reordered",
                                  "student_head": "reinitialised", "tokenizer_mismatch": "false"}
    assert tags["teacher-l1"]["student_head"] == "kept" and tags["teacher-l1"]["tokenizer_mismatch"] == "false"
    assert tags["scratch-tiny"]["student_head"] == "new" and tags["scratch-tiny"]["tokenizer_mismatch"] == "true"
    assert any("two-labels" in n and "re-initialised for the corpus's 3 labels" in n for n in notes)
    assert any("scratch-tiny tokenises differently" in n for n in notes)
    assert notes[0].startswith("[teacher] teacher is used as it is")


def test_two_checkpoints_tokenise_alike_only_with_the_same_vocabulary_and_ids(tmp_path, tokenizer_dir):
    from transformers import AutoTokenizer

    from study.core.models import tokenizer_mismatch, train_wordpiece

    a = _spec(_checkpoint(tmp_path / "a", {0: "joy"}, tokenizer_dir))
    b = _spec(_checkpoint(tmp_path / "b", {0: "joy"}, tokenizer_dir, seed=1))
    assert tokenizer_mismatch(a, b, ("I feel happy", "আমি খুশি")) is None
    train_wordpiece(("other words entirely", "nothing alike here") * 50, tmp_path / "c", vocab_size=60)
    _checkpoint(tmp_path / "c", {0: "joy"}, tmp_path / "c")
    assert AutoTokenizer.from_pretrained(str(tmp_path / "c")).get_vocab() != AutoTokenizer.from_pretrained(
        str(tokenizer_dir)).get_vocab()
    assert "tokens" in tokenizer_mismatch(a, _spec(tmp_path / "c"), ("I feel happy",))


# ---- the command line ---------------------------------------------------------------------------------------------

def test_a_label_name_mismatch_exits_2_and_creates_nothing(tmp_path, tokenizer_dir, capsys):
    from study.run import main

    folder = _checkpoint(tmp_path / "fine-tuned", {0: "joy", 1: "fear", 2: "anger"}, tokenizer_dir)
    stores = tmp_path / "stores"
    argv = ["--objective", "pareto", "--quick", "--n-trials", "1", "--teacher", str(folder), "--students",
            "scratch-tiny", "--storage", f"sqlite:///{stores}/optuna.db", "--tracking-uri",
            f"sqlite:///{stores}/mlflow.db", "--cache-dir", str(tmp_path / "cache"), "--study-name", "mismatch"]
    for extra in ([], ["--teacher-finetune", "no"], ["--label-map", str(tmp_path / "absent.yaml")]):
        assert main([*argv, *extra]) == 2
        error = capsys.readouterr().err
        assert "sadness" in error or "no such file" in error
    (tmp_path / "wrong.json").write_text(json.dumps({"fear": "surprise"}))
    assert main([*argv, "--label-map", str(tmp_path / "wrong.json")]) == 2
    assert "'surprise', which the corpus does not have" in capsys.readouterr().err
    assert not stores.exists() and not (tmp_path / "cache").exists()  # no store, no experiment, no study, no cache


# ---- end to end (slow) --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fine_tuned_folder(tmp_path_factory, demo_split, tokenizer_dir):
    """A tiny 2-layer BERT fine-tuned on the demo corpus for three epochs (validation macro-F1 about 0.65), saved
    with its labels (id2label) in an order of its own, not the corpus's sorted one."""
    import torch.nn.functional as F
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from study.core.config import TrainSettings
    from study.core.training import encode, fit

    order = ("joy", "sadness", "anger")
    folder = _checkpoint(tmp_path_factory.mktemp("teacher") / "fine-tuned", dict(enumerate(order)), tokenizer_dir,
                         layers=2)
    model = AutoModelForSequenceClassification.from_pretrained(str(folder))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    to_head = np.array([order.index(name) for name in demo_split.label_names])
    fit(model, train=encode(tokenizer, demo_split.train.texts, 64), train_labels=to_head[demo_split.train.labels],
        validation=encode(tokenizer, demo_split.validation.texts, 64),
        validation_labels=to_head[demo_split.validation.labels],
        loss_fn=lambda logits, labels, _i: F.cross_entropy(logits, labels),
        settings=TrainSettings(max_epochs=3, patience=3, max_length=64), learning_rate=2e-3,
        pad_id=tokenizer.pad_token_id, seed=0)
    model.save_pretrained(str(folder))
    return folder


def _own_validation_macro_f1(folder: Path, split, max_length: int) -> float:
    """The folder model's macro-F1 on ``split``'s validation texts, its predictions read by label name."""
    import torch
    from sklearn.metrics import f1_score
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    with torch.no_grad():
        logits = model(**tokenizer(list(split.validation.texts), padding=True, truncation=True,
                                   max_length=max_length, return_tensors="pt")).logits
    names = [model.config.id2label[int(i)] for i in logits.argmax(dim=1)]
    predicted = np.array([split.label_names.index(name) for name in names])
    return float(f1_score(split.validation.labels, predicted, average="macro"))


def _saved_dataset_dict(folder: Path, split) -> Path:
    """``split``'s train/validation/test parts saved as a Hugging Face DatasetDict, labels as a ClassLabel."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=list(split.label_names))})
    DatasetDict({name: Dataset.from_dict({"text": list(part.texts), "label": part.labels.tolist()},
                                         features=features)
                 for name, part in (("train", split.train), ("validation", split.validation), ("test", split.test))}
                ).save_to_disk(str(folder))
    return folder


@pytest.mark.slow
def test_a_fine_tuned_teacher_folder_runs_a_study_from_a_dataset_dict_with_no_training_epoch(
        fine_tuned_folder, demo_split, tmp_path, monkeypatch):
    """#17's done-when: a quick study from a DatasetDict folder with a saved fine-tuned teacher, no teacher
    training; the split is the dataset's own and the teacher's macro-F1 in the run is the folder model's."""
    from mlflow.tracking import MlflowClient

    from study.core.config import study_split
    from study.core.sources import load_data
    from study.run import build_parser, config_from_args, main

    _no_training(monkeypatch)  # the teacher is never trained: any fit or MLM epoch of it fails the study
    data = _saved_dataset_dict(tmp_path / "demo-dict", demo_split)
    argv = ["--objective", "pareto", "--quick", "--n-trials", "1", "--data", str(data),
            "--teacher", str(fine_tuned_folder),
            "--students", "teacher-l1", "--storage", f"sqlite:///{tmp_path}/optuna.db", "--tracking-uri",
            f"sqlite:///{tmp_path}/mlflow.db", "--cache-dir", str(tmp_path / "cache"), "--study-name", "as-is",
            "--seed", "5"]
    assert main(argv) == 0

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("as-is").experiment_id
    (parent,) = client.search_runs([experiment], "tags.role = 'study'")
    (trial,) = client.search_runs([experiment], "tags.role = 'trial'")
    for run in (parent, trial):
        assert run.data.tags["teacher_finetuned_here"] == "false" and run.data.tags["teacher_head"] == "reordered"
        assert run.data.tags["student_head"] == "kept" and run.data.tags["tokenizer_mismatch"] == "false"
    assert trial.info.status == "FINISHED"
    sizes = (str(len(demo_split.train)), str(len(demo_split.validation)), str(len(demo_split.test)))
    assert (trial.data.params["split_train"], trial.data.params["split_validation"],
            trial.data.params["split_test"]) == sizes  # the dataset's own parts
    cfg = config_from_args(build_parser().parse_args(argv))
    own = _own_validation_macro_f1(fine_tuned_folder, study_split(load_data(cfg.data_spec), cfg), cfg.train.max_length)
    assert own > 0.5  # it learnt the task, so a wrong column order would show in its macro-F1
    assert parent.data.metrics["teacher_validation_macro_f1"] == pytest.approx(own, abs=1e-9)
    assert parent.data.params["teacher_tfidf_weight"] == "0.0" and parent.data.params["teacher_baseline_kd"] == "0.0"
