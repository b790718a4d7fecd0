"""The one door to MLflow: experiment per study, parent run per pair study, nested run per trial."""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from study.core.data import Origin, PartInput
from study.core.errors import UserError

ROLE = "role"
STUDY_TAG = "optuna.study_name"
TRIAL_TAG = "optuna.trial_number"
PARETO_TAG = "pareto"
RUN_ID_ATTR = "mlflow_run_id"  # Optuna trial user attribute holding the trial's MLflow run id
DIGEST_CHARS = 36  # MLflow keeps a dataset digest in 36 characters: the start of the part's sha256


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the working directory), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):])


def ensure_sqlite_parent(uri: str) -> None:
    path = sqlite_path(uri)
    if path is not None and str(path) not in ("", ":memory:"):
        path.expanduser().parent.mkdir(parents=True, exist_ok=True)


def artifact_root(uri: str) -> str | None:
    """Where a new experiment keeps artifacts: beside a sqlite database (``mlruns/artifacts`` by default);
    ``./mlruns/artifacts`` for a server database used directly; the server's choice for http(s)."""
    path = sqlite_path(uri)
    if path is not None and str(path) not in ("", ":memory:"):
        return (path.expanduser().resolve().parent / "artifacts").as_uri()
    if uri.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "mysql"):
        return (Path("mlruns").resolve() / "artifacts").as_uri()
    return None


