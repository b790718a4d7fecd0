"""The ablation objective: the paper's technique grid per teacher, each cell a pinned trial, tracked in MLflow."""

from __future__ import annotations

import shutil
from contextlib import closing
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import optuna

from objectives.baseline import run_baseline
from objectives.measure import machine_facts
from objectives.student_cache import StudentCache, student_cache
from objectives.trial import check_space, objective, servable_space
from search_spaces import SearchSpace, load_space
from study.core.config import StudyConfig, study_split
from study.core.devices import device_facts, worker_device
from objectives.context import TrialContext
from study.core.errors import UserError, space_errors
from study.core.models import ModelSpec, build_model, check_loadable, load_label_map, resolve_model
from study.reporting.progress import say
from study.orchestration.prepare import data_lines, resolve_data
from study.orchestration.reference import measure_reference
from study.orchestration.scratch import scratch_dir
from study.reporting.stores import check_reachable
from study.core.teacher import TeacherPlan, plan_teacher, prepare_teacher, scratch_tokenizer
from study.reporting.tracking import Tracker

DEFAULT_TEACHERS = ("scratch-base", "scratch-large")
DEFAULT_STUDENTS = ("scratch-medium", "scratch-small", "scratch-mini", "scratch-tiny")


@dataclass(frozen=True)
class AblationSettings:
    """What the grid pins: KD settings (or the pareto study to take them from), pruning and quantization."""

    teachers: tuple[str, ...] = DEFAULT_TEACHERS
    students: tuple[str, ...] = DEFAULT_STUDENTS
    repeats: int = 1
    temperature: float = 4.0
    kd_lambda: float = 0.5
    from_study: str | None = None
    prune_kind: str = "l1_unstructured"  # the paper's unstructured magnitude pruning
    prune_ratio: float = 0.5  # the paper's reported ratio
    quant_scheme: str = "onnx_static_int8"  # the paper's post-training static int8
    calibration: str = "minmax"  # static int8 calibration method
    reference: Path | None = None
    out: Path | None = None

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise UserError(f"--repeats must be at least 1, got {self.repeats}")
        if not self.teachers or not self.students:
            raise UserError("the ablation needs at least one teacher and one student")


@dataclass(frozen=True)
class Cell:
    """One row of the grid: a technique applied for one teacher (student None: the teacher itself)."""

    teacher: str
    technique: str
    student: str | None
    prune: bool
    quant: bool

    @property
    def model(self) -> str:
        return self.student or self.teacher


def grid(teachers: tuple[str, ...], students: tuple[str, ...], smallest: str) -> list[Cell]:
    """The paper's grid (Tables 5-7): per teacher the teacher row and 10 compressed rows."""
    cells = []
    for t in teachers:
        cells.append(Cell(t, "teacher", None, False, False))
        cells += [Cell(t, "distil", s, False, False) for s in students]
        cells += [Cell(t, "prune", None, True, False), Cell(t, "quant", None, False, True),
                  Cell(t, "prune+quant", None, True, True),
                  Cell(t, "distil+prune", smallest, True, False), Cell(t, "distil+quant", smallest, False, True),
                  Cell(t, "distil+prune+quant", smallest, True, True)]
    return cells


def parameter_count(spec: ModelSpec, labels: tuple[str, ...], vocab_size: int) -> int:
    """Parameters of a student before training (to find the smallest one)."""
    if spec.from_scratch:
        return sum(p.numel() for p in build_model(spec, labels, vocab_size=vocab_size, seed=0).parameters())
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(spec.source, num_labels=len(labels))
    return sum(p.numel() for p in AutoModelForSequenceClassification.from_config(config).parameters())


def kd_from_study(storage: str, study_name: str, teacher: str) -> tuple[float, float]:
    """T and lambda of the best-macro-F1 Pareto-optimal trial of the teacher's pair studies."""
    from study.reporting.front import completed, pair_studies, pareto_trials

    names = [n for n in pair_studies(storage, study_name) if n.startswith(f"{study_name}.{teacher}.")]
    trials = [t for n in names for t in completed(optuna.load_study(study_name=n, storage=storage))]
    front = pareto_trials(trials)
    if not front:
        raise UserError(f"--from-study {study_name}: no completed trials with teacher {teacher!r} in {storage}")
    best = max(front, key=lambda t: t.values[0])
    return float(best.params["temperature"]), float(best.params["kd_lambda"])


