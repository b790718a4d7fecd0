"""Inputs checked and stores opened before anything is written: data, models, space, stores, and a resumed
study's recorded settings."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from types import MappingProxyType

import optuna

from objectives.measure import machine_facts
from objectives.trial import DIRECTIONS, OBJECTIVES, check_space, servable_space
from search_spaces import SearchSpace, load_space
from study.core.config import StudyConfig, study_split
from study.core.data import Corpus, DataSplit
from study.core.sources import load_data
from study.core.errors import UserError, space_errors
from study.reporting.progress import say
from study.reporting.stores import check_reachable
from study.core.models import (ModelSpec, check_loadable, check_student_fits, head_match, load_label_map, resolve_model,
                               tokenizer_mismatch)
from study.core.teacher import TeacherPlan, plan_teacher, teacher_identity
from study.reporting.callbacks import stale_trial_handler
from study.reporting.tracking import Tracker, ensure_sqlite_parent


@dataclass(frozen=True)
class Prepared:
    """Inputs validated before anything is written: nothing below creates a study on bad input."""

    cfg: StudyConfig
    corpus: Corpus
    split: DataSplit
    teacher: ModelSpec
    students: tuple[ModelSpec, ...]
    space: SearchSpace
    storage: optuna.storages.BaseStorage
    tracker: Tracker
    teacher_identity: str  # what the students learn from (see study.core.teacher.teacher_identity)
    dropped_schemes: MappingProxyType  # quantization schemes this machine cannot serve -> why (not searched)
    teacher_plan: TeacherPlan  # fine-tuned here or used as it is, and its head
    pair_tags: MappingProxyType  # student name -> tags of its pair's runs (see model_facts)
    notes: tuple[str, ...]  # lines on the teacher, heads and tokenizers, printed when the study starts


def pair_study_name(cfg: StudyConfig, teacher: ModelSpec, student: ModelSpec) -> str:
    return f"{cfg.study_name}.{teacher.name}.{student.name}"


def resolve_data(cfg: StudyConfig, quiet: bool = False) -> Corpus:
    """The study's corpus: every part the data flags name, read and cleaned (the demo corpus without --data)."""
    corpus = load_data(cfg.data_spec)
    if cfg.data is None and not quiet:
        say("=" * 78)
        say("NOTE: no --data given (and STUDY_DATA is unset): running on the small built-in SYNTHETIC demo")
        say("      corpus. Its numbers say nothing about real data. To run on UBMEC instead:")
        say("      python -m study.run --objective pareto --data ../shared/data/ubmec/UBMEC.xlsx")
        say("=" * 78)
    return corpus


def data_lines(corpus: Corpus, split: DataSplit) -> list[str]:
    """What the study runs on: rows read and dropped, each part's size and where it came from, the texts that
    occurred in more than one given part (dropped from the later one), and what reading the data decided."""
    lines = [f"[data] {corpus.source}: {corpus.rows_read} rows read, {corpus.duplicates_dropped} duplicates "
             f"and {corpus.conflicting_dropped} rows of texts with conflicting labels dropped (after normalisation), "
             f"{len(corpus.texts)} kept; split train {len(split.train)} / validation {len(split.validation)} / "
             f"test {len(split.test)} (seed {split.seed})"]
    if corpus.given:
        where = {p: corpus.origin(p).describe() if p in corpus.given else "carved from the training part"
                 for p in ("validation", "test")}
        lines.append(f"[data] train: {corpus.origin('train').describe()}; validation: {where['validation']}; "
                     f"test: {where['test']}")
        ov = corpus.overlap
        lines.append(f"[data] overlap of the given parts (same normalised text): {ov['test_train']} test and "
                     f"{ov['validation_train']} validation texts dropped from the training part, "
                     f"{ov['test_validation']} test texts dropped from the validation part")
    return lines + [f"[data] {note}" for note in corpus.notes]


def open_storage(url: str, tracker: Tracker, heartbeat_s: int) -> optuna.storages.BaseStorage:
    """Optuna RDB storage with heartbeats: a trial whose worker died is failed after 3 missed beats."""
    ensure_sqlite_parent(url)
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        with quiet_experimental():
            return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat_s,
                                              grace_period=3 * heartbeat_s,
                                              heartbeat_stale_trial_callback=stale_trial_handler(tracker))
    except Exception as exc:
        raise UserError(f"Optuna storage {url!r} is not usable: {exc}") from None


