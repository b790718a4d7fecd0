import itertools

import numpy as np
import optuna

from study.reporting.front import front_frame, pareto_trials


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
    assert list(frame["macro_f1_validation"]) == [0.9, 0.8, 0.5]
    assert list(itertools.chain(frame["study"])) == ["a", "b", "a"]


def test_front_vs_reference_picks_the_same_way_for_both(tmp_path):
    import optuna

    from study.reporting.compare import comparison_markdown, our_points, reference_points

    ref = tmp_path / "paper.csv"
    ref.write_text("table,teacher,model,technique,accuracy,macro_f1,speedup,params_m,size_mb,compression_ratio\n"
                   "4,,X,baseline,1,50,,1,1,\n"
                   "5,T,T,teacher,60,60.0,1.0,110,420,1.0\n"
                   "5,T,tiny,distil,40,36.0,7.9,14,55,7.6\n"
                   "6,T,T,prune,59,58.0,1.3,85,324,1.3\n")

    def trial(f1, delta, validation_delta, speedup, compression, scheme):
        return optuna.trial.create_trial(
            values=[f1, 1.0, 1.0], user_attrs={
                "teacher": "scratch-base", "student": "teacher-l2",
                "resolved_params": {"prune_kind": "ffn", "prune_ratio": 0.1, "quant_scheme": scheme},
                "metrics": {"macro_f1": f1, "macro_f1_delta_vs_teacher": delta,
                            "macro_f1_validation_delta_vs_teacher": validation_delta,
                            "macro_f1_ci_low": f1 - 0.02, "macro_f1_ci_high": f1 + 0.02,
                            "macro_f1_delta_vs_teacher_ci_low": delta - 0.02,
                            "macro_f1_delta_vs_teacher_ci_high": delta + 0.02,
                            "speedup_vs_teacher": 2 * speedup, "speedup_vs_teacher_onnx": speedup,
                            "speedup_vs_teacher_onnx_ci_low": speedup - 0.5,
                            "speedup_vs_teacher_onnx_ci_high": speedup + 0.5, "compression_vs_teacher": compression}})

    # the second trial is better on the test texts but worse on validation: picks follow validation
    ours = our_points([trial(0.40, -0.01, -0.01, 6.0, 5.0, "onnx_dynamic_int8"),
                       trial(0.45, 0.04, -0.015, 5.0, 5.0, "onnx_static_int8"),
                       trial(0.30, -0.11, -0.11, 9.0, 6.0, "bf16")])
    paper = reference_points(ref)
    assert [p["delta_f1"] for p in paper] == [-24.0, -2.0]  # against the teacher row, table 4 ignored
    text = comparison_markdown(ours, paper, "test machine")
    lines = text.splitlines()
    first = lines[2]  # most accurate, >= 4x faster and smaller: ours -1 point, the paper's tiny -24
    assert "onnx_dynamic_int8" in first and "-1.00 (-3.00 to +1.00), within noise" in first
    assert "40.00 (38.00 to 42.00)" in first and "6.00x (5.50 to 6.50)" in first
    assert "T -> tiny" in first and "-24.00" in first
    fastest_within_3 = lines[3]  # the speed-up against the teacher's faster fp32 runtime (ONNX), not PyTorch's
    assert "6.00x" in fastest_within_3 and "T -> T (prune, Table 6)" in fastest_within_3
    assert "9.00x" in lines[5]  # fastest overall


def test_report_reference_points_say_when_the_teacher_is_an_ensemble():
    from study.reporting.report import reference_points

    metrics = {"teacher_macro_f1_validation": 0.53, "teacher_latency_vs_teacher": 1.0, "teacher_size_mb": 21.6,
               "baseline_macro_f1_validation": 0.52, "baseline_latency_vs_teacher": 0.06, "baseline_size_mb": 9.0}
    names = [name for name, *_ in reference_points({**metrics, "teacher_tfidf_weight": 0.0})]
    assert names == ["fp32 teacher", "TF-IDF + LR baseline (latency from raw text)"]
    (teacher, values, _, _), _ = reference_points({**metrics, "teacher_tfidf_weight": 0.8})
    assert teacher == "fp32 teacher (macro-F1 with its TF-IDF member, weight 0.8)"
    assert values == {"macro_f1_validation": 0.53, "latency_vs_teacher": 1.0, "size_mb": 21.6, "latency_ms": None,
                      "latency_e2e_ms": None}
    assert [n for n, *_ in reference_points({"teacher_macro_f1_validation": 0.5})] == []  # incomplete: not drawn


