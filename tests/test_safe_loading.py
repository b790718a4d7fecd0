"""Loading a model never runs code from it: int8 state dicts through a checked, weights-only torch.load; the
TF-IDF member in the skops format; pickled payloads refused before anything in them runs."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from objectives.bundle import UnsafeBundleError, load_bundle, load_int8_state_dict
from study.core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["I feel so happy after the match", "we feel furious at the news", "a sad and quiet evening alone"]


class _Payload:
    """Unpickling this writes ``marker``: what a malicious file would do instead."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


@pytest.fixture(scope="module")
def int8_bundle(trained_tiny, demo_split, tmp_path_factory):
    """A real torch_dynamic_int8 bundle of a head- and FFN-pruned model, and the in-memory quantized model."""
    import copy

    from objectives.prune import PruneConfig, prune
    from objectives.trial import export_bundle

    model, tok = trained_tiny
    pruned = copy.deepcopy(model)
    prune(pruned, PruneConfig("heads_ffn", 0.25))
    folder = tmp_path_factory.mktemp("int8") / "bundle"
    servable = export_bundle(pruned, tok, "torch_dynamic_int8", folder, 64, tuple(demo_split.label_names))
    return folder, servable


def _copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "bundle"))


def test_an_int8_bundle_round_trips_through_the_weights_only_loader(int8_bundle, monkeypatch):
    folder, servable = int8_bundle
    assert (folder / "model" / "quantized_state_dict.pt").exists()
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    bundle = load_bundle(folder)
    assert calls == [True]  # one load, weights only
    enc = bundle.tokenizer(TEXTS, padding=True, truncation=True, max_length=64, return_tensors="np",
                           return_token_type_ids=False)
    logits = servable.predictor.logits(enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64))
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    assert np.allclose(bundle.predict_proba(TEXTS), expected, atol=1e-5)
    assert bundle.predict(TEXTS) == [bundle.labels[i] for i in expected.argmax(axis=1)]


def _poison(folder: Path, marker: Path, **save_kwargs) -> Path:
    path = folder / "model" / "quantized_state_dict.pt"
    state = torch.load(path, weights_only=True)
    state["classifier.payload"] = _Payload(marker)
    torch.save(state, path, **save_kwargs)
    return path


