"""The cache of distilled students: keys, hits, one distillation per key across workers, the size bound."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest
import torch

from objectives.student_cache import (LOCK_SUFFIX, META_FILE, StudentCache, key_ingredients, student_cache,
                                      student_key)


def _teacher(split, cache_key="teacher-key", tfidf_weight=0.0):
    from study.core.teacher import TeacherArtifacts

    rng = np.random.default_rng(0)
    n = len(split.label_names)
    return TeacherArtifacts(name="fake-teacher", directory=Path("/nonexistent"), validation_macro_f1=0.5,
                            train_logits=rng.normal(size=(len(split.train), n)).astype(np.float32) * 3,
                            validation_logits=rng.normal(size=(len(split.validation), n)).astype(np.float32),
                            cache_key=cache_key, from_cache=True, tfidf_weight=tfidf_weight)


def test_the_key_changes_with_every_ingredient_and_only_then(demo_split):
    from study.core.config import TrainSettings
    from study.core.data import limit_part, split_corpus
    from study.core.demo import demo_corpus
    from study.core.models import ZOO

    base = dict(teacher=_teacher(demo_split), student=ZOO["scratch-tiny"], temperature=2.0, kd_lambda=0.5, seed=42,
                train=TrainSettings(), split=demo_split)
    key = student_key(key_ingredients(**base))
    assert len(key) == 64 and student_key(key_ingredients(**base)) == key  # stable
    assert student_key(key_ingredients(**{**base, "temperature": 2})) == key  # an int T is the same T
    assert student_key(key_ingredients(**{**base, "device": "cpu"})) == key  # the CPU by default
    assert student_key(key_ingredients(**{**base, "device": "cuda:0"})) == student_key(
        key_ingredients(**{**base, "device": "cuda:1"}))  # the device's kind, not which GPU
    changed = {
        "teacher network": {"teacher": _teacher(demo_split, cache_key="other")},
        "teacher tfidf member": {"teacher": _teacher(demo_split, tfidf_weight=0.3)},
        "student": {"student": ZOO["scratch-mini"]},
        "T": {"temperature": 3.0},
        "lambda": {"kd_lambda": 0.6},
        "seed": {"seed": 43},
        "training settings": {"train": TrainSettings(max_epochs=5)},
        "split seed": {"split": split_corpus(demo_corpus(), seed=4)},
        "part sizes": {"split": replace(demo_split, train=limit_part(demo_split.train, 50, 0))},
        "corpus": {"split": replace(demo_split, corpus_sha256="0" * 64)},
        "device kind": {"device": "cuda:1"},
    }
    keys = {what: student_key(key_ingredients(**{**base, **change})) for what, change in changed.items()}
    assert key not in keys.values() and len(set(keys.values())) == len(keys), keys


@pytest.fixture(scope="module")
def small_split(demo_split):
    """The demo split with 96 training and 48 validation texts: a one-epoch distillation in a second or two."""
    from study.core.data import limit_part

    return replace(demo_split, train=limit_part(demo_split.train, 96, 0),
                   validation=limit_part(demo_split.validation, 48, 0))


def _context(split, tokenizer_dir, tmp_path, cache):
    from search_spaces import load_space
    from objectives.context import TrialContext
    from study.core.config import MeasureSettings, TrainSettings
    from study.core.models import ZOO

    return TrialContext(study_name="s", split=split, teacher=_teacher(split), student=ZOO["scratch-tiny"],
                        scratch_tokenizer_dir=tokenizer_dir, space=load_space("default"),
                        train=TrainSettings(max_epochs=1, max_length=32), measure=MeasureSettings(), seed=7,
                        workdir=tmp_path, data_facts=MappingProxyType({}), student_cache=cache)


@pytest.fixture()
def counted_fit(monkeypatch):
    """objectives.student's fit, counting its calls."""
    import objectives.student

    calls = []
    real = objectives.student.fit

    def fit(*args, **kwargs):
        calls.append(kwargs["seed"])
        return real(*args, **kwargs)

    monkeypatch.setattr(objectives.student, "fit", fit)
    return calls