def run_ablation(cfg: StudyConfig, ab: AblationSettings) -> list[dict]:
    """Run the grid (x repeats) and the baseline; log every row as an MLflow run; write the report."""
    from study.reporting.ablation_report import write_report

    teachers, students, space, corpus, base_split, teacher_plans = _checked_inputs(cfg, ab)
    kd = _kd_per_teacher(cfg, ab, teachers)
    tracker = Tracker(cfg.tracking_uri)
    tracker.check()
    smallest = _smallest_student(students, base_split, corpus.label_names, cfg.cache_dir)
    cells = grid(tuple(t.name for t in teachers), tuple(s.name for s in students), smallest)
    device = worker_device(cfg.device)
    plan = _Plan(teachers, students, space, kd, tuple(cells), teacher_plans, device,
                 student_cache(cfg.cache_dir, cfg.distill_cache_gb))
    say(f"[ablation] {len(cells)} grid rows x {ab.repeats} repeat(s) + the TF-IDF baseline; smallest student "
        f"{smallest}; KD (T, lambda) per teacher {kd}; pruning {ab.prune_kind} {ab.prune_ratio}; "
        f"quantization {ab.quant_scheme}")
    experiment_id = tracker.experiment(cfg.study_name)
    parent = tracker.create_run(experiment_id, f"{cfg.study_name} ablation", tags={
        "role": "ablation_study", "teachers": ",".join(ab.teachers), "students": ",".join(ab.students),
        **device_facts(device), **{f"machine.{k}": v for k, v in machine_facts().items()}})
    rows = _Rows(tracker, experiment_id, parent)
    status = "FAILED"
    workdir = scratch_dir("ablation-")
    try:
        for repeat in range(ab.repeats):
            _run_repeat(cfg, ab, plan, repeat, corpus, rows, workdir)
        files = write_report(rows.rows, rows.predictions, corpus.label_names, base_split.test.labels, cfg, ab,
                             tracker, ab.out)
        for path in files:
            tracker.log_artifact(parent, path, "report")
            if ab.out is not None:
                say(f"[ablation] wrote {path}")
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.end_study(parent, status)
        shutil.rmtree(workdir, ignore_errors=True)
    return rows.rows


def _checked_inputs(cfg: StudyConfig, ab: AblationSettings):
    """Everything the ablation reads, checked before anything is written (UserError otherwise): the teachers and
    students, the search space (pinned to the grid's techniques, servable here), the data and its study split, and
    each teacher's plan (fine-tuned here or used as it is)."""
    teachers = tuple(resolve_model(t) for t in ab.teachers)
    students = tuple(resolve_model(s) for s in ab.students)
    derived = [s.name for s in students if s.from_teacher]
    if derived:
        raise UserError(f"--students {','.join(derived)}: the ablation distils every teacher into the same students, "
                        "so students made of a teacher's own layers are for the pareto objective only")
    with space_errors():
        space = load_space(cfg.space)
        check_space(space.pinned(prune_kind=ab.prune_kind, quant_scheme=ab.quant_scheme))
        servable_space(space.pinned(quant_scheme=ab.quant_scheme))  # exits 2 if this machine cannot serve it
    for spec in (*teachers, *students):
        check_loadable(spec)
    corpus = resolve_data(cfg)
    base_split = study_split(corpus, cfg)
    for line in data_lines(corpus, base_split):
        say(line)
    label_map = load_label_map(cfg.label_map) if cfg.label_map else None  # for the checkpoint teachers
    plans = {t.name: plan_teacher(t, corpus.label_names, cfg.teacher_finetune, None if t.from_scratch else label_map)
             for t in teachers}
    if ab.reference is not None and not ab.reference.exists():
        raise UserError(f"--reference {ab.reference} does not exist")
    check_reachable(cfg.tracking_uri, "MLflow tracking URI")
    return teachers, students, space, corpus, base_split, plans


