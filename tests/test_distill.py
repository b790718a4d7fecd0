import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from objectives.distill import DistillConfig, kd_loss, kd_loss_fn


def _hand_kd(s, t, y, T, lam):
    """(1 - lam) * CE + lam * T^2 * KL(p_t || p_s), written out with plain Python math."""
    total = 0.0
    for srow, trow, label in zip(s, t, y):
        ce = -(srow[label] - math.log(sum(math.exp(v) for v in srow)))
        zs = sum(math.exp(v / T) for v in srow)
        zt = sum(math.exp(v / T) for v in trow)
        ps = [math.exp(v / T) / zs for v in srow]
        pt = [math.exp(v / T) / zt for v in trow]
        kl = sum(p * math.log(p / q) for p, q in zip(pt, ps))
        total += (1 - lam) * ce + lam * T * T * kl
    return total / len(s)


def test_kd_loss_matches_hand_computation():
    s = [[1.0, -0.5, 2.0], [0.2, 0.1, -1.0]]
    t = [[0.5, 0.5, 3.0], [2.0, -1.0, 0.0]]
    y = [2, 0]
    for T, lam in [(1.0, 0.0), (2.0, 0.5), (4.0, 1.0), (3.3, 0.25)]:
        got = kd_loss(torch.tensor(s), torch.tensor(y), torch.tensor(t), T, lam).item()
        assert got == pytest_approx(_hand_kd(s, t, y, T, lam))


def pytest_approx(x):
    import pytest

    return pytest.approx(x, rel=1e-5, abs=1e-6)


def test_lambda_zero_is_cross_entropy_and_identical_logits_have_no_kl():
    s = torch.tensor([[1.0, 2.0, 0.0]])
    y = torch.tensor([1])
    ce = torch.nn.functional.cross_entropy(s, y).item()
    assert kd_loss(s, y, torch.tensor([[9.0, -9.0, 0.0]]), 3.0, 0.0).item() == pytest_approx(ce)
    assert kd_loss(s, y, s.clone(), 3.0, 1.0).item() == pytest_approx(0.0)


