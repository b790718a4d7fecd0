"""Search spaces as data: YAML files validated on load, turned into ``trial.suggest_*`` calls."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


HERE = Path(__file__).resolve().parent
class SpaceError(ValueError):
    """A search space that cannot be used: the message names the file, the parameter and what is wrong.
    This package is data and imports nothing of the study; whoever loads a space turns this into the
    study's ``UserError`` (exit code 2)."""


PARAMETERS = {  # name -> (required in a space file, allowed numeric range [low, high] or None)
    "temperature": (True, (0.0, None)),
    "kd_lambda": (True, (0.0, 1.0)),
    "prune_kind": (False, None),
    "prune_ratio": (True, (0.0, 0.95)),
    "quant_scheme": (True, None),
    "calibration": (False, None),
}
DEFAULTS = {"prune_kind": "l1_unstructured", "calibration": "minmax"}
TYPES = ("float", "int", "categorical", "fixed")


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    value: Any = None


@dataclass(frozen=True)
class SearchSpace:
    name: str
    source: str
    params: tuple[Param, ...]

    def get(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def choices(self, name: str) -> tuple[Any, ...]:
        """Every value a categorical or fixed parameter can take (empty for numeric ones)."""
        p = self.get(name)
        if p is None:
            return (DEFAULTS[name],) if name in DEFAULTS else ()
        return p.choices if p.type == "categorical" else (p.value,) if p.type == "fixed" else ()

    def without_choices(self, name: str, dropped: set[Any]) -> SearchSpace:
        """The same space with some choices of a categorical parameter removed (e.g. schemes this machine
        cannot serve); an error if none would be left, or if a fixed parameter holds a dropped value."""
        p = self.get(name)
        if p is None or not dropped & set(self.choices(name)):
            return self
        if p.type == "fixed":
            raise SpaceError(f"search space {self.source}: {name} is fixed to {p.value!r}, which cannot be used here")
        kept = tuple(c for c in p.choices if c not in dropped)
        if not kept:
            raise SpaceError(f"search space {self.source}: none of the {name} choices "
                            f"({', '.join(map(str, p.choices))}) can be used here")
        params = tuple(Param(name, "categorical", choices=kept) if q.name == name else q for q in self.params)
        return SearchSpace(self.name, self.source, params)

    def pinned(self, **values: Any) -> SearchSpace:
        """The same space with some parameters fixed (an ablation cell)."""
        unknown = set(values) - set(PARAMETERS)
        if unknown:
            raise SpaceError(f"cannot pin unknown parameter(s) {', '.join(sorted(unknown))}")
        kept = [p for p in self.params if p.name not in values]
        fixed = [_validated(k, {"type": "fixed", "value": v}, self.source) for k, v in values.items()]
        return SearchSpace(self.name, self.source, tuple(kept + fixed))


def space_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        return path
    return HERE / f"{name_or_path}.yaml"


def load_space(name_or_path: str = "default") -> SearchSpace:
    """Load and validate a space by name (a file in this folder) or by path to a YAML file."""
    path = space_path(name_or_path)
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in HERE.glob("*.yaml")))
        raise SpaceError(f"search space {name_or_path!r} not found (looked for {path}); known spaces: {known}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SpaceError(f"search space file {path} is not valid YAML: {exc}") from None
    return parse_space(raw, source=str(path), name=path.stem)


def parse_space(raw: Any, *, source: str, name: str) -> SearchSpace:
    if not isinstance(raw, dict) or not raw:
        raise SpaceError(f"search space file {source}: expected a mapping of parameter name -> definition")
    unknown = sorted(set(raw) - set(PARAMETERS))
    if unknown:
        raise SpaceError(f"search space file {source}: unknown parameter(s) {', '.join(map(str, unknown))}; "
                        f"known: {', '.join(PARAMETERS)}")
    missing = [k for k, (required, _) in PARAMETERS.items() if required and k not in raw]
    if missing:
        raise SpaceError(f"search space file {source}: missing parameter(s) {', '.join(missing)}")
    return SearchSpace(name, source, tuple(_validated(k, v, source) for k, v in raw.items()))


def _validated(name: str, spec: Any, source: str) -> Param:
    where = f"search space file {source}, parameter {name!r}"
    if not isinstance(spec, dict) or spec.get("type") not in TYPES:
        raise SpaceError(f"{where}: expected a mapping with type one of {', '.join(TYPES)}")
    kind = spec["type"]
    allowed_keys = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"},
                    "categorical": {"choices"}, "fixed": {"value"}}[kind] | {"type"}
    extra = sorted(set(spec) - allowed_keys)
    if extra:
        raise SpaceError(f"{where}: unexpected key(s) {', '.join(extra)} for type {kind}")
    _, bounds = PARAMETERS[name]
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices or len(set(map(str, choices))) != len(choices):
            raise SpaceError(f"{where}: choices must be a non-empty list of distinct values")
        if bounds is not None:  # a numeric parameter on a grid of choices: each within its range
            for choice in choices:
                _check_in_bounds(where, "choice", choice, bounds)
        return Param(name, kind, choices=tuple(choices))
    if kind == "fixed":
        if "value" not in spec:
            raise SpaceError(f"{where}: a fixed parameter needs a value")
        value = spec["value"]
        if bounds is not None:
            _check_in_bounds(where, "value", value, bounds)
        return Param(name, kind, value=value)
    if bounds is None:
        raise SpaceError(f"{where}: must be categorical or fixed, not {kind}")
    low, high = spec.get("low"), spec.get("high")
    for key, val in (("low", low), ("high", high)):
        if not isinstance(val, (int, float)) or isinstance(val, bool):
            raise SpaceError(f"{where}: {key} must be a number, got {val!r}")
        _check_in_bounds(where, key, val, bounds)
    if low >= high:
        raise SpaceError(f"{where}: low ({low}) must be smaller than high ({high})")
    log = bool(spec.get("log", False))
    step = spec.get("step")
    if log and low <= 0:
        raise SpaceError(f"{where}: a log-scale range needs low > 0, got {low}")
    if log and step is not None:
        raise SpaceError(f"{where}: log and step cannot be combined")
    if step is not None and (not isinstance(step, (int, float)) or step <= 0 or step > high - low):
        raise SpaceError(f"{where}: step must be a positive number no larger than high - low, got {step!r}")
    return Param(name, kind, low=low, high=high, log=log, step=step)


def _check_in_bounds(where: str, key: str, value: Any, bounds: tuple[float, float | None]) -> None:
    lo, hi = bounds
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise SpaceError(f"{where}: {key} must be a number, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        limit = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise SpaceError(f"{where}: {key} {value} is outside the allowed range {limit}")


def suggest(trial, space: SearchSpace) -> dict[str, Any]:
    """Ask an Optuna trial for every parameter of ``space`` (fixed ones are recorded as user attrs)."""
    values: dict[str, Any] = dict(DEFAULTS)
    for p in space.params:
        if p.type == "float":
            values[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log, step=p.step)
        elif p.type == "int":
            values[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
        elif p.type == "categorical":
            values[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        else:
            values[p.name] = p.value
            trial.set_user_attr(f"fixed.{p.name}", p.value)
    return values
