"""Chosen trials of a study as deployable bundles: chosen (Pareto, all, numbers or one pick rule), copied out of
MLflow, re-measured on the run's own test split, described by a model card and registered as model versions."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from objectives.bundle import Bundle, load_bundle
from study.core.budgets import Budgets
from study.core.errors import UserError
from study.reporting.callbacks import BUNDLE_ARTIFACT
from study.reporting.front import completed, pair_studies, pareto_trials
from study.reporting.model_card import Picked, model_card
from study.reporting.picks import Rule, parse_rule, pick
from study.reporting.tracking import RUN_ID_ATTR, Tracker

ROOT = Path(__file__).resolve().parents[2]  # the code a registered pyfunc model carries: objectives/ and study/


@dataclass(frozen=True)
class Exported:
    study: str
    trial: int
    folder: Path
    logged_macro_f1: float
    verified_macro_f1: float | None
    registered: str | None  # "name/version"


def choose_trials(study: optuna.Study, which: str, budgets: Budgets = Budgets()) -> list[FrozenTrial]:
    """``which`` of the study's completed trials: 'pareto' (within ``budgets``), 'all', or numbers like '3,7'."""
    done = completed(study)
    if which == "pareto":
        return pareto_trials(done, budgets=budgets)
    if which == "all":
        return done
    try:
        numbers = {int(x) for x in which.split(",") if x.strip()}
    except ValueError:
        raise UserError(f"--trials must be 'pareto', 'all' or trial numbers like 3,7; got {which!r}") from None
    by_number = {t.number: t for t in done}
    missing = sorted(numbers - set(by_number))
    if missing:
        raise UserError(f"study {study.study_name}: no completed trial numbered {', '.join(map(str, missing))}")
    return [by_number[n] for n in sorted(numbers)]


def remeasure(bundle: Bundle, params: dict[str, str], data_override: Path | None) -> float | None:
    """Macro-F1 of the bundle on the run's own test split, if that data can be read again (same sha256)."""
    import os

    from study.core.data import split_corpus
    from study.core.demo import DEMO_SOURCE
    from study.core.sources import DataSpec, load_data
    from study.core.training import macro_f1

    spec = DataSpec.from_params(params, source=None if data_override is None else str(data_override))
    if spec.source == DEMO_SOURCE:
        spec = DataSpec()
    elif not spec.source:
        return None
    try:
        corpus = load_data(spec)
    except UserError:
        if data_override is not None:
            raise
        return None  # moved, deleted, or a hub dataset out of reach: the card says it was not re-measured
    if corpus.sha256 != params.get("data_sha256"):
        return None
    split = split_corpus(corpus, seed=int(params["split_seed"]), test_size=float(params["split_test_size"]),
                         validation_size=float(params["split_validation_size"]))
    bundle.predictor.set_threads(os.cpu_count() or 1)
    predictions = bundle.predict_proba(list(split.test.texts), batch_size=64).argmax(axis=1)
    names = {name: i for i, name in enumerate(split.label_names)}
    mapped = np.array([names[bundle.labels[p]] for p in predictions])
    return macro_f1(split.test.labels, mapped)


def export_bundles(study_name: str, storage: str, tracking_uri: str, which: str, out: Path, data: Path | None,
                   do_register: bool, log=print, budgets: Budgets | None = None,
                   pick_rule: str | None = None) -> list[Exported]:
    """Write the chosen trials' bundles: ``which`` ('pareto', 'all' or numbers) of every pair study, or with
    ``pick_rule`` the one trial that rule picks across them. ``budgets`` None: each study's stored budgets.
    Nothing is written unless every chosen trial's bundle is still in MLflow."""
    rule = parse_rule(pick_rule) if pick_rule else None
    names = pair_studies(storage, study_name)
    tracker = Tracker(tracking_uri)
    tracker.check()
    chosen, picked = _chosen(study_name, names, storage, which, budgets, rule)
    _check_bundles_kept(tracker, chosen)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name, trial in chosen:
        exported = _export_one(tracker, name, trial, out, data, f"{study_name}-pareto" if do_register else None,
                               picked)
        results.append(exported)
        check = (f", re-measured {exported.verified_macro_f1:.4f}" if exported.verified_macro_f1 is not None
                 else ", not re-measured (data not found)")
        log(f"[export] {name} trial {trial.number} -> {exported.folder} (macro-F1 logged "
            f"{exported.logged_macro_f1:.4f}{check}"
            f"{'; registered ' + exported.registered if exported.registered else ''})")
        if picked:
            log(f"[export] {picked.text(trial)}")
    return results


