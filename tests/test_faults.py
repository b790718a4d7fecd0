"""Faults: failing trials, kill -9 and resume, the doctor, and the bad-input matrix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from study.run import main

pytestmark = pytest.mark.slow  # runs studies: skipped by the fast lane (pytest -m 'not slow')

ROOT = Path(__file__).resolve().parents[1]


def _stores(root: Path) -> dict[str, str]:
    return {"storage": f"sqlite:///{root}/optuna.db", "tracking": f"sqlite:///{root}/mlflow.db",
            "cache": str(root / "cache")}


def _args(stores, name, n_trials, *extra):
    return ["--objective", "pareto", "--n-trials", str(n_trials), "--quick", "--study-name", name,
            "--storage", stores["storage"], "--tracking-uri", stores["tracking"], "--cache-dir", stores["cache"],
            "--heartbeat", "1", *extra]


def _runs(stores, name, role="trial"):
    client = MlflowClient(tracking_uri=stores["tracking"])
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id], f"tags.role = '{role}'", max_results=1000)


def _space_with_scheme(tmp_path, monkeypatch, name, build) -> str:
    """Register quantization scheme ``name`` for this test and write a space that always picks it."""
    from objectives import quantize as q

    monkeypatch.setitem(q.SCHEMES, name, q.Scheme(name, "pytorch", "nothing", build))
    space = yaml.safe_load((ROOT / "search_spaces" / "default.yaml").read_text())
    space["quant_scheme"] = {"type": "categorical", "choices": [name]}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return str(path)


def test_a_failing_trial_is_recorded_and_the_study_goes_on(tmp_path, monkeypatch):
    from objectives import quantize as q

    calls = []

    def flaky(model, out, config, calibration):  # the first export fails, later ones work
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("export exploded on purpose")
        return q.SCHEMES["none"].build(model, out, config, calibration)

    path = _space_with_scheme(tmp_path, monkeypatch, "flaky", flaky)
    stores = _stores(tmp_path)
    assert main(_args(stores, "faulty", 3, "--students", "scratch-tiny", "--space", path,
                      "--sampler", "random", "--seed", "1")) == 0
    study = optuna.load_study(study_name="faulty.scratch-base.scratch-tiny", storage=stores["storage"])
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 3 and [t.number for t in failed] == [0]
    runs = {r.info.run_id: r for r in _runs(stores, "faulty")}
    for t in failed:
        run = runs[t.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FAILED"
        assert "export exploded on purpose" in run.data.tags["failure_reason"]
    assert sum(r.info.status == "FINISHED" for r in runs.values()) == 3


def test_a_study_whose_trials_all_fail_stops_and_says_so(tmp_path, monkeypatch, capsys):
    def broken(model, out, config, calibration):
        raise RuntimeError("always broken")

    path = _space_with_scheme(tmp_path, monkeypatch, "broken", broken)
    stores = _stores(tmp_path)
    assert main(_args(stores, "allfail", 2, "--students", "scratch-tiny", "--space", path)) == 1
    assert "2 trials in a row failed" in capsys.readouterr().out
    parent = _runs(stores, "allfail", role="study")[0]
    assert parent.info.status == "FAILED"


def _launch(stores, name, n_trials, log):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "study.run",
                             *_args(stores, name, n_trials, "--students", "scratch-small", "--seed", "2")],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _running(stores, full) -> set[int]:
    for _ in range(20):
        try:
            study = optuna.load_study(study_name=full, storage=stores["storage"])
            return {t.number for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING}
        except KeyError:  # not created yet
            return set()
        except Exception:  # the database is busy
            time.sleep(0.5)
    raise AssertionError("the Optuna storage stayed unreadable")


def _kill_mid_trial(proc, stores, name, min_complete) -> bool:
    """SIGKILL ``proc`` while one of its trials runs and at least ``min_complete`` trials are complete; returns
    whether the kill left a trial of ``proc`` RUNNING (it may land just after the trial finished instead).

    The trial is found by its state, not as the last one stored: queued variants wait after it; and a trial an
    earlier kill left RUNNING (not yet failed as stale) is not one of ``proc``'s."""
    full = f"{name}.scratch-base.scratch-small"
    stale = _running(stores, full)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            study = optuna.load_study(study_name=full, storage=stores["storage"])
            trials = study.get_trials(deepcopy=False)
        except Exception:
            trials = []
        running = [t for t in trials if t.state == TrialState.RUNNING and t.number not in stale]
        if sum(t.state == TrialState.COMPLETE for t in trials) >= min_complete and running:
            time.sleep(0.3)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return bool(_running(stores, full) - stale)
        time.sleep(0.2)
    raise AssertionError("never caught a running trial to kill")


def test_kill_9_then_resume_three_times(tmp_path):
    stores = _stores(tmp_path)
    name, total = "killme", 4
    kills = launches = 0
    with open(tmp_path / "log.txt", "w") as log:
        while kills < 3:  # three kills that leave a trial running (one may land just after a short trial ended)
            launches += 1
            assert launches <= 6, (tmp_path / "log.txt").read_text()[-3000:]
            proc = _launch(stores, name, total, log)
            kills += _kill_mid_trial(proc, stores, name, min_complete=kills)
        proc = _launch(stores, name, total, log)
        assert proc.wait(timeout=600) == 0, (tmp_path / "log.txt").read_text()[-3000:]
    study = optuna.load_study(study_name=f"{name}.scratch-base.scratch-small", storage=stores["storage"])
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == total
    assert TrialState.RUNNING not in states
    assert states.count(TrialState.FAIL) == 3  # the three killed trials
    runs = _runs(stores, name)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    numbers = [int(r.data.tags["optuna.trial_number"]) for r in finished]
    assert sorted(numbers) == sorted(t.number for t in study.trials if t.state == TrialState.COMPLETE)
    assert len(set(numbers)) == len(numbers)  # no trial number has two finished runs
    for t in study.trials:
        if t.state == TrialState.WAITING:  # queued, never started: no run yet
            continue
        run = next(r for r in runs if r.info.run_id == t.user_attrs["mlflow_run_id"])
        expected = "FINISHED" if t.state == TrialState.COMPLETE else "KILLED"
        assert run.info.status == expected, (t.number, t.state, run.info.status)
    # The doctor finds the two stores in agreement.
    assert subprocess.run([sys.executable, "-m", "study.doctor", "--study-name", name, "--storage",
                           stores["storage"], "--tracking-uri", stores["tracking"]], cwd=ROOT).returncode == 0