class Tracker:
    """Writes studies and trials to an MLflow tracking store through ``MlflowClient``."""

    def __init__(self, tracking_uri: str):
        ensure_sqlite_parent(tracking_uri)
        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self._datasets: dict[tuple[str, str, str], Any] = {}  # (source, digest, name) -> mlflow Dataset entity

    def check(self) -> None:
        """Reach the store once, so that a wrong URI fails before anything is created."""
        try:
            self.client.search_experiments(max_results=1)
        except Exception as exc:
            raise UserError(f"MLflow tracking store {self.uri!r} is not reachable: {exc}") from None

    def find_experiment(self, name: str) -> str | None:
        """The id of experiment ``name``, or None if there is none."""
        found = self.client.get_experiment_by_name(name)
        return None if found is None else found.experiment_id

    def create_run(self, experiment_id: str, name: str, tags: dict[str, str]) -> str:
        """A new (running) run with ``tags``; returns its id."""
        return self.client.create_run(experiment_id, run_name=name, tags=tags).info.run_id

    def get_run(self, run_id: str):
        """The run (``mlflow.entities.Run``: its params, tags and metrics under ``.data``)."""
        return self.client.get_run(run_id)

    def has_artifacts(self, run_id: str, path: str) -> bool:
        """Whether the run holds anything under artifact ``path``."""
        return bool(self.client.list_artifacts(run_id, path))

    def download_artifacts(self, run_id: str, path: str, destination: str) -> str:
        """Copy artifact ``path`` of the run into ``destination``; returns the local path."""
        return self.client.download_artifacts(run_id, path, destination)

    def register_model(self, run_id: str, name: str, python_model, *, artifacts: dict[str, str],
                       code_paths: list[str], pip_requirements: list[str], tags: dict[str, str],
                       description: str | None = None) -> str:
        """Log ``python_model`` (the path of a models-from-code file that calls ``mlflow.models.set_model``, or an
        ``mlflow.pyfunc.PythonModel``, which MLflow pickles) as the model ``pyfunc-model`` of run ``run_id``
        and register it as a new version of ``name``, with ``tags`` and ``description``; returns "name/version".
        ``pip_requirements`` gets this MLflow's own pin in front."""
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(name="pyfunc-model", python_model=python_model, artifacts=artifacts,
                                           code_paths=code_paths,
                                           pip_requirements=[f"mlflow=={mlflow.__version__}", *pip_requirements],
                                           registered_model_name=name)
        version = str(info.registered_model_version)
        registry = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        for key, value in tags.items():
            registry.set_model_version_tag(name, version, key, value)
        if description:
            registry.update_model_version(name, version, description=description)
        return f"{name}/{version}"

    def experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        root = artifact_root(self.uri)
        return self.client.create_experiment(name, artifact_location=f"{root}/{name}" if root else None)

    def study_run(self, experiment_id: str, study_name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        """The parent run of a pair study: reopened when the study is resumed, created otherwise."""
        runs = self.client.search_runs([experiment_id], filter_string=(
            f"tags.{ROLE} = 'study' and tags.`{STUDY_TAG}` = '{study_name}'"), max_results=1)
        if runs:
            run_id = runs[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(experiment_id, run_name=study_name,
                                     tags={ROLE: "study", STUDY_TAG: study_name, **tags})
        self._log(run.info.run_id, params=params)
        return run.info.run_id

    def find_study_run(self, experiment_id: str, study_name: str):
        runs = self.client.search_runs([experiment_id], filter_string=(
            f"tags.{ROLE} = 'study' and tags.`{STUDY_TAG}` = '{study_name}'"), max_results=1)
        return runs[0] if runs else None

    def report_run(self, experiment_id: str, study_name: str) -> str:
        """The one run per experiment (tag role=report) holding the merged front across pairs."""
        runs = self.client.search_runs([experiment_id], filter_string=f"tags.{ROLE} = 'report'", max_results=1)
        if runs:
            return runs[0].info.run_id
        run = self.client.create_run(experiment_id, run_name=f"{study_name} report",
                                     tags={ROLE: "report", STUDY_TAG: study_name})
        self.client.set_terminated(run.info.run_id, status="FINISHED")
        return run.info.run_id

    def start_trial(self, experiment_id: str, parent_id: str, study_name: str, number: int,
                    params: dict[str, Any], tags: dict[str, str]) -> str:
        run = self.client.create_run(experiment_id, run_name=f"trial-{number}", tags={
            MLFLOW_PARENT_RUN_ID: parent_id, ROLE: "trial", STUDY_TAG: study_name, TRIAL_TAG: str(number), **tags})
        self._log(run.info.run_id, params=params)
        return run.info.run_id

    def record_run(self, experiment_id: str, parent_id: str, name: str, *, tags: dict[str, str],
                   params: dict[str, Any], metrics: dict[str, float], inputs: Sequence[PartInput] = ()) -> str:
        """A finished child run holding already-measured results (one ablation row) and the data parts it used."""
        run = self.client.create_run(experiment_id, run_name=name, tags={MLFLOW_PARENT_RUN_ID: parent_id, **tags})
        self._log(run.info.run_id, params=params, metrics=metrics)
        self.log_inputs(run.info.run_id, inputs)
        self.client.set_terminated(run.info.run_id, status="FINISHED")
        return run.info.run_id

    def finish_trial(self, run_id: str, *, params: dict[str, Any], metrics: dict[str, float],
                     tags: dict[str, str], record: dict[str, Any]) -> None:
        self._log(run_id, params=params, metrics=metrics, tags=tags)
        self.log_json(run_id, record, "trial.json")
        self.client.set_terminated(run_id, status="FINISHED")

    def fail_trial(self, run_id: str, reason: str, status: str = "FAILED") -> None:
        self.client.set_tag(run_id, "failure_reason", reason[:5000])
        self.client.set_terminated(run_id, status=status)

    def end_study(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self._log(run_id, tags=tags)

    def log_inputs(self, run_id: str, inputs: Sequence[PartInput]) -> None:
        """Each part of the split as an MLflow dataset input (name, digest, source, and its context: training,
        validation or test), so the runs table's Dataset column shows it and ``dataset.name``,
        ``dataset.digest`` and ``dataset.context`` filter on it."""
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        self.client.log_inputs(run_id, [
            DatasetInput(self._dataset(part), tags=[InputTag(MLFLOW_DATASET_CONTEXT, part.context)])
            for part in inputs])

    def _dataset(self, part: PartInput):
        """The part as an ``mlflow.entities.Dataset`` (built once per tracker: its schema is inferred)."""
        import mlflow.data
        import pandas as pd

        key = (part.origin.source, part.digest, part.origin.name)
        if key not in self._datasets:
            frame = pd.DataFrame({"text": list(part.texts), "label": list(part.labels)})
            with warnings.catch_warnings():  # MLflow registers its local source for "" and "file:" and says so
                warnings.filterwarnings("ignore", "The specified dataset source can be interpreted in multiple ways")
                dataset = mlflow.data.from_pandas(frame, source=dataset_source(part.origin), targets="label",
                                                  name=part.origin.name, digest=part.digest[:DIGEST_CHARS])
            self._datasets[key] = dataset._to_mlflow_entity()
        return self._datasets[key]

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        self._log(run_id, metrics=metrics)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def run_metrics(self, run_id: str) -> dict[str, float]:
        """The latest value of each metric of a run."""
        return dict(self.client.get_run(run_id).data.metrics)

    def log_artifacts(self, run_id: str, directory: Path, artifact_path: str) -> None:
        self.client.log_artifacts(run_id, str(directory), artifact_path)

    def delete_artifacts(self, run_id: str, artifact_path: str) -> bool:
        """Remove a run's artifacts under ``artifact_path``; False if there were none."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        if not self.client.list_artifacts(run_id, artifact_path):
            return False
        run = self.client.get_run(run_id)
        get_artifact_repository(run.info.artifact_uri).delete_artifacts(artifact_path)
        return True

    def log_json(self, run_id: str, data: Any, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(json.dumps(data, indent=2, default=str, ensure_ascii=False))
            self.client.log_artifact(run_id, str(path))

    def run_status(self, run_id: str) -> str | None:
        try:
            return self.client.get_run(run_id).info.status
        except Exception:
            return None

    def trial_runs(self, experiment_id: str, study_name: str) -> list:
        return self.client.search_runs([experiment_id], filter_string=(
            f"tags.{ROLE} = 'trial' and tags.`{STUDY_TAG}` = '{study_name}'"), max_results=50000)

    def _log(self, run_id: str, *, params: dict | None = None, metrics: dict | None = None,
             tags: dict | None = None) -> None:
        import time

        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
            params=[Param(k, str(v)) for k, v in (params or {}).items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])


def dataset_source(origin: Origin):
    """The MLflow dataset source of a part's origin: a hub dataset (id, config, split), a local file or
    folder, or the built-in demo corpus (code)."""
    if origin.kind == "hub":
        from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource

        return HuggingFaceDatasetSource(path=origin.source, config_name=origin.config, split=origin.split)
    if origin.kind == "demo":
        from mlflow.data.code_dataset_source import CodeDatasetSource

        return CodeDatasetSource({"description": origin.source})
    return str(Path(origin.source).resolve())


def experiment_location(tracking_uri: str, name: str) -> tuple[str, str] | None:
    """Experiment ``name``'s id and artifact location in the store, or None if there is none (reads only:
    unlike ``Tracker``, it creates no folder for a SQLite store)."""
    found = MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(name)
    return None if found is None else (found.experiment_id, found.artifact_location)
