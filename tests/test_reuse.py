"""Reuse of distilled students in a pair study: queued variants of each new (T, lambda), and the distillation-seed
rule of studies started before it existed."""

from __future__ import annotations

import zlib
from types import MappingProxyType

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from search_spaces import load_space, suggest
from study.orchestration.reuse import (DISTILL_SEED_ATTR, VARIANT_OF_ATTR, QueueVariants, distill_seed_rule,
                                       under_recorded_rule)

DIRECTIONS = ["maximize", "minimize", "minimize"]


def _objective(space):
    def objective(trial):
        values = suggest(trial, space)
        return float(values["kd_lambda"]), float(values["temperature"]), float(values["prune_ratio"])
    return objective


def _kd(trial):
    return trial.params["temperature"], trial.params["kd_lambda"]


def test_each_new_t_and_lambda_queues_k_minus_1_variants_that_queue_none(monkeypatch):
    space = load_space("default")
    study = optuna.create_study(directions=DIRECTIONS, sampler=optuna.samplers.RandomSampler(seed=1))
    queue = QueueVariants(k=3, n_trials=12)
    study.optimize(_objective(space), n_trials=1, callbacks=[queue])
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 2 and all(t.user_attrs[VARIANT_OF_ATTR] == 0 for t in waiting)
    study.optimize(_objective(space), n_trials=2, callbacks=[queue])  # the two variants run first
    first, *variants = study.trials
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3 and not study.get_trials(
        states=(TrialState.WAITING,))  # variants queue nothing themselves
    assert all(_kd(v) == _kd(first) for v in variants)
    assert len({(v.params["prune_ratio"], v.params["quant_scheme"], v.params["prune_kind"]) for v in variants}) == 2

    queue(study, study.trials[0])  # called again for the same trial (e.g. after a resume): nothing more queued
    assert not study.get_trials(states=(TrialState.WAITING,))
    study.enqueue_trial({"temperature": first.params["temperature"], "kd_lambda": first.params["kd_lambda"]})
    study.optimize(_objective(space), n_trials=1, callbacks=[queue])  # drawn again, not new to the study: none
    assert len(study.trials) == 4 and not study.get_trials(states=(TrialState.WAITING,))

    study.enqueue_trial({"temperature": 10 if first.params["temperature"] != 10 else 1, "kd_lambda": 0.0})
    study.optimize(_objective(space), n_trials=1, callbacks=[queue])  # a new (T, lambda): queues 2
    assert [t.user_attrs.get(VARIANT_OF_ATTR) for t in study.get_trials(states=(TrialState.WAITING,))] == [4, 4]


def test_two_workers_drawing_one_new_t_and_lambda_queue_its_variants_once():
    space = load_space("default")
    study = optuna.create_study(directions=DIRECTIONS, sampler=optuna.samplers.RandomSampler(seed=3))
    queue = QueueVariants(k=3, n_trials=10)
    for _ in range(2):
        study.enqueue_trial({"temperature": 4, "kd_lambda": 0.3})
    first, second = study.ask(), study.ask()  # two workers' trials, both running
    for trial in (first, second):
        _objective(space)(trial)
    study.tell(second, [0.5, 1.0, 1.0])  # the later-numbered one finishes first: the earlier one is still running
    queue(study, study.trials[second.number])
    assert not study.get_trials(states=(TrialState.WAITING,))
    study.tell(first, [0.5, 1.0, 1.0])
    queue(study, study.trials[first.number])
    assert [t.user_attrs[VARIANT_OF_ATTR] for t in study.get_trials(states=(TrialState.WAITING,))] == [0, 0]


def test_variants_stay_within_n_trials_and_k_1_queues_none():
    space = load_space("default")
    study = optuna.create_study(directions=DIRECTIONS, sampler=optuna.samplers.RandomSampler(seed=2))
    study.optimize(_objective(space), n_trials=1, callbacks=[QueueVariants(k=4, n_trials=2)])
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 1  # 1 completed + 1 queued = --n-trials
    other = optuna.create_study(directions=DIRECTIONS, sampler=optuna.samplers.RandomSampler(seed=2))
    other.optimize(_objective(space), n_trials=3, callbacks=[QueueVariants(k=1, n_trials=20)])
    assert len(other.trials) == 3 and not other.get_trials(states=(TrialState.WAITING,))