def test_kd_loss_fn_gathers_teacher_rows_by_train_index():
    teacher = np.array([[0.0, 5.0], [5.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    cfg = DistillConfig(temperature=2.0, kd_lambda=1.0)
    fn = kd_loss_fn(teacher, cfg)
    student = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    got = fn(student, torch.tensor([0, 1]), np.array([1, 0])).item()  # rows 1 and 0 match the student
    assert got == pytest_approx(0.0)
    assert fn(student, torch.tensor([0, 1]), np.array([0, 1])).item() > 1.0


def test_config_rejects_bad_values():
    import pytest

    from study.core.errors import UserError

    with pytest.raises(UserError):
        DistillConfig(temperature=0.0, kd_lambda=0.5)
    with pytest.raises(UserError):
        DistillConfig(temperature=2.0, kd_lambda=1.5)


def test_teacher_can_learn_from_the_tfidf_models_out_of_fold_probabilities(demo_split, tmp_path):
    import numpy as np

    from study.core.config import TrainSettings
    from study.core.models import PRESETS, ZOO
    from study.core.teacher import prepare_teacher, teacher_cache_key, teacher_settings
    from study.core.tfidf import out_of_fold_logits
    from study.core.training import macro_f1

    logits = out_of_fold_logits(demo_split.train.texts, demo_split.train.labels, seed=0)
    assert logits.shape == (len(demo_split.train), len(demo_split.label_names))
    assert np.allclose(np.exp(logits).sum(axis=1), 1.0, atol=1e-3)
    assert macro_f1(demo_split.train.labels, logits.argmax(axis=1)) > 0.5  # better than chance on unseen folds

    plain = TrainSettings(max_epochs=2, patience=1, max_length=32, baseline_kd_lambda=0.0)
    guided = TrainSettings(max_epochs=2, patience=1, max_length=32, baseline_kd_lambda=0.5)
    spec = ZOO["scratch-tiny"]
    assert teacher_cache_key(spec, demo_split, plain, 0) != teacher_cache_key(spec, demo_split, guided, 0)
    # the default (None) is that KD and a TF-IDF member (weight chosen later, on validation) for a scratch
    # teacher, and neither for a pretrained checkpoint
    default = TrainSettings(max_epochs=2, patience=1, max_length=32)
    assert teacher_settings(spec, default) == guided
    assert teacher_settings(PRESETS["banglabert"], default) == replace(plain, tfidf_member_weight=0.0)
    assert teacher_settings(spec, plain) == plain
    lines = []
    teacher = prepare_teacher(spec, demo_split, replace(guided, tfidf_member_weight=0.0), tmp_path, seed=0,
                              log=lines.append)
    assert any("out-of-fold" in line for line in lines)
    assert teacher.train_logits.shape == logits.shape and 0.0 <= teacher.validation_macro_f1 <= 1.0
    assert teacher.tfidf_weight == 0.0 and teacher.member_dir is None  # weight 0: the network alone


def test_teacher_ensemble_with_the_tfidf_model_picks_its_weight_on_validation(demo_split, tmp_path):
    import json

    import numpy as np
    from scipy.special import softmax

    from study.core.config import TrainSettings
    from study.core.models import ZOO
    from study.core.teacher import MEMBER_WEIGHTS, prepare_teacher, teacher_cache_key
    from study.core.tfidf import out_of_fold_logits
    from study.core.training import macro_f1

    spec = ZOO["scratch-tiny"]
    settings = TrainSettings(max_epochs=2, patience=1, max_length=32, baseline_kd_lambda=0.0)
    alone = prepare_teacher(spec, demo_split, replace(settings, tfidf_member_weight=0.0), tmp_path, seed=0)
    lines = []
    auto = prepare_teacher(spec, demo_split, settings, tmp_path, seed=0, log=lines.append)
    # the member is cached beside the network, which is not trained again for it
    assert auto.from_cache and auto.directory == alone.directory
    assert teacher_cache_key(spec, demo_split, settings, 0) == alone.cache_key
    member = json.loads((auto.member_dir / "member.json").read_text())
    scores = {float(w): v for w, v in member["validation_macro_f1_by_weight"].items()}
    assert sorted(scores) == list(MEMBER_WEIGHTS) and scores[0.0] == pytest.approx(alone.validation_macro_f1)
    assert auto.tfidf_weight == max(scores, key=lambda w: (scores[w], -w))
    assert auto.validation_macro_f1 == pytest.approx(max(scores.values()))
    assert auto.validation_macro_f1 >= alone.validation_macro_f1 - 1e-9  # weight 0 was one of the choices
    assert auto.network_f1 == alone.validation_macro_f1
    assert any("TF-IDF member weight" in line for line in lines)

    # the ensemble's training logits mix the network's with the member's out-of-fold probabilities
    fixed = prepare_teacher(spec, demo_split, replace(settings, tfidf_member_weight=0.5), tmp_path, seed=0)
    oof = np.exp(out_of_fold_logits(demo_split.train.texts, demo_split.train.labels, seed=0))
    expected = 0.5 * softmax(alone.train_logits, axis=1) + 0.5 * oof
    assert fixed.tfidf_weight == 0.5
    assert np.allclose(np.exp(fixed.train_logits), expected, atol=1e-4)
    assert np.allclose(np.exp(fixed.train_logits).sum(axis=1), 1.0, atol=1e-3)
    # blend(): the same mixture for any texts, from the member fitted on all training texts
    blended = fixed.blend(alone.validation_logits, demo_split.validation.texts)
    assert np.allclose(blended, fixed.validation_logits, atol=1e-5)
    assert macro_f1(demo_split.validation.labels, blended.argmax(axis=1)) == pytest.approx(fixed.validation_macro_f1)
