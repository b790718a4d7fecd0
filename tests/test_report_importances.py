"""Parameter importances in the report: macro-F1 is maximized, so the chart says which parameters the most
accurate trials share (PED-ANOVA reads low targets as good); a study too small for it says so."""

from __future__ import annotations

import random
import warnings

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from study.reporting.report import _importance_figure


def _study(n: int) -> optuna.Study:
    """macro-F1 0.95 + 0.05 x when kind is 'a' (the best trials have a high x), noise below 0.6 when 'b'."""
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    rng = random.Random(0)
    for _ in range(n):
        x, kind = rng.random(), rng.choice(["a", "b"])
        f1 = 0.95 + 0.05 * x if kind == "a" else rng.uniform(0.2, 0.6)
        study.add_trial(optuna.trial.create_trial(
            params={"x": x, "kind": kind},
            distributions={"x": FloatDistribution(0, 1), "kind": CategoricalDistribution(["a", "b"])},
            values=[f1, rng.random(), rng.random()]))
    return study


def _importances(fig) -> dict[str, float]:
    bars = fig.data[0]
    return dict(zip(bars.y, bars.x))


def test_macro_f1_importances_are_those_of_the_most_accurate_trials():
    study = _study(200)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = _importances(_importance_figure(study, 0, "macro_f1_validation"))
    # the evaluator's advice is taken, so it has nothing to warn about (other warnings, e.g. a ResourceWarning
    # from an earlier test's garbage collected meanwhile, are not this test's business)
    advice = [w for w in caught if "importances of params to achieve low `target`" in str(w.message)]
    assert not advice, [str(w.message) for w in advice]
    with pytest.warns(UserWarning, match="importances of params to achieve low `target`"):
        plot = optuna.visualization.plot_param_importances
        best = _importances(plot(study, target=lambda t: -t.values[0], target_name="F1"))
        worst = _importances(plot(study, target=lambda t: t.values[0], target_name="F1"))
    assert ours == best
    # the best trials are all kind 'a' with a high x: x is what they share; the worst are kind 'b' with any x
    assert ours["x"] > 0.8 and ours["x"] - worst["x"] > 0.3


def test_a_study_too_small_to_rank_parameters_gets_a_placeholder_saying_so():
    fig = _importance_figure(_study(1), 0, "macro_f1_validation")
    assert not fig.data
    assert fig.layout.annotations[0].text == ("not computable yet: The number of trials is too small to compute "
                                              "importances. Parameter importances will be equal.")
