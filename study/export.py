"""``python -m study.export``: Pareto-optimal (or chosen) trials as deployable bundles with model cards,
registered in the MLflow Model Registry as versions of ``<study>-pareto``."""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from objectives.bundle import Bundle, BundleError, load_bundle
from study.core.budgets import Budgets, add_budget_flags, budgets_from_args
from study.reporting.callbacks import BUNDLE_ARTIFACT, trial_params
from study.core.errors import EXIT_USER_ERROR, UserError
from study.reporting.front import NO_PRUNING, completed, pair_studies, pareto_trials, pruning_label
from study.reporting.picks import Rule, loss_points, parse_rule, pick
from study.reporting.tracking import RUN_ID_ATTR, Tracker

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Exported:
    study: str
    trial: int
    folder: Path
    logged_macro_f1: float
    verified_macro_f1: float | None
    registered: str | None  # "name/version"


@dataclass(frozen=True)
class Picked:
    """What ``--pick`` chose, for the model card and the registry version's description."""

    rule: Rule
    budgets: Budgets
    among: int  # trials the rule chose from (completed, meeting the budgets)

    def text(self, trial: FrozenTrial) -> str:
        m = trial.user_attrs.get("metrics", {})
        within = f"; {self.budgets.describe()}" if self.budgets else ""
        return (f"Picked by rule `{self.rule.text}` ({self.rule.describe()}{within}) among {self.among} completed "
                f"trial(s), on validation numbers: macro-F1 {trial.values[0]:.4f} "
                f"({loss_points(trial):.2f} points below the teacher), latency {trial.values[1]:.3f}x the paired "
                f"fp32 teacher's, {trial.values[2]:.2f} MB. Reported on test: macro-F1 {m.get('macro_f1', float('nan')):.4f} "
                f"(95% CI {m.get('macro_f1_ci_low', float('nan')):.4f}-{m.get('macro_f1_ci_high', float('nan')):.4f}), "
                f"speed-up {m.get('speedup_vs_teacher_onnx', float('nan')):.2f}x vs the fp32 teacher in its faster "
                f"runtime (95% CI {m.get('speedup_vs_teacher_onnx_ci_low', float('nan')):.2f}-"
                f"{m.get('speedup_vs_teacher_onnx_ci_high', float('nan')):.2f}).")


def choose_trials(study: optuna.Study, which: str, budgets: Budgets = Budgets()) -> list[FrozenTrial]:
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
    import os

    bundle.predictor.set_threads(os.cpu_count() or 1)
    predictions = bundle.predict_proba(list(split.test.texts), batch_size=64).argmax(axis=1)
    names = {name: i for i, name in enumerate(split.label_names)}
    mapped = np.array([names[bundle.labels[p]] for p in predictions])
    return macro_f1(split.test.labels, mapped)