def test_doctor_reports_and_repairs(tmp_path, capsys):
    stores = _stores(tmp_path)
    assert main(_args(stores, "doc", 2, "--students", "scratch-tiny")) == 0
    from study.doctor import main as doctor

    runs = _runs(stores, "doc")
    client = MlflowClient(tracking_uri=stores["tracking"])
    client.set_tag(runs[0].info.run_id, "pareto", "maybe")
    client.update_run(runs[1].info.run_id, status="RUNNING")
    common = ["--study-name", "doc", "--storage", stores["storage"], "--tracking-uri", stores["tracking"]]
    capsys.readouterr()
    assert doctor(common) == 1
    out = capsys.readouterr().out
    assert "2 mismatch(es)" in out and "pareto=maybe" in out and "is RUNNING" in out
    assert doctor(common + ["--repair"]) == 0
    assert doctor(common) == 0
    assert "0 mismatch(es)" in capsys.readouterr().out
    assert doctor(["--study-name", "nope", "--storage", stores["storage"], "--tracking-uri", stores["tracking"]]) == 2


def _csv(tmp_path, name, rows, **kw):
    path = tmp_path / name
    pd.DataFrame(rows, columns=["text", "classes"]).to_csv(path, index=False, **kw)
    return path


def _good_rows():
    return [{"text": f"{c} example {i}", "classes": c} for c in ("joy", "anger") for i in range(10)]


def test_bad_input_matrix_exits_2_and_creates_nothing(tmp_path, capsys):
    out = tmp_path / "stores"
    stores = _stores(out)
    space = yaml.safe_load((ROOT / "search_spaces" / "default.yaml").read_text())
    bad_space = tmp_path / "low_high.yaml"
    bad_space.write_text(yaml.safe_dump({**space, "kd_lambda": {"type": "float", "low": 0.8, "high": 0.2}}))
    unknown_param = tmp_path / "unknown.yaml"
    unknown_param.write_text(yaml.safe_dump({**space, "dropout": {"type": "float", "low": 0.0, "high": 0.1}}))
    unknown_scheme = tmp_path / "scheme.yaml"
    unknown_scheme.write_text(yaml.safe_dump({**space, "quant_scheme": {"type": "categorical", "choices": ["int2"]}}))
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("text,classes\n".encode() + "".join(f"caf\xe9 {i},joy\nbad {i},anger\n" for i in range(9))
                      .encode("latin-1"))
    xlsx_garbage = tmp_path / "broken.xlsx"
    xlsx_garbage.write_bytes(b"this is not a spreadsheet")
    cases = [
        (["--data", str(tmp_path / "missing.csv")], "does not exist"),
        (["--data", str(xlsx_garbage)], "could not be read as .xlsx"),
        (["--data", str(tmp_path)], "is not a file"),
        (["--data", str(_csv(tmp_path, "empty.csv", []))], "no data rows"),
        (["--data", str(_csv(tmp_path, "one.csv", [{"text": "a", "classes": "joy"}] * 3))], "single class"),
        (["--data", str(_csv(tmp_path, "blank_label.csv", _good_rows() + [{"text": "x", "classes": ""}]))],
         "'classes' is blank"),
        (["--data", str(_csv(tmp_path, "blank_text.csv", _good_rows() + [{"text": " ", "classes": "joy"}]))],
         "'text' is blank"),
        (["--data", str(latin)], "not valid UTF-8"),
        (["--data", str(_csv(tmp_path, "small.csv", _good_rows() + [{"text": "rare", "classes": "fear"}]))],
         "too few examples to stratify"),
        (["--data", str(_csv(tmp_path, "cols.csv", _good_rows())), "--label-col", "emotion"], "no label column 'emotion'"),
        (["--teacher", "no-such-teacher"], "unknown model 'no-such-teacher'"),
        (["--students", "scratch-tiny,ghost"], "unknown model 'ghost'"),
        (["--space", str(bad_space)], "must be smaller than high"),
        (["--space", str(unknown_param)], "unknown parameter(s) dropout"),
        (["--space", str(unknown_scheme)], "quant_scheme choice(s) int2 unknown"),
        (["--storage", "postgresql+psycopg://nobody:secret@127.0.0.1:1/none"], "Optuna storage"),
        (["--tracking-uri", "http://127.0.0.1:1"], "MLflow tracking URI"),
        (["--storage", "redis://localhost"], "unsupported URL scheme"),
    ]
    for extra, message in cases:
        args = _args(stores, "bad", 1)
        for flag in ("--storage", "--tracking-uri"):
            if flag in extra:
                i = args.index(flag)
                del args[i:i + 2]
        assert main(args + extra) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, (extra, err)
        assert len(err.strip().splitlines()) == 1, err
    assert not out.exists(), list(out.rglob("*"))
