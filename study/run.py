"""Command line: ``python -m study.run --objective pareto ...`` parses flags and calls the runner."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from study.core.config import (KEEP_MODELS, DEFAULT_STORAGE, DEFAULT_STUDENTS, DEFAULT_TEACHER, DEFAULT_TRACKING_URI, SAMPLERS,
                          SCRATCH_BASELINE_KD, TEACHER_FINETUNE, MeasureSettings, StudyConfig, TrainSettings, quick_overrides,
                          add_variants_flag)
from study.core.budgets import add_budget_flags, budgets_from_args
from study.core.devices import DEVICES, resolve_device
from study.core.errors import EXIT_USER_ERROR, UserError
from study.core.libraries import quiet_libraries

MODES = ("pareto", "report", "ablation")


# Over 50 lines on purpose: one add_argument per flag, in --help order; a flat list is the easiest to scan.
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m study.run",
        description="Search compression settings of BERT text classifiers: one Optuna multi-objective study "
                    "(macro-F1 up, latency down, size down) per teacher/student pair, every trial an MLflow run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--objective", choices=MODES, default="pareto",
                   help="what to run: 'pareto' searches KD temperature/lambda, pruning and quantization; "
                        "'report' regenerates the figures of an existing study (--study-name) into --out; "
                        "'ablation' runs the paper's technique grid per teacher and writes its report to --out")
    p.add_argument("--out", type=Path, default=None, help="report/ablation objectives: folder for the report "
                                                          "files (they are logged to MLflow either way)")
    ab = p.add_argument_group("ablation objective")
    ab.add_argument("--teachers", default="scratch-base,scratch-large", help="comma-separated teachers")
    ab.add_argument("--repeats", type=int, default=1, help="seeds per cell (mean +- std reported)")
    ab.add_argument("--reference", type=Path, default=None,
                    help="a reference table (e.g. ../shared/reference/paper_tables.csv) shown in its own columns "
                         "(ablation), or whose best points the front's are set beside (report: front_vs_reference.md)")
    ab.add_argument("--from-study", default=None, help="take KD T and lambda from this pareto study's best trial")
    ab.add_argument("--temperature", type=float, default=4.0, help="KD temperature when not --from-study")
    ab.add_argument("--kd-lambda", type=float, default=0.5, help="KD weight when not --from-study")
    ab.add_argument("--prune-kind", default="l1_unstructured", help="pruning kind of the prune rows")
    ab.add_argument("--prune-ratio", type=float, default=0.5, help="pruning ratio of the prune rows (paper: 0.5)")
    ab.add_argument("--quant-scheme", default="onnx_static_int8", help="scheme of the quant rows (paper: static int8)")
    p.add_argument("--data", default=None,
                   help="labelled corpus: a file (.xlsx/.csv/.tsv/.jsonl/.parquet), a folder written by "
                        "Dataset/DatasetDict.save_to_disk, or a Hugging Face dataset id (org/name; offline, its "
                        "local cache); default: $STUDY_DATA, else a small synthetic demo corpus (docs/data.md)")
    p.add_argument("--data-config", default=None, help="the config of a hub dataset --data")
    p.add_argument("--data-split", default=None,
                   help="the split of a --data dataset to train on (default: train, or its only split)")
    p.add_argument("--validation-data", default=None,
                   help="the validation part: a file (or a saved Dataset folder) or a split of the --data dataset; "
                        "default: the dataset's own validation split, else carved from the training part "
                        "(--validation-size)")
    p.add_argument("--test-data", default=None,
                   help="the test part: a file (or a saved Dataset folder) or a split of the --data dataset; default: "
                        "the dataset's own labelled test split, else carved from the training part (30%%); training "
                        "texts that are also validation or test texts are dropped from training and counted")
    p.add_argument("--text-col", default=None, help="text column (default: found by name, e.g. 'text')")
    p.add_argument("--label-col", default=None, help="label column (default: found by name, e.g. 'classes')")
    p.add_argument("--teacher", default=DEFAULT_TEACHER,
                   help="teacher: a zoo name (scratch-base, scratch-large), a paper preset (banglabert, "
                        "banglabert-sagor, mbert, bert), minilm-l6, a local model folder or a Hugging Face hub id; "
                        "a checkpoint already fine-tuned on the corpus's labels is used as it is (docs/teachers.md)")
    p.add_argument("--teacher-finetune", choices=TEACHER_FINETUNE, default=StudyConfig.teacher_finetune,
                   help="auto: fine-tune the teacher here unless it is a checkpoint whose classification head has the "
                        "corpus's labels (config.id2label names, or --label-map), which is used as it is; yes: always "
                        "fine-tune; no: never (a teacher whose head does not fit exits 2, naming the missing labels)")
    p.add_argument("--label-map", type=Path, default=None, metavar="FILE",
                   help="JSON or YAML file {checkpoint label: corpus label} for a fine-tuned teacher whose head names "
                        "the labels otherwise; labels it does not name keep their own")
    p.add_argument("--students", default=None,
                   help="comma-separated students (zoo: scratch-medium, scratch-small, scratch-mini, scratch-tiny; "
                        "teacher-lN: N of the teacher's own layers; presets: distilbert, distil-mbert, tinybert, "
                        "bert-tiny; or folders/hub ids); default "
                        f"{','.join(DEFAULT_STUDENTS)} for pareto, all four zoo students for the ablation")
    p.add_argument("--n-trials", type=int, default=20,
                   help="completed trials each pair study should hold; re-running resumes up to this total")
    p.add_argument("--timeout", type=float, default=None, help="stop starting new trials after this many "
                                                                "seconds (per pair study)")
    p.add_argument("--study-name", default="compression",
                   help="MLflow experiment name; pair studies are named <study-name>.<teacher>.<student>")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="Optuna storage URL")
    p.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI,
                   help="MLflow tracking URI (a sqlite store keeps artifacts in artifacts/ beside the database)")
    p.add_argument("--seed", type=int, default=42, help="base seed: data split, teacher, sampler, distillation; "
                                                        "trial seed (pruning, quantization, bootstrap) = seed + "
                                                        "trial number")
    p.add_argument("--sampler-seed", type=int, default=None,
                   help="the sampler's base seed instead of --seed: search again with other draws on the same "
                        "split, teacher and distillation seed (the cached teacher and students are reused)")
    p.add_argument("--sampler", choices=SAMPLERS, default=StudyConfig.sampler,
                   help="Optuna sampler: multi-objective TPE (5 random start-up trials), NSGA-II (population 10) or random")
    p.add_argument("--validation-size", type=float, default=StudyConfig.validation_size,
                   help="fraction of the training part held out as validation texts: early stopping, the teacher's "
                        "TF-IDF member weight and every choice of the search (its macro-F1 objective, the Pareto "
                        "tags, picks) are made on them; test texts are only reported")
    p.add_argument("--space", default="default", help="search space: a name in search_spaces/ or a YAML path")
    p.add_argument("--threads", type=int, default=MeasureSettings.threads,
                   help="intra-op threads of the serving runtime while timing latency and throughput")
    p.add_argument("--fixed-length", type=int, default=None,
                   help="time every input padded to this many tokens instead of the test texts' real lengths")
    p.add_argument("--teacher-mlm-epochs", type=int, default=None,
                   help="masked-LM pre-training epochs of a scratch teacher on the training texts before "
                        f"fine-tuning (default {TrainSettings.mlm_epochs})")
    p.add_argument("--teacher-baseline-kd", type=float, default=None, metavar="LAMBDA",
                   help="fine-tune the teacher with KD (weight LAMBDA in [0, 1], T=1) towards the TF-IDF model's "
                        "out-of-fold probabilities on the training texts; 0 turns it off (default "
                        f"{SCRATCH_BASELINE_KD} for a teacher trained from scratch, 0 for a pretrained checkpoint)")
    p.add_argument("--teacher-tfidf-weight", type=float, default=None, metavar="W",
                   help="make the teacher a two-model ensemble: its network's probabilities averaged with the "
                        "TF-IDF model's (weight W in [0, 1]); students learn from the ensemble, trials compress and "
                        "time the network; 0 turns it off (default: W chosen on validation macro-F1 for a teacher "
                        "trained from scratch, 0 for a pretrained checkpoint)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where trained teachers, their logits and distilled students are cached (default: "
                        "$STUDY_CACHE_DIR or ~/.cache/bert-compress-study)")
    p.add_argument("--distill-cache-gb", type=float, default=StudyConfig.distill_cache_gb,
                   help="size bound of the distilled students kept under --cache-dir/students for later trials, "
                        "studies and workers (least recently used removed first); 0: no cache, every trial distils")
    add_variants_flag(p)
    p.add_argument("--keep-models", choices=KEEP_MODELS, default="pareto",
                   help="which trials keep their model bundle as an MLflow artifact: pareto (dominated trials' "
                        "models are deleted when the study ends; metrics stay), all, or none")
    p.add_argument("--device", choices=DEVICES, default=StudyConfig.device,
                   help="where teacher fine-tuning, masked-LM pre-training, distillation and teacher logits run: "
                        "auto takes a CUDA GPU (bf16 autocast where supported), else Apple MPS, else the CPU; "
                        "with --workers N each worker takes its own visible GPU (CUDA_VISIBLE_DEVICES respected). "
                        "Models are pruned, quantized, exported and timed on the CPU either way")
    p.add_argument("--workers", type=int, default=1,
                   help="processes on this machine sharing each pair study (for several machines, start the same "
                        "command on each, pointed at one PostgreSQL --storage and one --tracking-uri)")
    p.add_argument("--heartbeat", type=int, default=20,
                   help="seconds between a running trial's heartbeats; a trial silent for 3 beats (its worker was "
                        "killed) is marked failed, its MLflow run KILLED, and its params queued once more")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars and no per-trial lines (fronts and errors are still printed); bars "
                        "are shown only on a terminal anyway")
    p.add_argument("--quick", action="store_true",
                   help="demo/test setting: at most 3 epochs, 3000 training texts, 64 tokens, fewer timing "
                        "repeats; without it the defaults are the real thing")
    add_budget_flags(p)
    return p


def config_from_args(args: argparse.Namespace) -> StudyConfig:
    given = args.students is not None
    students = tuple(s.strip() for s in args.students.split(",") if s.strip()) if given else DEFAULT_STUDENTS
    data = args.data or os.environ.get("STUDY_DATA") or None
    cfg = StudyConfig(objective=args.objective, data=data, text_col=args.text_col, label_col=args.label_col,
                      data_config=args.data_config, data_split=args.data_split,
                      validation_data=args.validation_data, test_data=args.test_data,
                      teacher=args.teacher, teacher_finetune=args.teacher_finetune, label_map=args.label_map,
                      students=students, n_trials=args.n_trials, timeout=args.timeout,
                      study_name=args.study_name, storage=args.storage, tracking_uri=args.tracking_uri,
                      seed=args.seed, sampler_seed=args.sampler_seed, sampler=args.sampler, space=args.space, quick=args.quick,
                      heartbeat_s=args.heartbeat, workers=args.workers, validation_size=args.validation_size,
                      keep_models=args.keep_models, quiet=args.quiet, budgets=budgets_from_args(args),
                      device=resolve_device(args.device),
                      distill_cache_gb=args.distill_cache_gb, variants_per_distillation=args.variants_per_distillation,
                      measure=MeasureSettings(threads=args.threads, fixed_length=args.fixed_length),
                      **({"cache_dir": args.cache_dir} if args.cache_dir else {}))
    cfg = quick_overrides(cfg) if cfg.quick else cfg
    if args.sampler_seed is not None and args.sampler_seed < 0:
        raise UserError(f"--sampler-seed must be 0 or more, got {args.sampler_seed}")
    if args.teacher_mlm_epochs is not None:
        if args.teacher_mlm_epochs < 0:
            raise UserError(f"--teacher-mlm-epochs must be 0 or more, got {args.teacher_mlm_epochs}")
        cfg = replace(cfg, train=replace(cfg.train, mlm_epochs=args.teacher_mlm_epochs))
    if args.teacher_baseline_kd is not None:
        if not 0.0 <= args.teacher_baseline_kd <= 1.0:
            raise UserError(f"--teacher-baseline-kd must be in [0, 1], got {args.teacher_baseline_kd}")
        cfg = replace(cfg, train=replace(cfg.train, baseline_kd_lambda=args.teacher_baseline_kd))
    if args.teacher_tfidf_weight is not None:
        if not 0.0 <= args.teacher_tfidf_weight <= 1.0:
            raise UserError(f"--teacher-tfidf-weight must be in [0, 1], got {args.teacher_tfidf_weight}")
        cfg = replace(cfg, train=replace(cfg.train, tfidf_member_weight=args.teacher_tfidf_weight))
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        quiet_libraries()
        from study.orchestration.runner import run_pareto, run_report

        if cfg.objective == "report":
            run_report(cfg, args.out, args.reference)
            return 0
        if cfg.objective == "ablation":
            from study.orchestration.ablation import DEFAULT_STUDENTS as ABLATION_STUDENTS, AblationSettings, run_ablation

            students = cfg.students if args.students is not None else ABLATION_STUDENTS
            run_ablation(cfg, AblationSettings(
                teachers=tuple(t.strip() for t in args.teachers.split(",") if t.strip()), students=students,
                repeats=args.repeats, temperature=args.temperature, kd_lambda=args.kd_lambda,
                from_study=args.from_study, prune_kind=args.prune_kind, prune_ratio=args.prune_ratio,
                quant_scheme=args.quant_scheme, reference=args.reference, out=args.out))
            return 0
        fronts = run_pareto(cfg)
        from study.reporting.progress import say
        from study.reporting.ui_links import ui_lines

        say("\n" + "\n".join(ui_lines(cfg.tracking_uri, cfg.storage, cfg.study_name)))  # printed with --quiet too
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    if cfg.budgets:  # 1: no completed trial of any pair meets the budgets (the closest was named)
        return 0 if any(fronts.values()) else 1
    return 0 if all(fronts.values()) else 1  # 1: some pair study has no completed trial


if __name__ == "__main__":
    sys.exit(main())
