"""The model card of an exported bundle: what it is, how it measured in its study, and where it came from."""

from __future__ import annotations

import platform
from dataclasses import dataclass

from optuna.trial import FrozenTrial

from objectives.bundle import Bundle
from study.core.budgets import Budgets
from study.reporting.callbacks import trial_params
from study.reporting.front import NO_PRUNING, pruning_label
from study.reporting.picks import Rule, loss_points


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


def model_card(trial: FrozenTrial, run, parent, bundle: Bundle, verified: float | None, registered: str | None,
               picked: Picked | None = None) -> str:
    """Markdown for ``model_card.md``: ``run`` is the trial's MLflow run, ``parent`` its pair study's run,
    ``verified`` the macro-F1 re-measured on export (None: not re-measured), ``registered`` "name/version"."""
    p = run.data.params
    lines = [
        f"# {p['student']} compressed from {p['teacher']} — trial {trial.number} of `{trial.user_attrs.get('study')}`",
        "",
        f"Technique chain: {technique_chain(trial, p)}.",
        f"Served by: {bundle.meta['runtime']} ({bundle.meta['scheme']}; quantizes {bundle.meta['quantizes']}).",
        f"Labels: {', '.join(bundle.labels)}.",
        "",
        *([picked.text(trial), ""] if picked else []),
        "## Measured in the study (chosen on validation, reported on the held-out test split)",
        "",
        *_metrics_table(run.data.metrics, verified),
        "",
        f"Timing protocol: {run.data.tags.get('latency_protocol', 'see README')}; "
        f"{p.get('threads', '?')} thread(s).",
        "",
        "## Provenance",
        "",
        *_provenance(trial, run, parent, registered),
        "",
        "## Use",
        "",
        "```bash",
        "python -m study.predict THIS_FOLDER \"some text\"",
        "```",
        "",
    ]
    return "\n".join(lines)


def technique_chain(trial: FrozenTrial, params: dict[str, str]) -> str:
    """distil S from T (T=..., lambda=...) -> prune ... -> quantize ..., in words."""
    tp = trial_params(trial)
    pruning = pruning_label(tp['prune_kind'], tp['prune_ratio'], "{:.2f}")
    return (f"distil {params['student']} from {params['teacher']} (T={float(tp['temperature']):.3g}, "
            f"lambda={float(tp['kd_lambda']):.3g}) -> {pruning if pruning == NO_PRUNING else 'prune ' + pruning} "
            f"-> quantize {tp['quant_scheme']}")


def _metrics_table(m: dict[str, float], verified: float | None) -> list[str]:
    def fmt(name: str, digits: int = 4) -> str:
        return f"{m[name]:.{digits}f}" if name in m else "n/a"

    return [
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
    ]


def _provenance(trial: FrozenTrial, run, parent, registered: str | None) -> list[str]:
    import onnxruntime
    import transformers

    p = run.data.params
    machine = {k.split(".", 1)[1]: v for k, v in parent.data.tags.items() if k.startswith("machine.")}
    return [
        f"- data: {p.get('data_source')} (sha256 {p.get('data_sha256')}), {p.get('data_rows')} rows, "
        f"classes {p.get('data_class_counts')}",
        f"- split: train {p.get('split_train')} / validation {p.get('split_validation')} / test {p.get('split_test')}, "
        f"seed {p.get('split_seed')}; trial seed {int(p.get('seed', 0)) + trial.number}",
        f"- MLflow run id: {run.info.run_id}; registered model version: {registered or 'not registered'}",
        f"- measured on: {machine.get('cpu', platform.processor())}, {machine.get('cpu_count', '?')} cores; "
        f"torch {machine.get('torch_version', '?')}, onnxruntime {machine.get('onnxruntime_version', '?')}",
        f"- exported with: transformers {transformers.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"Python {platform.python_version()}",
    ]