def model_card(trial: FrozenTrial, run, parent, bundle: Bundle, verified: float | None, registered: str | None,
               picked: Picked | None = None) -> str:
    p, m = run.data.params, run.data.metrics
    tp = trial_params(trial)
    pruning = pruning_label(tp['prune_kind'], tp['prune_ratio'], "{:.2f}")
    chain = (f"distil {p['student']} from {p['teacher']} (T={float(tp['temperature']):.3g}, "
             f"lambda={float(tp['kd_lambda']):.3g}) -> {pruning if pruning == NO_PRUNING else 'prune ' + pruning} "
             f"-> quantize {tp['quant_scheme']}")
    machine = {k.split(".", 1)[1]: v for k, v in parent.data.tags.items() if k.startswith("machine.")}

    def fmt(name: str, digits: int = 4) -> str:
        return f"{m[name]:.{digits}f}" if name in m else "n/a"

    import onnxruntime
    import transformers

    lines = [
        f"# {p['student']} compressed from {p['teacher']} — trial {trial.number} of `{trial.user_attrs.get('study')}`",
        "",
        f"Technique chain: {chain}.",
        f"Served by: {bundle.meta['runtime']} ({bundle.meta['scheme']}; quantizes {bundle.meta['quantizes']}).",
        f"Labels: {', '.join(bundle.labels)}.",
        "",
        *([picked.text(trial), ""] if picked else []),
        "## Measured in the study (chosen on validation, reported on the held-out test split)",
        "",
        "| metric | value |",
        "|---|---|",
        f"| macro-F1, validation (what the search chose by) | {fmt('macro_f1_validation')} |",
        f"| macro-F1, test (95% bootstrap CI) | {fmt('macro_f1')} ({fmt('macro_f1_ci_low')} to {fmt('macro_f1_ci_high')}) |",
        f"| macro-F1 minus the teacher's, test (95% CI, paired) | {fmt('macro_f1_delta_vs_teacher')} "
        f"({fmt('macro_f1_delta_vs_teacher_ci_low')} to {fmt('macro_f1_delta_vs_teacher_ci_high')}) |",
        f"| accuracy | {fmt('accuracy')} |",
        f"| latency, batch 1 (median ms/example) | {fmt('latency_ms', 3)} (IQR {fmt('latency_iqr_ms', 3)} ms) |",
        f"| throughput, batch 32 (examples/s) | {fmt('throughput_per_s', 1)} |",
        f"| artifact size (MB) | {fmt('size_mb', 3)} |",
        f"| non-zero parameters | {int(m['nonzero_params']) if 'nonzero_params' in m else 'n/a'} |",
        f"| latency from raw text, batch 1 (ms/example) | {fmt('latency_e2e_ms', 3)} |",
        f"| speedup vs the fp32 teacher in its faster runtime (95% CI) | {fmt('speedup_vs_teacher_onnx', 2)}x "
        f"({fmt('speedup_vs_teacher_onnx_ci_low', 2)} to {fmt('speedup_vs_teacher_onnx_ci_high', 2)}) |",
        f"| speedup vs the fp32 teacher in PyTorch / compression | {fmt('speedup_vs_teacher', 2)}x / "
        f"{fmt('compression_vs_teacher', 2)}x |",
        f"| macro-F1 re-measured on export | {f'{verified:.4f}' if verified is not None else 'not re-measured (data not found)'} |",
        "",
        f"Timing protocol: {run.data.tags.get('latency_protocol', 'see README')}; "
        f"{p.get('threads', '?')} thread(s).",
        "",
        "## Provenance",
        "",
        f"- data: {p.get('data_source')} (sha256 {p.get('data_sha256')}), {p.get('data_rows')} rows, "
        f"classes {p.get('data_class_counts')}",
        f"- split: train {p.get('split_train')} / validation {p.get('split_validation')} / test {p.get('split_test')}, "
        f"seed {p.get('split_seed')}; trial seed {int(p.get('seed', 0)) + trial.number}",
        f"- MLflow run id: {run.info.run_id}; registered model version: {registered or 'not registered'}",
        f"- measured on: {machine.get('cpu', platform.processor())}, {machine.get('cpu_count', '?')} cores; "
        f"torch {machine.get('torch_version', '?')}, onnxruntime {machine.get('onnxruntime_version', '?')}",
        f"- exported with: transformers {transformers.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"Python {platform.python_version()}",
        "",
        "## Use",
        "",
        "```bash",
        "python -m study.predict THIS_FOLDER \"some text\"",
        "```",
        "",
    ]
    return "\n".join(lines)


def register(folder: Path, run_id: str, tracking_uri: str, name: str, trial: FrozenTrial,
             description: str | None = None) -> str:
    """Log the bundle as a pyfunc model in its trial's run and register it as a version of ``name``."""
    import mlflow
    import onnxruntime
    import tokenizers
    import torch
    import transformers

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    requirements = [f"mlflow=={mlflow.__version__}", f"transformers=={transformers.__version__}",
                    f"tokenizers=={tokenizers.__version__}", f"onnxruntime=={onnxruntime.__version__}",
                    f"torch=={torch.__version__.split('+')[0]}", "numpy", "pandas"]
    with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's advice on type hints: inputs are validated by the bundle
        from objectives.pyfunc import BundleModel

        info = mlflow.pyfunc.log_model(name="pyfunc-model", python_model=BundleModel(),
                                       artifacts={"bundle": str(folder)},
                                       code_paths=[str(ROOT / "objectives"), str(ROOT / "study")],
                                       pip_requirements=requirements, registered_model_name=name)
    version = info.registered_model_version
    client = mlflow.tracking.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    for key, value in {"study": trial.user_attrs.get("study", ""), "trial_number": str(trial.number),
                       "run_id": run_id}.items():
        client.set_model_version_tag(name, str(version), key, value)
    if description:
        client.update_model_version(name, str(version), description=description)
    return f"{name}/{version}"


