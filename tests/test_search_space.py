import optuna
import pytest
import yaml

from objectives.trial import check_space
from search_spaces import SpaceError, load_space, parse_space, suggest
from study.core.errors import UserError


def test_default_space_loads_and_offers_the_schemes():
    space = load_space("default")
    check_space(space)
    assert {p.name for p in space.params} == {"temperature", "kd_lambda", "prune_kind", "prune_ratio", "quant_scheme",
                                              "calibration"}
    assert set(space.choices("quant_scheme")) == {"none", "bf16", "torch_dynamic_int8", "onnx_fp32",
                                                  "onnx_dynamic_int8", "onnx_static_int8"}
    assert set(space.choices("prune_kind")) == {"l1_unstructured", "heads", "ffn", "heads_ffn"}


def _write(tmp_path, data):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


BASE = {"temperature": {"type": "float", "low": 1.0, "high": 5.0},
        "kd_lambda": {"type": "float", "low": 0.0, "high": 1.0},
        "prune_ratio": {"type": "float", "low": 0.0, "high": 0.5},
        "quant_scheme": {"type": "categorical", "choices": ["none"]}}


@pytest.mark.parametrize("change, message", [
    ({"temperature": {"type": "float", "low": 5.0, "high": 5.0}}, "low .* must be smaller than high"),
    ({"dropout": {"type": "float", "low": 0.0, "high": 0.1}}, "unknown parameter.*dropout"),
    ({"kd_lambda": {"type": "float", "low": 0.0, "high": 2.0}}, "outside the allowed range"),
    ({"temperature": {"type": "float", "low": 0.0, "high": 2.0, "log": True}}, "log-scale range needs low > 0"),
    ({"quant_scheme": {"type": "categorical", "choices": []}}, "non-empty list"),
    ({"prune_ratio": {"type": "float", "low": 0.0, "high": 0.5, "stepp": 0.1}}, "unexpected key"),
    ({"temperature": {"type": "normal"}}, "expected a mapping with type"),
    ({"kd_lambda": {"type": "categorical", "choices": [0.5, 1.5]}}, "choice 1.5 is outside the allowed range"),
    ({"temperature": {"type": "categorical", "choices": [2, "hot"]}}, "choice must be a number"),
])
def test_invalid_spaces_are_rejected(tmp_path, change, message):
    with pytest.raises(SpaceError, match=message):
        load_space(_write(tmp_path, {**BASE, **change}))


def test_missing_parameter_and_unknown_choice(tmp_path):
    with pytest.raises(SpaceError, match="missing parameter.*quant_scheme"):
        parse_space({k: v for k, v in BASE.items() if k != "quant_scheme"}, source="x", name="x")
    space = load_space(_write(tmp_path, {**BASE, "quant_scheme": {"type": "categorical", "choices": ["int3"]}}))
    with pytest.raises(UserError, match="quant_scheme choice.*int3"):
        check_space(space)
    with pytest.raises(SpaceError, match="not found"):
        load_space("no-such-space")


def test_suggest_stays_in_bounds_and_pins_fixed_values():
    space = load_space("default").pinned(quant_scheme="onnx_dynamic_int8", prune_ratio=0.5)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        values = suggest(trial, space)
        assert values["temperature"] in (1, 2, 3, 4, 6, 8, 10)  # on the grid, so trials share students
        assert any(abs(values["kd_lambda"] - k / 10) < 1e-9 for k in range(11))  # in tenths
        assert values["quant_scheme"] == "onnx_dynamic_int8"
        assert values["prune_ratio"] == 0.5
        assert values["prune_kind"] in {"l1_unstructured", "heads", "ffn", "heads_ffn"}
        assert values["calibration"] in {"minmax", "entropy", "percentile"}
        study.tell(trial, [0.0, 1.0, 1.0])


def test_schemes_this_cpu_cannot_serve_are_dropped_before_the_study(monkeypatch):
    import objectives.quantize as quantize
    from objectives.trial import servable_space

    monkeypatch.setattr(quantize, "cpu_supports_bf16", lambda: False)
    space, dropped = servable_space(load_space("default"))
    assert list(dropped) == ["bf16"] and "AVX512-BF16" in dropped["bf16"]
    assert space.choices("quant_scheme") == ("none", "torch_dynamic_int8", "onnx_fp32", "onnx_dynamic_int8",
                                             "onnx_static_int8")
    monkeypatch.setattr(quantize, "cpu_supports_bf16", lambda: True)
    space, dropped = servable_space(load_space("default"))
    assert dropped == {} and "bf16" in space.choices("quant_scheme")


def test_a_space_of_only_unservable_schemes_is_an_error(monkeypatch, tmp_path):
    import objectives.quantize as quantize
    from objectives.trial import servable_space

    monkeypatch.setattr(quantize, "cpu_supports_bf16", lambda: False)
    only_bf16 = parse_space({**BASE, "quant_scheme": {"type": "categorical", "choices": ["bf16"]}},
                            source="s.yaml", name="s")
    with pytest.raises(UserError, match="none of the quant_scheme choices"):
        servable_space(only_bf16)
    with pytest.raises(UserError, match="fixed to 'bf16'"):
        servable_space(load_space("default").pinned(quant_scheme="bf16"))
