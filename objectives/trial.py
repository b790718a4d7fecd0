"""One trial: distil a student, prune it, quantize it, export it, and measure the served artifact."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from objectives.bundle import write_metadata
from objectives.distill import DistillConfig, kd_loss_fn
from objectives.measure import Quality, Speed, evaluate, measure_speed
from objectives.prune import PRUNERS, PruneConfig, nonzero_parameters, prune
from objectives.quantize import SCHEMES, Servable, quantize
from search_spaces import SearchSpace, suggest
from study.config import MeasureSettings
from study.context import TrialContext
from study.data import DataSplit
from study.errors import UserError
from study.models import build_model, load_tokenizer
from study.training import encode, fit

OBJECTIVES = ("macro_f1", "latency_ms", "size_mb")
DIRECTIONS = ("maximize", "minimize", "minimize")


@dataclass(frozen=True)
class TrialOutcome:
    """What a finished trial hands to tracking: objective values, params, metrics, files."""

    values: tuple[float, float, float]  # in the order of OBJECTIVES
    params: dict[str, Any]
    metrics: dict[str, float]
    tags: dict[str, str]
    artifact_dir: Any  # Path of the served artifact
    timings: dict[str, float] = field(default_factory=dict)


def check_space(space: SearchSpace) -> None:
    """Every categorical choice of the space must name a registered pruning kind / quantization scheme."""
    for name, registry in (("prune_kind", PRUNERS), ("quant_scheme", SCHEMES)):
        unknown = [c for c in space.choices(name) if c not in registry]
        if unknown:
            raise UserError(f"search space {space.source}: {name} choice(s) {', '.join(map(str, unknown))} "
                            f"unknown; known: {', '.join(registry)}")


def objective(trial, ctx: TrialContext) -> TrialOutcome:
    """Run one trial: params from ``ctx.space``, every step seeded with ``ctx.trial_seed(trial.number)``."""
    params = suggest(trial, ctx.space)
    seed = ctx.trial_seed(trial.number)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[f"time_{name}_s"] = now - clock
        clock = now

    # distil
    tokenizer = load_tokenizer(ctx.student, ctx.scratch_tokenizer_dir)
    pad_id = tokenizer.pad_token_id
    model = build_model(ctx.student, ctx.split.label_names, vocab_size=len(tokenizer), seed=seed)
    kd = DistillConfig(temperature=float(params["temperature"]), kd_lambda=float(params["kd_lambda"]))
    s = ctx.split
    train_enc = encode(tokenizer, s.train.texts, ctx.train.max_length)
    val_enc = encode(tokenizer, s.validation.texts, ctx.train.max_length)
    lr = ctx.train.learning_rate_scratch if ctx.student.from_scratch else ctx.train.learning_rate_pretrained
    result = fit(model, train=train_enc, train_labels=s.train.labels, validation=val_enc,
                 validation_labels=s.validation.labels, loss_fn=kd_loss_fn(ctx.teacher.train_logits, kd),
                 settings=ctx.train, learning_rate=lr, pad_id=pad_id, seed=seed,
                 progress=f"trial {trial.number} epochs" if ctx.show_progress else None)
    lap("distil")
    # prune
    report = prune(model, PruneConfig(kind=str(params["prune_kind"]), ratio=float(params["prune_ratio"])))
    nonzero = nonzero_parameters(model)
    lap("prune")
    # quantize + export, then evaluate and time in the serving runtime
    out = ctx.trial_dir(trial.number)
    if out.exists():
        shutil.rmtree(out)
    served = serve_and_measure(model, tokenizer, str(params["quant_scheme"]), out, ctx.split, ctx.train.max_length,
                               ctx.measure)
    timings.update(served.timings)
    servable, quality, speed = served.servable, served.quality, served.speed
    size_mb = servable.size_bytes / 1e6
    metrics = {"macro_f1": quality.macro_f1, "accuracy": quality.accuracy, **speed.as_metrics(),
               "size_mb": size_mb, "size_bytes": float(servable.size_bytes), "nonzero_params": float(nonzero),
               "pruned_sparsity": report.sparsity, "validation_macro_f1": result.best_validation_macro_f1,
               "best_epoch": float(result.best_epoch), "epochs_run": float(result.epochs_run), **timings}
    tags = {"runtime": servable.runtime, "quantizes": servable.quantizes,
            "latency_protocol": f"median of {ctx.measure.latency_examples} batch-1 calls on test texts, "
                                f"{speed.threads} intra-op thread(s), {ctx.measure.warmup} warm-up calls; "
                                f"throughput at batch {speed.batch_size}, dynamic padding"}
    return TrialOutcome(values=(quality.macro_f1, speed.latency_ms, size_mb), params=params, metrics=metrics,
                        tags=tags, artifact_dir=out, timings=timings)


@dataclass(frozen=True)
class Served:
    servable: Servable
    quality: Quality
    speed: Speed
    timings: dict[str, float]


def serve_and_measure(model, tokenizer, scheme: str, out: Path, split: DataSplit, max_length: int,
                      settings: MeasureSettings) -> Served:
    """Quantize/export ``model`` with ``scheme`` into ``out``, then measure the served artifact.

    Used for trials and for the fp32 teacher reference alike, so every number has one protocol.
    """
    timings = {}
    start = time.perf_counter()
    servable = quantize(model, scheme, out / "model")
    tokenizer.save_pretrained(str(out / "tokenizer"))
    write_metadata(out, scheme=scheme, runtime=servable.runtime, quantizes=servable.quantizes,
                   max_length=max_length, labels=split.label_names)
    timings["time_quantize_s"] = time.perf_counter() - start
    start = time.perf_counter()
    test_enc = encode(tokenizer, split.test.texts, max_length)
    quality = evaluate(servable.predictor, test_enc, split.test.labels, tokenizer.pad_token_id)
    timings["time_evaluate_s"] = time.perf_counter() - start
    start = time.perf_counter()
    speed = measure_speed(servable.predictor, test_enc, tokenizer.pad_token_id, settings)
    timings["time_measure_s"] = time.perf_counter() - start
    return Served(servable, quality, speed, timings)
