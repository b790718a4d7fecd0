"""The figures read at the size of MLflow's artifact pane: titles and legends above the plot, colour bars apart.

(What they look like at 900x600 and 650x450 px was checked in headless Chromium; these pin the layout rules.)
"""

from __future__ import annotations

import random

import optuna
import pytest
from optuna.distributions import FloatDistribution

from study.reporting.front import pareto_figure
from study.reporting.report import merged_figure, study_figures

METRICS = {"teacher_macro_f1_validation": 0.85, "teacher_latency_vs_teacher": 1.0, "teacher_size_mb": 14.0,
           "teacher_latency_ms": 3.0, "teacher_tfidf_weight": 0.2, "baseline_macro_f1_validation": 0.81,
           "baseline_latency_vs_teacher": 0.38, "baseline_size_mb": 0.1, "baseline_latency_ms": 1.8,
           "teacher_latency_e2e_ms": 3.4, "baseline_latency_e2e_ms": 1.8}


@pytest.fixture(scope="module")
def study():
    study = optuna.create_study(study_name="demo.scratch-base.scratch-tiny",
                                directions=["maximize", "minimize", "minimize"])
    rng = random.Random(0)
    for _ in range(12):  # some on the front, some dominated: both colour bars
        f1, latency, size = rng.uniform(0.4, 0.8), rng.uniform(0.03, 0.5), rng.uniform(0.3, 6)
        study.add_trial(optuna.trial.create_trial(
            params={"kd_lambda": rng.random(), "temperature": rng.uniform(1, 10)},
            distributions={"kd_lambda": FloatDistribution(0, 1), "temperature": FloatDistribution(1, 10)},
            values=[f1, latency, size],
            user_attrs={"study": "demo.scratch-base.scratch-tiny",
                        "metrics": {"latency_ms": latency * 3, "latency_e2e_ms": latency * 3 + 0.4}}))
    return study


def _figures(study):
    return [("pareto_front", pareto_figure(study)), *study_figures(study, METRICS),
            ("merged_front", merged_figure([study], METRICS))]


def test_colour_bars_stand_side_by_side_right_of_the_plot(study):
    fig = pareto_figure(study)
    bars = [t.marker.colorbar for t in fig.data if t.marker.colorbar.title.text]
    assert [b.title.text for b in bars] == ["Trial", "Best Trial"]
    assert all(b.x == 1.0 and b.xanchor == "left" for b in bars)
    assert bars[1].xpad - bars[0].xpad >= 70  # pixels apart: no overlap at any width
    assert fig.layout.margin.r >= 20 + 78 * len(bars)


def test_titles_and_legends_sit_above_the_plot(study):
    for name, fig in _figures(study):
        title, legend = fig.layout.title, fig.layout.legend
        assert max(len(line) for line in title.text.split("<br>")) <= 56, name
        assert (title.yref, title.yanchor, legend.orientation, legend.yanchor) == ("paper", "bottom", "h", "bottom")
        assert legend.y >= 1.0, name  # above the plot, never over the colour bars at its right
        lines = title.text.count("<br>") + 1
        legend_px = title.pad.b - 22 * (lines - 1)  # the title's last line sits this far above the plot
        assert legend_px >= 6 and fig.layout.margin.t >= 12 + 22 * lines + legend_px, name  # all in the margin


def test_reference_points_are_labelled_short_and_named_in_full_in_the_legend(study):
    fig = dict(study_figures(study, METRICS))["pareto_macro_f1_validation_latency_vs_teacher"]
    teacher = next(t for t in fig.data if t.name and t.name.startswith("fp32 teacher"))
    assert teacher.text == ("fp32 teacher",) and "TF-IDF member, weight 0.2" in teacher.name
    assert teacher.showlegend and teacher.cliponaxis is False and teacher.textposition == "middle left"


def test_the_3d_axis_titles_are_broken_to_fit_the_scene(study):
    for fig in (pareto_figure(study), dict(study_figures(study, METRICS))["pareto_3d"]):
        scene = fig.layout.scene
        for axis in (scene.xaxis, scene.yaxis, scene.zaxis):
            assert max(len(line) for line in axis.title.text.split("<br>")) <= 26
        assert "latency / fp32 teacher's<br>(batch 1, paired)" in (scene.xaxis.title.text, scene.yaxis.title.text,
                                                                    scene.zaxis.title.text)
        assert scene.camera.eye.x >= 1.5  # seen from further away than plotly's 1.25


def test_merged_front_puts_every_model_on_the_raw_text_latency(study):
    fig = merged_figure([study], METRICS)
    assert fig.layout.xaxis.title.text == "ms from raw text (batch 1, tokenization included)"
    trials = {round(t.user_attrs["metrics"]["latency_e2e_ms"], 9) for t in study.trials}
    points = {t.name: list(t.x) for t in fig.data}
    assert {round(x, 9) for name, xs in points.items() if name.startswith("scratch-base.scratch-tiny") for x in xs} == trials
    assert points["TF-IDF + LR baseline (latency from raw text)"] == [1.8]
    assert points["fp32 teacher (macro-F1 with its TF-IDF member, weight 0.2)"] == [3.4]