def _chosen(study_name: str, names: list[str], storage: str, which: str, budgets: Budgets | None,
            rule: Rule | None) -> tuple[list[tuple[str, FrozenTrial]], Picked | None]:
    """(pair study, trial) of every trial to export from the pair studies ``names`` and, with a ``rule``, what it
    picked among how many."""
    chosen, pool, everything = [], [], []
    for name in names:
        study = optuna.load_study(study_name=name, storage=storage)
        limits = budgets if budgets is not None else Budgets.of_study(study)
        if rule is None:
            chosen.extend((name, t) for t in choose_trials(study, which, limits))
        else:
            everything.extend(completed(study))
            pool.extend((name, t) for t in completed(study) if limits.feasible(t))
    picked = None
    if rule is not None:
        if not pool:
            if not everything:
                raise UserError(f"study {study_name!r} has no completed trials to export")
            raise UserError(limits.nothing_meets(everything, study_name))
        best = pick([t for _, t in pool], rule)
        chosen = [(name, t) for name, t in pool if t is best]
        picked = Picked(rule, limits, len(pool))  # every pair study of one run stores the same budgets
    if not chosen:
        raise UserError(f"study {study_name!r} has no completed trials to export")
    return chosen, picked


def _check_bundles_kept(tracker: Tracker, chosen: list[tuple[str, FrozenTrial]]) -> None:
    """UserError naming the first chosen trial whose bundle is not in MLflow (then nothing is exported)."""
    for name, trial in chosen:
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if not run_id or not tracker.has_artifacts(run_id, BUNDLE_ARTIFACT):
            raise UserError(f"{name} trial {trial.number}: its model bundle was not kept in MLflow "
                            "(the study ran with --keep-models none, or the trial is dominated and was pruned); "
                            "choose Pareto-optimal trials or re-run with --keep-models all")


def _export_one(tracker: Tracker, name: str, trial: FrozenTrial, out: Path, data: Path | None,
                registry_name: str | None, picked: Picked | None) -> Exported:
    """``out/<pair study>.trial-<n>``: the bundle, ``model_card.md`` and ``provenance.json``; registered as a
    version of ``registry_name`` unless it is None."""
    run_id = trial.user_attrs[RUN_ID_ATTR]
    run = tracker.get_run(run_id)
    parent = tracker.get_run(run.data.tags["mlflow.parentRunId"])
    folder = out / f"{name}.trial-{trial.number}"
    if folder.exists():
        shutil.rmtree(folder)
    with tempfile.TemporaryDirectory() as tmp:
        local = tracker.download_artifacts(run_id, BUNDLE_ARTIFACT, tmp)
        shutil.copytree(local, folder)
    bundle = load_bundle(folder)
    verified = remeasure(bundle, run.data.params, data)
    note = picked.text(trial) if picked else None
    registered = register(tracker, folder, run_id, registry_name, trial, note) if registry_name else None
    (folder / "model_card.md").write_text(model_card(trial, run, parent, bundle, verified, registered, picked))
    (folder / "provenance.json").write_text(json.dumps(
        {"study": name, "trial_number": trial.number, "mlflow_run_id": run_id, "registered": registered,
         "params": run.data.params, "metrics": run.data.metrics, "verified_macro_f1": verified,
         "picked_by": picked.rule.text if picked else None, "picked": note},
        indent=2, ensure_ascii=False))
    return Exported(name, trial.number, folder, run.data.metrics["macro_f1"], verified, registered)


def register(tracker: Tracker, folder: Path, run_id: str, name: str, trial: FrozenTrial,
             description: str | None = None) -> str:
    """Log the bundle as a pyfunc model in its trial's run (models from code: objectives/pyfunc_model.py, no
    pickled Python object) and register it as a version of ``name``; returns "name/version"."""
    import onnxruntime
    import tokenizers
    import torch
    import transformers

    requirements = [f"transformers=={transformers.__version__}", f"tokenizers=={tokenizers.__version__}",
                    f"onnxruntime=={onnxruntime.__version__}", f"torch=={torch.__version__.split('+')[0]}",
                    "numpy", "pandas"]
    return tracker.register_model(
        run_id, name, str(ROOT / "objectives" / "pyfunc_model.py"), artifacts={"bundle": str(folder)},
        code_paths=[str(ROOT / "objectives"), str(ROOT / "study")], pip_requirements=requirements,
        tags={"study": trial.user_attrs.get("study", ""), "trial_number": str(trial.number), "run_id": run_id},
        description=description)