def test_a_second_get_is_a_hit_with_the_same_weights_and_metrics_and_no_training(small_split, tokenizer_dir,
                                                                                 tmp_path, counted_fit):
    from objectives.distill import DistillConfig
    from objectives.student import distilled_student

    ctx = _context(small_split, tokenizer_dir, tmp_path, student_cache(tmp_path / "cache", 1.0))
    kd = DistillConfig(temperature=2.0, kd_lambda=0.5)
    miss = distilled_student(ctx, kd, seed=ctx.distill_seed(3))
    assert counted_fit == [7]  # distilled with the study's seed, not seed + trial number
    hit = distilled_student(ctx, kd, seed=ctx.distill_seed(5))
    assert counted_fit == [7]  # not trained again
    assert miss.tags == {"distill_cache_hit": "false", "distill_seed": "7"} and miss.metrics["distill_cache_hit"] == 0
    assert hit.tags["distill_cache_hit"] == "true" and hit.metrics["distill_cache_hit"] == 1
    assert {k: v for k, v in hit.metrics.items() if k != "distill_cache_hit"} == \
        {k: v for k, v in miss.metrics.items() if k != "distill_cache_hit"}
    assert miss.metrics["epochs_run"] == 1 and 0 <= miss.metrics["distill_validation_macro_f1"] <= 1
    a, b = miss.model.state_dict(), hit.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    (entry,) = [p for p in (tmp_path / "cache" / "students").iterdir() if p.is_dir()]
    meta = json.loads((entry / META_FILE).read_text())
    assert meta["ingredients"]["seed"] == 7 and meta["ingredients"]["temperature"] == 2.0
    assert not any((entry / "model").glob("tokenizer*"))  # tokenizers are derived from the spec, not stored
    old_rule = replace(ctx, distill_seed_rule="trial_seed")  # a study started before #18
    assert old_rule.distill_seed(3) == 10 and ctx.distill_seed(3) == 7

    # --distill-cache-gb 0: no cache, every call distils, and gets the student the cache holds
    assert student_cache(tmp_path / "other", 0) is None
    plain = replace(ctx, student_cache=None)
    first, second = distilled_student(plain, kd, seed=7), distilled_student(plain, kd, seed=7)
    assert counted_fit == [7, 7, 7] and not (tmp_path / "other").exists()
    assert first.tags["distill_cache_hit"] == second.tags["distill_cache_hit"] == "false"
    ids = torch.randint(5, 100, (3, 12))
    with torch.no_grad():  # the cached student computes exactly what the one kept in memory does
        assert torch.equal(first.model(input_ids=ids).logits, hit.model(input_ids=ids).logits)


def _build_counted(counter: Path, seconds: float = 0.0):
    def build(folder: Path) -> dict:
        with counter.open("a") as fh:
            fh.write(f"{os.getpid()}\n")
        time.sleep(seconds)
        (folder / "model").mkdir()
        (folder / "model" / "weights.bin").write_bytes(b"\0" * 1000)
        return {"distill_validation_macro_f1": 0.5}
    return build


def test_two_threads_asking_for_one_key_distil_once(tmp_path):
    cache = StudentCache(tmp_path / "students", 10**9)
    counter = tmp_path / "calls"
    hits = []
    barrier = threading.Barrier(2)

    def ask():
        barrier.wait()
        with cache.open("k1", _build_counted(counter, seconds=1.0)) as entry:
            hits.append(entry.hit)
            assert (entry.model_dir / "weights.bin").stat().st_size == 1000

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(hits) == [False, True] and len(counter.read_text().split()) == 1


def _ask_in_a_process(root: str, counter: str, barrier, results) -> None:
    cache = StudentCache(Path(root), 10**9)
    barrier.wait()
    with cache.open("k1", _build_counted(Path(counter), seconds=1.0)) as entry:
        results.put((entry.hit, entry.meta["distill_validation_macro_f1"]))


@pytest.mark.slow  # two spawned interpreters importing torch; the thread test checks the same locks in the fast lane
def test_two_processes_asking_for_one_key_distil_once(tmp_path):
    spawn = multiprocessing.get_context("spawn")
    barrier, results = spawn.Barrier(2), spawn.Queue()
    procs = [spawn.Process(target=_ask_in_a_process, args=(str(tmp_path / "students"), str(tmp_path / "calls"),
                                                           barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    got = sorted(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert got == [(False, 0.5), (True, 0.5)]
    assert len((tmp_path / "calls").read_text().split()) == 1


def test_eviction_keeps_the_total_under_the_bound_least_recently_used_first(tmp_path):
    root = tmp_path / "students"
    probe = StudentCache(root / "probe", 10**9)
    with probe.open("kx", _build_counted(tmp_path / "calls")):
        pass
    size = probe.entries()[0][1]  # one entry's bytes: its model and its meta.json
    cache = StudentCache(root / "bounded", int(2.5 * size))
    for n, key in enumerate(("k1", "k2")):
        with cache.open(key, _build_counted(tmp_path / "calls")):
            pass
        os.utime(cache.root / key / META_FILE, (1000 + n, 1000 + n))  # k1 used long ago, k2 later
    with cache.open("k1", _build_counted(tmp_path / "calls")) as entry:  # a hit touches k1: now k2 is the oldest
        assert entry.hit
    with cache.open("k3", _build_counted(tmp_path / "calls")):
        pass
    kept = [path.name for _, _, path in cache.entries()]
    assert kept == ["k1", "k3"] and sum(e[1] for e in cache.entries()) <= cache.max_bytes
    assert (root / "bounded" / f"k2{LOCK_SUFFIX}").exists()  # lock files stay (0 bytes)

    # an entry being read is never removed; a folder a killed worker left half-built is
    (cache.root / ".k9.abc123").mkdir()
    small = replace(cache, max_bytes=size)
    with small.open("k1", _build_counted(tmp_path / "calls")) as entry:
        assert entry.hit and small.evict() == ["k3"]
        assert (entry.model_dir / "weights.bin").exists()
    assert not (cache.root / ".k9.abc123").exists()
    assert small.evict() == [] and [p.name for _, _, p in small.entries()] == ["k1"]
    tiny = replace(cache, max_bytes=1)
    assert tiny.evict() == ["k1"] and tiny.entries() == []