def _kd_per_teacher(cfg: StudyConfig, ab: AblationSettings,
                    teachers: tuple[ModelSpec, ...]) -> dict[str, tuple[float, float]]:
    """(T, lambda) per teacher: the settings' own, or those of the best trial of ``--from-study``."""
    if not ab.from_study:
        return {t.name: (ab.temperature, ab.kd_lambda) for t in teachers}
    check_reachable(cfg.storage, "Optuna storage")
    return {t.name: kd_from_study(cfg.storage, ab.from_study, t.name) for t in teachers}


def _smallest_student(students: tuple[ModelSpec, ...], split, labels: tuple[str, ...], cache_dir: Path) -> str:
    """The name of the student with the fewest parameters (the distil+prune/quant rows use it)."""
    tok_dir = scratch_tokenizer(split, cache_dir) if any(s.from_scratch for s in students) else None
    vocab = 8000
    if tok_dir is not None:
        from transformers import AutoTokenizer

        vocab = len(AutoTokenizer.from_pretrained(str(tok_dir)))
    return min(students, key=lambda s: parameter_count(s, labels, vocab)).name


@dataclass
class _Rows:
    """The rows so far (each also a finished MLflow run under the ablation's parent run) and their test
    predictions, keyed (repeat, teacher, technique, model), for the report."""

    tracker: Tracker
    experiment_id: str
    parent: str
    rows: list[dict] = field(default_factory=list)
    predictions: dict[tuple, np.ndarray] = field(default_factory=dict)

    def add(self, facts, inputs, repeat: int, seed: int, technique: str, model: str, cell: Cell | None,
            metrics: dict[str, float], params: dict, tags: dict[str, str] | None = None) -> None:
        self.rows.append(_log_row(self.tracker, self.experiment_id, self.parent, facts, inputs, repeat, seed,
                                  technique, model, cell, metrics, params, tags))


@dataclass(frozen=True)
class _Plan:
    """The grid as checked: the models, the search space the cells pin, (T, lambda) per teacher, the cells."""

    teachers: tuple[ModelSpec, ...]
    students: tuple[ModelSpec, ...]
    space: SearchSpace
    kd: dict[str, tuple[float, float]]
    cells: tuple[Cell, ...]
    teacher_plans: dict[str, TeacherPlan]  # by teacher name: fine-tuned here or used as it is
    device: str  # where teachers and students train
    student_cache: StudentCache | None  # a student's rows share one distillation (None: --distill-cache-gb 0)


def _run_repeat(cfg: StudyConfig, ab: AblationSettings, plan: _Plan, repeat: int, corpus, rows: _Rows,
                workdir: Path) -> None:
    """One repeat: a fresh split (seed + repeat), the TF-IDF baseline, then every teacher's cells."""
    students = plan.students
    seed = cfg.seed + repeat
    split = study_split(corpus, cfg, seed)
    facts = MappingProxyType(split.facts(corpus))
    row_facts = {**facts, **device_facts(plan.device)}  # every row's params: its data and where it trained
    inputs = split.inputs(corpus)
    tok_dir = scratch_tokenizer(split, cfg.cache_dir) if any(s.from_scratch for s in students) else None
    baseline = run_baseline(split, cfg.measure, seed)
    rows.add(row_facts, inputs, repeat, seed, "baseline", "TF-IDF+LR", None,
             {"macro_f1": baseline.macro_f1, "accuracy": baseline.accuracy, **baseline.speed.as_metrics(),
              "latency_e2e_ms": baseline.speed.latency_ms,  # it takes raw text: its latency is end to end
              "macro_f1_validation": baseline.macro_f1_validation,
              "size_mb": baseline.size_bytes / 1e6}, {})
    for tspec in plan.teachers:
        teacher = prepare_teacher(tspec, split, cfg.train, cfg.cache_dir, seed, log=say, progress=not cfg.quiet,
                                  plan=plan.teacher_plans[tspec.name], device=plan.device)
        # every row timed from its bundle in a separate process, paired with this fp32 teacher; Δ F1
        # against the teacher the students learn from (with its TF-IDF member, if it has one)
        ref, timer = measure_reference(teacher, split, cfg, workdir / f"reference-{tspec.name}-{repeat}")
        with closing(timer):
            for cell in (c for c in plan.cells if c.teacher == tspec.name):
                t, lam = plan.kd[tspec.name]
                with space_errors():
                    pinned = plan.space.pinned(temperature=t, kd_lambda=lam, prune_kind=ab.prune_kind,
                                          prune_ratio=ab.prune_ratio if cell.prune else 0.0,
                                          quant_scheme=ab.quant_scheme if cell.quant else "none",
                                          calibration=ab.calibration)
                student = next((s for s in students if s.name == cell.student), None)
                ctx = TrialContext(study_name=f"{cfg.study_name}.ablation", split=split, teacher=teacher,
                                   student=student, scratch_tokenizer_dir=tok_dir, space=pinned, train=cfg.train,
                                   measure=cfg.measure, seed=seed, workdir=workdir, data_facts=facts,
                                   show_progress=not cfg.quiet, teacher_test_predictions=ref.test_predictions,
                                   timer=timer, device=plan.device, student_cache=plan.student_cache)
                _run_cell(cell, ctx, ref.metrics, rows, row_facts, inputs, repeat, seed,
                          {"teacher_finetuned_here": str(teacher.finetuned_here).lower()})