def export(study_name: str, storage: str, tracking_uri: str, which: str, out: Path, data: Path | None,
           do_register: bool, log=print, budgets: Budgets | None = None, pick_rule: str | None = None) -> list[Exported]:
    """Write the chosen trials' bundles: ``which`` ('pareto', 'all' or numbers) of every pair study, or with
    ``pick_rule`` the one trial that rule picks across them. ``budgets`` None: each study's stored budgets."""
    rule = parse_rule(pick_rule) if pick_rule else None
    names = pair_studies(storage, study_name)
    tracker = Tracker(tracking_uri)
    tracker.check()
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
    for name, trial in chosen:  # check first: export nothing if any chosen bundle is gone
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if not run_id or not tracker.has_artifacts(run_id, BUNDLE_ARTIFACT):
            raise UserError(f"{name} trial {trial.number}: its model bundle was not kept in MLflow "
                            "(the study ran with --keep-models none, or the trial is dominated and was pruned); "
                            "choose Pareto-optimal trials or re-run with --keep-models all")
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name, trial in chosen:
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
        registered = (register(folder, run_id, tracking_uri, f"{study_name}-pareto", trial, note)
                      if do_register else None)
        (folder / "model_card.md").write_text(model_card(trial, run, parent, bundle, verified, registered, picked))
        (folder / "provenance.json").write_text(json.dumps(
            {"study": name, "trial_number": trial.number, "mlflow_run_id": run_id, "registered": registered,
             "params": run.data.params, "metrics": run.data.metrics, "verified_macro_f1": verified,
             "picked_by": picked.rule.text if picked else None, "picked": note},
            indent=2, ensure_ascii=False))
        logged = run.data.metrics["macro_f1"]
        results.append(Exported(name, trial.number, folder, logged, verified, registered))
        check = f", re-measured {verified:.4f}" if verified is not None else ", not re-measured (data not found)"
        log(f"[export] {name} trial {trial.number} -> {folder} (macro-F1 logged {logged:.4f}{check}"
            f"{'; registered ' + registered if registered else ''})")
        if note:
            log(f"[export] {note}")
    return results


def main(argv: list[str] | None = None) -> int:
    from study.core.config import add_store_flags

    p = argparse.ArgumentParser(prog="python -m study.export", description=__doc__.split(":", 1)[1].strip())
    add_store_flags(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--trials", default="pareto", help="'pareto' (default), 'all', or trial numbers like 3,7 "
                                                          "(applied to every pair study of the study)")
    which.add_argument("--pick", default=None, metavar="RULE",
                       help="export the one model this rule picks across every pair study, on validation numbers: "
                            "most-accurate, fastest, smallest, fastest-within:P, smallest-within:P (P macro-F1 "
                            "points below the teacher), knee (see the README)")
    p.add_argument("--out", type=Path, default=Path("exported"), help="folder for the bundles")
    p.add_argument("--data", type=Path, default=None,
                   help="the study's --data (file or saved dataset folder), if it moved (used to re-measure "
                        "macro-F1; sha256 must match); given validation/test parts are read from where the run "
                        "recorded them")
    p.add_argument("--no-register", action="store_true", help="write bundles only, no Model Registry versions")
    add_budget_flags(p)
    args = p.parse_args(argv)
    from study.core.libraries import quiet_libraries

    quiet_libraries()
    try:
        given = budgets_from_args(args)
        export(args.study_name, args.storage, args.tracking_uri, args.trials, args.out, args.data,
               not args.no_register, budgets=given if given else None, pick_rule=args.pick)
    except (UserError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
