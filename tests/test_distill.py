import math

import numpy as np
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

    from study.errors import UserError

    with pytest.raises(UserError):
        DistillConfig(temperature=0.0, kd_lambda=0.5)
    with pytest.raises(UserError):
        DistillConfig(temperature=2.0, kd_lambda=1.5)


def test_teacher_can_learn_from_the_tfidf_models_out_of_fold_probabilities(demo_split, tmp_path):
    import numpy as np

    from study.config import TrainSettings
    from study.models import PRESETS, ZOO
    from study.teacher import prepare_teacher, teacher_cache_key, teacher_settings
    from study.tfidf import out_of_fold_logits
    from study.training import macro_f1

    logits = out_of_fold_logits(demo_split.train.texts, demo_split.train.labels, seed=0)
    assert logits.shape == (len(demo_split.train), len(demo_split.label_names))
    assert np.allclose(np.exp(logits).sum(axis=1), 1.0, atol=1e-3)
    assert macro_f1(demo_split.train.labels, logits.argmax(axis=1)) > 0.5  # better than chance on unseen folds

    plain = TrainSettings(max_epochs=2, patience=1, max_length=32, baseline_kd_lambda=0.0)
    guided = TrainSettings(max_epochs=2, patience=1, max_length=32, baseline_kd_lambda=0.5)
    spec = ZOO["scratch-tiny"]
    assert teacher_cache_key(spec, demo_split, plain, 0) != teacher_cache_key(spec, demo_split, guided, 0)
    # the default (None) is that KD for a scratch teacher and none for a pretrained checkpoint
    default = TrainSettings(max_epochs=2, patience=1, max_length=32)
    assert teacher_settings(spec, default) == guided and teacher_settings(PRESETS["banglabert"], default) == plain
    assert teacher_settings(spec, plain) == plain
    lines = []
    teacher = prepare_teacher(spec, demo_split, guided, tmp_path, seed=0, log=lines.append)
    assert any("out-of-fold" in line for line in lines)
    assert teacher.train_logits.shape == logits.shape and 0.0 <= teacher.validation_macro_f1 <= 1.0
