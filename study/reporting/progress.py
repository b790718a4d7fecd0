"""Console progress: a trials bar with ETA and the best values so far, one line per finished trial."""

from __future__ import annotations

import sys

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm


def say(*parts: object) -> None:
    """Print a line without breaking an active progress bar."""
    tqdm.write(" ".join(str(p) for p in parts), file=sys.stdout)
    sys.stdout.flush()


def bar_disabled(quiet: bool) -> bool | None:
    """tqdm's ``disable``: off with --quiet, automatic (off when not a terminal) otherwise."""
    return True if quiet else None


class TrialProgress:
    """Optuna callback: advance the bar on each completed trial and print its one-line summary."""

    def __init__(self, study_name: str, n_trials: int, done: int, quiet: bool = False):
        self.study_name = study_name
        self.n_trials = n_trials
        self.quiet = quiet
        self.last_state: TrialState | None = None
        self.bar = tqdm(total=n_trials, initial=min(done, n_trials), desc=study_name, unit="trial",
                        disable=bar_disabled(quiet), dynamic_ncols=True, leave=True, file=sys.stderr)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        from study.reporting.callbacks import trial_params
        from study.reporting.front import pruning_label

        self.last_state = trial.state
        if trial.state != TrialState.COMPLETE:
            return
        done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        self.bar.n = min(len(done), self.n_trials)
        self.bar.set_postfix(best_val_f1=f"{max(t.values[0] for t in done):.4f}",
                             min_latency=f"{min(t.values[1] for t in done):.3f}x",
                             min_mb=f"{min(t.values[2] for t in done):.2f}", refresh=True)
        if self.quiet:
            return
        p, v = trial_params(trial), trial.values
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
        hit = trial.user_attrs.get("tags", {}).get("distill_cache_hit") == "true"
        cached = ", student from the cache" if hit else ""
        say(f"[{self.study_name}] trial {trial.number} done ({len(done)}/{self.n_trials}, {seconds:.0f}s{cached}): "
            f"T={p['temperature']:.2f} lambda={p['kd_lambda']:.2f} {pruning_label(p['prune_kind'], p['prune_ratio'])} "
            f"quant={p['quant_scheme']} -> validation macro-F1 {v[0]:.4f}, latency {v[1]:.3f}x the teacher's, {v[2]:.2f} MB")

    def close(self) -> None:
        self.bar.close()