def test_front_labels_say_no_pruning_for_a_zero_ratio_whatever_the_kind():
    from study.reporting.compare import our_points
    from study.reporting.front import printable, pruning_label

    # every metric a point may be built from (test and validation deltas, intervals, both speed-ups)
    metric_names = ("macro_f1", "macro_f1_delta_vs_teacher", "macro_f1_validation_delta_vs_teacher",
                    "macro_f1_ci_low", "macro_f1_ci_high", "macro_f1_delta_vs_teacher_ci_low",
                    "macro_f1_delta_vs_teacher_ci_high", "speedup_vs_teacher", "speedup_vs_teacher_onnx",
                    "speedup_vs_teacher_onnx_ci_low", "speedup_vs_teacher_onnx_ci_high", "compression_vs_teacher")

    def trial(kind, ratio):
        return optuna.trial.create_trial(
            values=[0.5, 1.0, 1.0], user_attrs={
                "teacher": "T", "student": "S",
                "resolved_params": {"prune_kind": kind, "prune_ratio": ratio, "quant_scheme": "fp32"},
                "metrics": {name: 1.0 for name in metric_names}})

    labels = [p["model"] for p in our_points([trial("l1_unstructured", 0.0), trial("ffn", 0), trial("ffn", 0.1)])]
    assert labels == ["T -> S (no pruning, fp32)", "T -> S (no pruning, fp32)", "T -> S (ffn 10%, fp32)"]
    assert "0%" not in labels[0] and "l1_unstructured" not in labels[0]
    assert pruning_label("l1_unstructured", 0.0, "{:.2f}") == "no pruning"
    assert pruning_label("heads", 0.25, "{:.2f}") == "heads 0.25"

    frame = front_frame([optuna.trial.create_trial(values=[0.5, 1.0, 1.0], params={"prune_kind": k, "prune_ratio": r},
                                                   distributions={
                                                       "prune_kind": optuna.distributions.CategoricalDistribution(
                                                           ["l1_unstructured", "ffn"]),
                                                       "prune_ratio": optuna.distributions.FloatDistribution(0, 0.9)},
                                                   user_attrs={"study": "s"})
                         for k, r in (("l1_unstructured", 0.0), ("ffn", 0.3))])
    table = printable(frame)
    assert "no pruning" in table and "l1_unstructured" not in table and "ffn" in table
    assert list(frame["prune_kind"]) == ["l1_unstructured", "ffn"]  # the data keep the drawn kind


def test_picks_table_is_chosen_on_validation_and_says_within_noise():
    import optuna

    from study.core.budgets import Budgets
    from study.reporting.report import picks_markdown

    def trial(validation, test, delta, delta_ci, speedup, speedup_ci, latency, size):
        return optuna.trial.create_trial(
            values=[validation, latency, size], user_attrs={
                "study": "s.scratch-base.teacher-l2",
                "metrics": {"macro_f1": test, "macro_f1_ci_low": test - 0.02, "macro_f1_ci_high": test + 0.02,
                            "macro_f1_validation_delta_vs_teacher": validation - 0.55,
                            "macro_f1_delta_vs_teacher": delta, "macro_f1_delta_vs_teacher_ci_low": delta_ci[0],
                            "macro_f1_delta_vs_teacher_ci_high": delta_ci[1], "speedup_vs_teacher_onnx": speedup,
                            "speedup_vs_teacher_onnx_ci_low": speedup_ci[0],
                            "speedup_vs_teacher_onnx_ci_high": speedup_ci[1]}})

    # trial 0: best on validation, its loss within noise; trial 1: better on test, worse on validation, the
    # smallest, a real loss but a speed-up whose interval holds 1
    trials = [trial(0.54, 0.50, -0.005, (-0.015, 0.004), 3.0, (2.5, 3.4), 0.2, 2.0),
              trial(0.50, 0.53, -0.030, (-0.045, -0.015), 1.1, (0.9, 1.3), 0.9, 1.0)]
    trials = [optuna.trial.create_trial(values=t.values, user_attrs=t.user_attrs) for t in trials]
    for number, t in enumerate(trials):
        t.number = number
    md = picks_markdown(trials, Budgets())
    accurate = next(line for line in md.splitlines() if line.startswith("| `most-accurate` |"))
    assert "| 0 | 0.5400 |" in accurate  # chosen on validation, not on test
    assert "-0.0050 (-0.0150 to 0.0040, within noise)" in accurate and "3.00x (2.50-3.40) |" in accurate
    smallest = next(line for line in md.splitlines() if line.startswith("| `smallest` |"))
    assert "| 1 | 0.5000 |" in smallest and "-0.0300 (-0.0450 to -0.0150) |" in smallest
    assert "1.10x (0.90-1.30, within noise) |" in smallest and "no change (Δ 0, speed-up 1)" in md