def test_the_variants_tpe_draws_keep_t_and_lambda_fixed():
    space = load_space("default")
    sampler = optuna.samplers.TPESampler(seed=0, multivariate=True, n_startup_trials=2)
    study = optuna.create_study(directions=DIRECTIONS, sampler=sampler)
    study.optimize(_objective(space), n_trials=8, callbacks=[QueueVariants(k=4, n_trials=8)])
    assert all(t.state == TrialState.COMPLETE for t in study.trials) and len(study.trials) == 8
    sources = [t for t in study.trials if VARIANT_OF_ATTR not in t.user_attrs]
    for t in study.trials:
        if VARIANT_OF_ATTR in t.user_attrs:
            assert _kd(t) == _kd(study.trials[t.user_attrs[VARIANT_OF_ATTR]])
    assert len(sources) == 2  # 0 and 4: each followed by its 3 variants


def _ctx(space):
    from objectives.context import TrialContext

    return TrialContext(study_name="old.scratch-base.scratch-tiny", split=None, teacher=None, student=None,
                        scratch_tokenizer_dir=None, space=space, train=None, measure=None, seed=42, workdir=None,
                        data_facts=MappingProxyType({}))


def test_a_study_started_before_the_rule_keeps_trial_seeds_and_its_continuous_t_and_lambda():
    from study.core.errors import UserError

    space = load_space("default")
    new = optuna.create_study(directions=DIRECTIONS)
    assert distill_seed_rule(new) == "study_seed"
    old = optuna.create_study(directions=DIRECTIONS, sampler=optuna.samplers.TPESampler(seed=0, multivariate=True,
                                                                                      n_startup_trials=1))
    for t, lam in ((3.7, 0.42), (1.2, 0.9)):  # trials of the old space: continuous T (log) and lambda
        old.add_trial(optuna.trial.create_trial(
            params={"temperature": t, "kd_lambda": lam}, values=[0.5, 1.0, 1.0],
            distributions={"temperature": FloatDistribution(1.0, 10.0, log=True),
                           "kd_lambda": FloatDistribution(0, 1)}))
    assert distill_seed_rule(old) == "trial_seed"
    old.set_user_attr(DISTILL_SEED_ATTR, distill_seed_rule(old))  # recorded when the study is opened
    ctx, line = under_recorded_rule(old, _ctx(space))
    assert ctx.distill_seed_rule == "trial_seed" and ctx.distill_seed(3) == 45 and "seed + trial number" in line
    assert ctx.space.get("temperature").type == "float" and ctx.space.get("temperature").log
    assert ctx.space.get("kd_lambda").step is None and ctx.space.get("quant_scheme") == space.get("quant_scheme")
    old.optimize(_objective(ctx.space), n_trials=3)  # TPE draws on, from the distributions the study started with
    assert all(t.state == TrialState.COMPLETE for t in old.trials)
    assert any(t.params["temperature"] not in (1, 2, 3, 4, 6, 8, 10) for t in old.trials[2:])

    new.set_user_attr(DISTILL_SEED_ATTR, distill_seed_rule(new))
    ctx, line = under_recorded_rule(new, _ctx(space))
    assert line is None and ctx.distill_seed(3) == 42 and ctx.space == space
    new.set_user_attr(DISTILL_SEED_ATTR, "epoch_seed")
    with pytest.raises(UserError, match="distillation seed rule 'epoch_seed'"):
        distill_seed_rule(new)


def test_consecutive_variants_get_their_own_sampler_seed_and_draws():
    """The study loop reseeds the sampler before each trial from the trials started; queued trials waiting to run
    do not count, else every variant of one distillation would get the same seed and the same random draws."""
    from study.core.config import StudyConfig
    from study.orchestration.pair_study import make_sampler, sampler_seed, started_trials

    cfg = StudyConfig()  # one worker on a SQLite store: seed, pair and trials started hashed
    space = load_space("default")
    study = optuna.create_study(directions=DIRECTIONS)
    seeds = []
    for _ in range(4):
        seeds.append(sampler_seed(cfg, started_trials(study), "t/s"))
        study.sampler = make_sampler("tpe", seeds[-1])
        study.optimize(_objective(space), n_trials=1, callbacks=[QueueVariants(k=4, n_trials=10)])
    assert seeds == [zlib.crc32(f"42:t/s:{n}".encode()) for n in range(4)] and len(set(seeds)) == 4
    variants = [t for t in study.trials if t.user_attrs.get(VARIANT_OF_ATTR) == 0]
    assert len(variants) == 3 and all(_kd(v) == _kd(study.trials[0]) for v in variants)
    draws = {tuple(v.params[k] for k in ("prune_kind", "prune_ratio", "quant_scheme")) for v in variants}
    assert len(draws) == 3