def _run_cell(cell: Cell, ctx: TrialContext, reference: dict[str, float], rows: _Rows, facts, inputs, repeat: int,
              seed: int, tags: dict[str, str]) -> None:
    """One grid row: the trial with every parameter pinned, its metrics next to the paired teacher's."""
    began = time.perf_counter()
    outcome = objective(optuna.trial.FixedTrial({}), ctx)
    shutil.rmtree(ctx.trial_dir(0), ignore_errors=True)
    metrics = dict(outcome.metrics)
    metrics["speedup"] = metrics["speedup_vs_teacher"]  # paired in the timing process
    metrics["compression_ratio"] = reference["teacher_size_mb"] / metrics["size_mb"]
    metrics["macro_f1_delta"] = metrics["macro_f1_delta_vs_teacher"]  # paired, with its interval
    metrics["teacher_macro_f1"] = reference["teacher_macro_f1"]
    rows.add(facts, inputs, repeat, seed, cell.technique, cell.model, cell, metrics, outcome.params, tags)
    rows.predictions[(repeat, cell.teacher, cell.technique, cell.model)] = outcome.predictions
    say(f"[ablation] repeat {repeat} {cell.teacher:>14} {cell.technique:<19} {cell.model:<15} "
        f"macro-F1 {metrics['macro_f1']:.4f}  {metrics['latency_ms']:.3f} ms  "
        f"speedup {metrics['speedup']:.2f}x  {metrics['size_mb']:.2f} MB  "
        f"({time.perf_counter() - began:.0f}s)")


def _log_row(tracker: Tracker, experiment_id: str, parent: str, facts, inputs, repeat: int, seed: int, technique: str,
             model: str, cell: Cell | None, metrics: dict[str, float], params: dict,
             tags: dict[str, str] | None = None) -> dict:
    """One finished MLflow run per grid row (tags role=ablation, technique=...)."""
    teacher = cell.teacher if cell else ""
    run_params = {"teacher": teacher, "student": (cell.student or "") if cell else "", "technique": technique,
                  "seed": str(seed), "repeat": str(repeat), **dict(facts)}
    for key in ("temperature", "kd_lambda", "prune_kind", "prune_ratio", "quant_scheme"):
        if key in params:
            run_params[key] = params[key]
    run_id = tracker.record_run(experiment_id, parent, f"{teacher or 'baseline'} {technique} {model} r{repeat}",
                                tags={"role": "ablation", "technique": technique, "teacher": teacher, "model": model,
                                      "repeat": str(repeat), **(tags or {})}, params=run_params, metrics=metrics,
                                inputs=inputs)
    return {"repeat": repeat, "seed": seed, "teacher": teacher, "technique": technique, "model": model,
            "student": (cell.student or "") if cell else "", "run_id": run_id, **metrics}