def prepare(cfg: StudyConfig, quiet: bool = False) -> Prepared:
    """Check every input (data, models, space, stores) so that bad input fails before any write."""
    teacher = resolve_model(cfg.teacher)
    students = tuple(resolve_model(s) for s in cfg.students)
    with space_errors():
        space = load_space(cfg.space)
    check_space(space)
    space, dropped = servable_space(space)
    corpus = resolve_data(cfg, quiet)
    split = study_split(corpus, cfg)
    for spec in (teacher, *students):
        check_loadable(spec)
    for student in students:
        check_student_fits(teacher, student)
    plan = plan_teacher(teacher, split.label_names, cfg.teacher_finetune,
                        load_label_map(cfg.label_map) if cfg.label_map else None)
    pair_tags, notes = model_facts(plan, students, split)
    check_reachable(cfg.storage, "Optuna storage")
    check_reachable(cfg.tracking_uri, "MLflow tracking URI")
    tracker = Tracker(cfg.tracking_uri)
    tracker.check()
    storage = open_storage(cfg.storage, tracker, cfg.heartbeat_s)
    identity = teacher_identity(teacher, split, cfg.train, cfg.seed, plan)
    for student in students:
        name = pair_study_name(cfg, teacher, student)
        try:
            existing = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            continue
        recorded = existing.user_attrs.get("data_sha256")
        if recorded and recorded != corpus.sha256:
            raise UserError(f"study {name!r} in {cfg.storage} was run on other data (sha256 {recorded[:12]}…, "
                            f"now {corpus.sha256[:12]}…); use another --study-name")
        if (tuple(d.name.lower() for d in existing.directions) != DIRECTIONS
                or existing.user_attrs.get("objectives", list(OBJECTIVES)) != list(OBJECTIVES)):
            raise UserError(f"study {name!r} in {cfg.storage} has other objectives; use another --study-name")
        sampler = existing.user_attrs.get("sampler")
        if sampler and sampler != cfg.sampler:
            raise UserError(f"study {name!r} was run with --sampler {sampler}; resume it with the same sampler "
                            f"(got --sampler {cfg.sampler}) or use another --study-name")
        space, dropped = keep_stored_space(name, existing, space, dropped)
        check_timing_footing(name, existing, timing_footing(cfg))
        recorded = existing.user_attrs.get("teacher_identity")
        if recorded and recorded != identity:
            raise UserError(f"study {name!r} was run with another teacher ({recorded}; now {identity}): its "
                            "trials learnt from a teacher trained or blended differently (--quick, "
                            "--teacher-baseline-kd, --teacher-tfidf-weight or other training settings); resume "
                            "it with the same settings or use another --study-name")
    return Prepared(cfg, corpus, split, teacher, students, space, storage, tracker, identity,
                    MappingProxyType(dropped), plan, MappingProxyType(pair_tags), tuple(notes))


TOKENIZER_SAMPLE = 50  # training texts two checkpoints' tokenizers must split alike to count as one tokenizer


def model_facts(plan: TeacherPlan, students: tuple[ModelSpec, ...],
                split: DataSplit) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Each pair's run tags on its models (``teacher_finetuned_here``, ``teacher_head``, ``student_head``: kept,
    reordered, reinitialised or new; ``tokenizer_mismatch``) and the lines that say the same when the study starts."""
    labels = split.label_names
    notes = [f"[teacher] {plan.why}"]
    tags = {}
    for student in students:
        if student.source is None:  # scratch: all new; teacher-lN: the teacher's own head, in the corpus's order
            head = "kept" if student.from_teacher else "new"
        else:
            match = head_match(student, labels)
            head = match.state
            if head in ("reinitialised", "new"):
                notes.append(f"[student] {student.name} ({student.source}) has {match.describe()}: its head is "
                             f"{'re-initialised' if head == 'reinitialised' else 'new'} for the corpus's "
                             f"{len(labels)} labels ({', '.join(labels)})")
        mismatch = tokenizer_mismatch(plan.spec, student, split.train.texts[:TOKENIZER_SAMPLE])
        if mismatch:
            notes.append(f"[student] {student.name} tokenises differently from teacher {plan.spec.name} ({mismatch}); "
                         "allowed: KD here matches the teacher's logits per text, not per token")
        tags[student.name] = {"teacher_finetuned_here": str(plan.finetune).lower(), "teacher_head": plan.head,
                              "student_head": head, "tokenizer_mismatch": str(mismatch is not None).lower()}
    return tags, notes


def timing_footing(cfg: StudyConfig) -> dict[str, str]:
    """What a latency ratio to the teacher still depends on besides the two models: the CPU (int8 kernels gain
    more on some), the threads and the padding. A study's trials compare only on one footing."""
    return {"cpu": machine_facts()["cpu"], "threads": str(cfg.measure.threads),
            "fixed_length": str(cfg.measure.fixed_length)}


def check_timing_footing(name: str, existing: optuna.Study, footing: dict[str, str]) -> None:
    """The latency objective is relative to the teacher timed side by side, which cancels a machine's load but
    not its kind: the ratio moves with the CPU model, --threads and --fixed-length. So a study resumes only on
    the footing it was started with (otherwise its trials' latency ratios would not compare)."""
    recorded = existing.user_attrs.get("timing_footing")
    if not recorded:
        return
    flags = {"cpu": "CPU model", "threads": "--threads", "fixed_length": "--fixed-length"}
    changed = [f"{flags[k]} {recorded[k]!r} (now {footing[k]!r})" for k in flags if recorded.get(k) != footing[k]]
    if changed:
        raise UserError(f"study {name!r} was timed with {'; '.join(changed)}: its latency objective is a ratio to "
                        "the teacher, and that ratio depends on the CPU, the threads and the padding, so trials "
                        "timed otherwise would not compare; resume it as it was started or use another --study-name")


def keep_stored_space(name: str, existing: optuna.Study, space: SearchSpace,
                      dropped: dict[str, str]) -> tuple[SearchSpace, dict[str, str]]:
    """A resumed study keeps the quantization schemes it was started with (Optuna's categorical distributions
    cannot change): schemes it dropped stay dropped here, and a scheme it searches that this machine cannot
    serve refuses the resume."""
    recorded = existing.user_attrs.get("dropped_schemes")
    if recorded is None:
        recorded = {} if existing.trials else dict(dropped)
    cannot = sorted(set(dropped) - set(recorded))
    if cannot:
        raise UserError(f"study {name!r} searches quant_scheme {', '.join(cannot)}, which this machine cannot serve "
                        f"({dropped[cannot[0]]}); resume it on a machine that can, or use another --study-name")
    extra = {k: v for k, v in recorded.items() if k not in dropped}
    if extra:
        with space_errors():
            space = space.without_choices("quant_scheme", set(extra))
        dropped = {**dropped, **extra}
    return space, dropped


class quiet_experimental(warnings.catch_warnings):
    def __enter__(self):
        out = super().__enter__()
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return out