def test_a_state_dict_carrying_a_pickled_payload_is_refused_and_runs_nothing(int8_bundle, tmp_path):
    folder = _copy(int8_bundle[0], tmp_path)
    marker = tmp_path / "payload-ran"
    path = _poison(folder, marker)
    with pytest.raises(UnsafeBundleError) as refused:
        load_bundle(folder)
    assert isinstance(refused.value, UserError)
    message = str(refused.value)
    assert str(path) in message and "builtin__.exec, which is not a tensor type" in message  # protocol 2 spelling
    assert "pickled payload" in message
    assert not marker.exists()

    done = subprocess.run([sys.executable, "-m", "study.predict", str(folder), "some text"], cwd=ROOT,
                          capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                                                               "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and "quantized_state_dict.pt is refused" in done.stderr
    assert "pickled payload" in done.stderr and done.stdout == ""
    assert not marker.exists()


@pytest.mark.parametrize("form", ["stack_global", "legacy_pickle", "not_a_pickle"])
def test_other_forms_of_payload_are_refused(int8_bundle, tmp_path, form):
    folder = _copy(int8_bundle[0], tmp_path)
    marker = tmp_path / "payload-ran"
    path = folder / "model" / "quantized_state_dict.pt"
    if form == "stack_global":  # protocol 4 names its callables on the stack
        _poison(folder, marker, pickle_protocol=4)
        why = "opcode STACK_GLOBAL"
    elif form == "legacy_pickle":  # a bare pickle, not torch's zip
        path.write_bytes(pickle.dumps({"w": _Payload(marker)}))
        why = "not a torch.save zip archive"
    else:
        path.write_bytes(b"PK\x03\x04 broken")
        why = "not a torch.save zip archive"
    with pytest.raises(UnsafeBundleError, match=why):
        load_int8_state_dict(path)
    assert not marker.exists()


def test_torch_weights_only_loader_is_a_second_guard(int8_bundle, tmp_path, monkeypatch):
    import objectives.bundle

    folder = _copy(int8_bundle[0], tmp_path)
    marker = tmp_path / "payload-ran"
    path = _poison(folder, marker)
    monkeypatch.setattr(objectives.bundle, "check_state_dict_pickle", lambda _path: None)
    with pytest.raises(UnsafeBundleError, match="weights-only loader refused it .*exec"):
        load_int8_state_dict(path)
    assert not marker.exists()


# -- the TF-IDF member ------------------------------------------------------------------------------------


def test_the_tfidf_pipeline_round_trips_in_skops(demo_split, tmp_path):
    import zipfile

    from study.core.tfidf import load_pipeline, save_pipeline, tfidf_pipeline

    pipe = tfidf_pipeline(0).fit(list(demo_split.train.texts), demo_split.train.labels)
    path = tmp_path / "tfidf.skops"
    save_pipeline(pipe, path)
    with zipfile.ZipFile(path) as archive:  # JSON and arrays, no pickle
        assert "schema.json" in archive.namelist()
        assert all(n == "schema.json" or n.endswith(".npy") for n in archive.namelist())
    texts = list(demo_split.validation.texts)
    assert np.array_equal(load_pipeline(path).predict_proba(texts), pipe.predict_proba(texts))


def test_a_member_file_building_other_classes_is_refused(demo_split, tmp_path):
    import skops.io as sio
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    from study.core.tfidf import load_pipeline

    sio.dump(make_pipeline(StandardScaler()), tmp_path / "other.skops")
    with pytest.raises(UserError, match=f"StandardScaler, which the TF-IDF pipeline is not made of; delete the "
                                        f"folder {tmp_path} to fit"):
        load_pipeline(tmp_path / "other.skops")
    sio.dump(FunctionTransformer(func=print), tmp_path / "func.skops")
    with pytest.raises(UserError, match="is refused"):
        load_pipeline(tmp_path / "func.skops")
    (tmp_path / "old.skops").write_bytes(pickle.dumps(_Payload(tmp_path / "payload-ran")))
    with pytest.raises(UserError, match="not a TF-IDF pipeline saved in the skops format"):
        load_pipeline(tmp_path / "old.skops")
    assert not (tmp_path / "payload-ran").exists()


def test_an_old_pickled_member_in_the_cache_is_never_unpickled(demo_split, tmp_path):
    import json

    from study.core.teacher import MEMBER_FILE, TeacherArtifacts, tfidf_member

    k = len(demo_split.label_names)
    network = TeacherArtifacts(name="net", directory=tmp_path / "net",
                               train_logits=np.zeros((len(demo_split.train), k), np.float32),
                               validation_logits=np.zeros((len(demo_split.validation), k), np.float32),
                               validation_macro_f1=0.0, cache_key="x", from_cache=True)
    old = network.directory / "tfidf-member-0.5"  # as the previous version cached it
    old.mkdir(parents=True)
    marker = tmp_path / "payload-ran"
    (old / "tfidf.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    (old / "member.json").write_text(json.dumps({"weight": 0.5, "validation_macro_f1": 1.0}))
    lines = []
    member_dir = tfidf_member(network, demo_split, 0.5, seed=0, log=lines.append)
    assert member_dir != old and (member_dir / MEMBER_FILE).exists() and not (member_dir / "tfidf.pkl").exists()
    assert any("ignoring the old TF-IDF member" in line for line in lines)
    assert not marker.exists()
    # the cached member, loaded from skops, gives the ensemble's cached validation logits again
    from dataclasses import replace

    teacher = replace(network, tfidf_weight=0.5, member_dir=member_dir)
    blended = teacher.blend(network.validation_logits, demo_split.validation.texts)
    assert np.allclose(blended, np.load(member_dir / "logits.npz")["validation"], atol=1e-6)
    assert tfidf_member(network, demo_split, 0.5, seed=0, log=lines.append) == member_dir  # reused
    assert not marker.exists()