def test_auto_queues_as_many_variants_as_fit_in_the_distillations_time():
    from study.orchestration.reuse import auto_variants

    stages = {"time_prune_s": 0.5, "time_quantize_s": 1.0, "time_evaluate_s": 1.5, "time_measure_s": 12.0}
    assert auto_variants({"distill_seconds": 150.0, **stages}) == 10  # 150 s of distillation, 15 s after it
    assert auto_variants({"distill_seconds": 18.0, **stages}) == 1
    assert auto_variants({"distill_seconds": 5.0, **stages}) == 0  # cheaper to distil than to compress: none
    assert auto_variants({"distill_seconds": 3600.0, **stages}) == 15  # bounded
    assert auto_variants({**stages}) == 0  # no distillation (the teacher compressed itself)


def test_auto_reads_the_first_trials_own_timings():
    space = load_space("default")
    study = optuna.create_study(directions=DIRECTIONS, sampler=optuna.samplers.RandomSampler(seed=2))

    def timed(trial):
        trial.set_user_attr("metrics", {"distill_seconds": 30.0, "time_measure_s": 10.0})
        return _objective(space)(trial)

    study.optimize(timed, n_trials=1, callbacks=[QueueVariants(k="auto", n_trials=20)])
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 3 and {t.user_attrs[VARIANT_OF_ATTR] for t in waiting} == {0}
    bounded = optuna.create_study(directions=DIRECTIONS, sampler=optuna.samplers.RandomSampler(seed=2))
    bounded.optimize(timed, n_trials=1, callbacks=[QueueVariants(k="auto", n_trials=3)])
    assert len(bounded.get_trials(states=(TrialState.WAITING,))) == 2  # 3 wanted, room for 2 within n_trials


def test_sampler_seed_changes_the_first_draws_and_leaves_the_split_alone():
    """--sampler-seed re-runs the search with other draws on the same split and teacher (benchmarks.samplers
    --wall-clock pairs its arms by it); without it the sampler starts from --seed as before."""
    from study.core.config import study_split
    from study.core.demo import demo_corpus
    from study.orchestration.pair_study import make_sampler, sampler_seed, search_seed
    from study.run import build_parser, config_from_args

    default = config_from_args(build_parser().parse_args(["--storage", "sqlite:///x.db"]))
    other = config_from_args(build_parser().parse_args(["--storage", "sqlite:///x.db", "--sampler-seed", "7"]))
    assert (default.sampler_seed, other.sampler_seed, other.seed) == (None, 7, default.seed)
    assert search_seed(default) == default.seed and search_seed(other) == 7
    # a lone worker on SQLite: the seed, the pair and the trials started, hashed; reproducible
    assert [sampler_seed(other, n, "t/s") for n in range(3)] == [zlib.crc32(f"7:t/s:{n}".encode()) for n in range(3)]

    space = load_space("default")

    def first_draws(cfg):
        study = optuna.create_study(directions=DIRECTIONS)
        for n in range(3):
            study.sampler = make_sampler(cfg.sampler, sampler_seed(cfg, n, "t/s"))
            study.optimize(_objective(space), n_trials=1)
        return [t.params for t in study.trials]

    assert first_draws(other) != first_draws(default)
    assert first_draws(other) == first_draws(other)  # still reproducible
    same = config_from_args(build_parser().parse_args(["--storage", "sqlite:///x.db", "--sampler-seed",
                                                       str(default.seed)]))
    assert first_draws(same) == first_draws(default)
    corpus = demo_corpus()
    a, b = study_split(corpus, default), study_split(corpus, other)
    assert (a.train.texts, a.validation.texts, a.test.texts) == (b.train.texts, b.validation.texts, b.test.texts)


def test_the_pairs_of_one_study_draw_different_sequences():
    """One seed for the whole study, but each teacher/student pair gets its own sampler seeds: two pairs searched
    side by side would otherwise try the same T, lambda, pruning and scheme in the same order."""
    from study.core.config import StudyConfig
    from study.orchestration.pair_study import make_sampler, sampler_seed

    cfg = StudyConfig()
    space = load_space("default")

    def draws(pair):
        study = optuna.create_study(directions=DIRECTIONS)
        for n in range(4):
            study.sampler = make_sampler(cfg.sampler, sampler_seed(cfg, n, pair))
            study.optimize(_objective(space), n_trials=1)
        return [t.params for t in study.trials]

    assert draws("scratch-base/teacher-l2") != draws("scratch-base/teacher-l4")
    assert draws("scratch-base/teacher-l2") == draws("scratch-base/teacher-l2")


def test_a_negative_sampler_seed_is_refused():
    from study.core.errors import UserError
    from study.run import build_parser, config_from_args

    with pytest.raises(UserError, match="--sampler-seed must be 0 or more"):
        config_from_args(build_parser().parse_args(["--sampler-seed", "-1"]))
