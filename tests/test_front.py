import itertools

import numpy as np
import optuna

from study.front import front_frame, pareto_trials


def _dominates(a, b):
    """a dominates b for (maximize, minimize, minimize)."""
    better_eq = a[0] >= b[0] and a[1] <= b[1] and a[2] <= b[2]
    strictly = a[0] > b[0] or a[1] < b[1] or a[2] < b[2]
    return better_eq and strictly


def test_front_is_exactly_the_non_dominated_set():
    rng = np.random.default_rng(0)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    points = [tuple(map(float, rng.integers(0, 6, size=3))) for _ in range(60)]  # ties on purpose
    for p in points:
        t = study.ask()
        t.set_user_attr("study", "s")
        study.tell(t, list(p))
    front = pareto_trials(study.trials)
    expected = {i for i, p in enumerate(points) if not any(_dominates(q, p) for q in points)}
    assert {t.number for t in front} == expected
    assert 0 < len(expected) < len(points)


def test_merged_front_keeps_points_from_several_studies():
    a = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    b = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for study, name, pts in ((a, "a", [(0.9, 5, 5), (0.5, 1, 1)]), (b, "b", [(0.8, 0.5, 9), (0.4, 2, 2)])):
        for p in pts:
            t = study.ask()
            t.set_user_attr("study", name)
            study.tell(t, list(p))
    merged = pareto_trials(a.trials + b.trials)
    assert [(t.user_attrs["study"], t.number) for t in merged] == [("a", 0), ("a", 1), ("b", 0)]
    frame = front_frame(merged)
    assert list(frame["macro_f1"]) == [0.9, 0.8, 0.5]
    assert list(itertools.chain(frame["study"])) == ["a", "b", "a"]
