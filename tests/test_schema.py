"""The settings' schema (audionet_ray/schema.py): one declaration per setting, from which the checks,
the flat names and the command-line options follow. No Ray: these run in seconds."""

import dataclasses
import inspect
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audionet_ray import schema
from audionet_ray.pipeline.augment import AugmentConfig
from audionet_ray.training.config import ConfigError, TrainConfig, setting
from audionet_ray.modeling.model import AudioNet, ModelConfig
from audionet_ray.tuning.search_space import load_spec

PACKAGE = Path(__file__).resolve().parent.parent / "audionet_ray"
FLAT = schema.flat_hints(TrainConfig)  # every setting by its flat name, with its type
NAMES = sorted(n for n in FLAT if n not in ("data", "keywords", "rir_folder"))
WRONG = {int: ["fast", 2.5, True, None], float: ["fast", True, float("nan"), [1]], bool: ["yes", 1, None],
         str: [3, 1.5, False]}


def _typo(name: str, at: int) -> str:
    """A misspelling: one letter written twice."""
    i = at % len(name)
    return name[:i] + name[i] + name[i:]


@st.composite
def broken_settings(draw) -> tuple[dict, list[tuple[str, str]]]:
    """Valid settings with 1-5 of them misspelt or given the wrong type, and what each mistake is."""
    chosen = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=5, unique=True))
    d, expected = {}, []
    for name in chosen:
        if draw(st.booleans()) and len(name) >= 5:
            typo = _typo(name, draw(st.integers(0, 30)))
            d[typo] = schema.flat_defaults(TrainConfig)[name]
            expected.append((typo, f"did you mean {name}?"))
        else:
            d[name] = draw(st.sampled_from(WRONG[FLAT[name]]))
            expected.append((name, f"{name}: expected {schema.type_name(FLAT[name])}"))
    return d, expected


@settings(max_examples=150, deadline=None)
@given(broken_settings())
def test_every_mistake_of_a_dict_is_in_its_one_error_with_the_nearest_name_for_a_typo(case):
    d, expected = case
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict(d, "space.yaml")
    msg = str(e.value)
    assert "\n" not in msg and "space.yaml" in msg
    if len(expected) > 1:
        assert msg.startswith(f"{len(expected)} mistakes in space.yaml: ")
    for key, text in expected:
        assert text in msg, (key, msg)
    assert len(msg.split("; ")) >= len(expected)


def test_a_search_space_reports_all_its_mistakes_at_once(tmp_path):
    f = tmp_path / "space.yaml"
    f.write_text("search: {lr: {loguniform: [1.0e-2, 1.0e-3]}, widht: {choice: [8, 16]}}\n"
                 "fixed: {epoch: 3, batch_size: fast, augment: {noise_amplitud: 3}}\n"
                 "tune: {searcher: hyperopt, grace_period: 1}\n"
                 "resources: {workers_per_trial: 1.5}\n")
    with pytest.raises(ConfigError) as e:
        load_spec(f)
    msg = str(e.value)
    assert msg.startswith(f"8 mistakes in {f}: ") and "\n" not in msg, msg
    for part in ("search.lr.loguniform: low 0.01 must be below high 0.001",
                 "search.widht is not a setting (did you mean width?)",
                 "fixed: unknown setting(s): epoch (did you mean epochs?)",
                 "fixed.batch_size: expected int, got 'fast'",
                 "fixed.augment: unknown setting(s): noise_amplitud (did you mean noise_amplitude?)",
                 "searcher 'hyperopt' unknown",
                 "grace_period must be >= 2 epochs",
                 "resources.workers_per_trial: expected int, got 1.5"):
        assert part in msg, (part, msg)


def test_bad_values_of_a_dict_are_reported_together():
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({"epochs": 0, "norm": "bn", "train_ratio": 1.5, "window_prob": 2.0})
    msg = str(e.value)
    assert msg.startswith("4 mistakes: ")
    for part in ("epochs must be >= 1", "norm must be one of", "train_ratio must be between 0 and 1",
                 "augment.window_prob must be in [0, 1]"):
        assert part in msg


# ----------------------------------------------------------------------------- the command line

def _value(name: str):
    """A value of the setting's type that is not its default (and valid where it matters)."""
    default = schema.flat_defaults(TrainConfig)[name]
    hint = FLAT[name]
    if hint is bool:
        return not default, str(not default).lower()
    if hint is str:
        return default, default  # choices: the default is the one value valid for all
    new = default + (1 if hint is int else 0.05)
    return new, str(new)


def test_every_setting_has_a_generated_option_in_both_spellings():
    from audionet_ray.training.train import _parser

    names = [n for n in FLAT if n not in ("data", "keywords")]
    for name in names:
        want, text = _value(name)
        for flag in {f"--{name}", f"--{name.replace('_', '-')}"}:
            args = _parser().parse_args(["--data", "x", flag, text])
            assert getattr(args, name) == want, (flag, getattr(args, name))
            assert schema.values(args, TrainConfig, given_only=True) == {name: want}


def test_the_settings_hand_written_options_could_not_set_are_options_now():
    from audionet_ray.training.train import _parser, config_from_args

    args = _parser().parse_args(["--data", "x", "--beta1", "0.8", "--bf16", "false", "--noise_amplitude", "30",
                                 "--background-prob", "0.3", "--rt60-max", "1.2", "--spec-augment",
                                 "--frontend", "filterbank", "--deterministic"])
    cfg = config_from_args(args)
    assert (cfg.beta1, cfg.bf16, cfg.augment.noise_amplitude, cfg.augment.background_prob, cfg.augment.rt60_max,
            cfg.model.spec_augment, cfg.model.frontend, cfg.deterministic) == (0.8, False, 30, 0.3, 1.2, True,
                                                                                "filterbank", True)
    assert config_from_args(_parser().parse_args(["--data", "x"])) == TrainConfig()
    with pytest.raises(SystemExit):  # argparse's own one line for a value of the wrong kind
        _parser().parse_args(["--data", "x", "--bf16", "maybe"])


def test_a_keyword_task_keeps_what_the_command_line_gave_over_its_defaults():
    from audionet_ray.training.train import _parser, config_from_args

    cfg = config_from_args(_parser().parse_args(["--data", "x", "--keywords", "yes,no", "--window-prob", "0"]))
    assert (cfg.augment.window_prob, cfg.augment.gain_db, cfg.std_floor, cfg.keywords) == (0.0, 20.0, 100.0, "yes,no")


# ----------------------------------------------------------------------------- the layout

def test_a_flat_config_saved_by_an_older_version_loads_and_is_written_as_it_was():
    old = {"data": "/d", "epochs": 3, "batch_size": 32, "lr": 0.001, "beta1": 0.9, "beta2": 0.999,
           "weight_decay": 0.0, "train_ratio": 0.9, "optimizer": "nadam", "schedule": "constant",
           "warmup_epochs": 1.0, "label_smoothing": 0.0, "class_balance": False, "width": 8, "dense": 16,
           "dropout": 0.2, "norm": "group", "norm_groups": 4, "pool": "avg", "dense_layers": 2,
           "frontend": "conv", "filters": 64, "spec_augment": False, "clip_samples": 0, "keywords": "",
           "std_floor": 0.0, "target_fa_per_hour": 1.0, "detector_minutes": 4.0, "seed": 1,
           "checkpoint_every": 2, "bf16": True, "deterministic": False,
           "augment": {**AugmentConfig().to_dict(), "noise_amplitude": 50}}
    cfg = TrainConfig.from_dict(old)
    assert (cfg.model.width, cfg.model.norm, cfg.model.pool, cfg.augment.noise_amplitude) == (8, "group", "avg", 50)
    assert cfg.to_dict() == old  # the saved layout is unchanged: setting() and older readers find every key
    assert all(setting(old, k) == setting(cfg.to_dict(), k) for k in FLAT)
    assert TrainConfig.from_dict({"width": 8, "model": {"width": 16, "dense": 32}}).model.width == 8  # flat wins
    assert setting({"model": {"width": 16}}, "width") == 16  # a nested model dict is read too
    assert cfg.model_config(5, 16_000) == ModelConfig(5, width=8, dense=16, norm="group", norm_groups=4, pool="avg",
                                                      dense_layers=2)


def test_the_models_fields_are_declared_once():
    names = [f.name for f in dataclasses.fields(ModelConfig)]
    assert not set(names) & set(inspect.signature(AudioNet.__init__).parameters)
    assert not set(names) & {f.name for f in dataclasses.fields(TrainConfig)}
    # n_classes and clip_samples are the data's too (a bundle's, a prepared dataset's window)
    own = [n for n in names if n not in ("n_classes", "clip_samples")]
    declared = re.compile(r"^\s+(" + "|".join(own) + r")\s*:\s*[\w| ]+=", re.M)
    where = {p.name: declared.findall(p.read_text()) for p in PACKAGE.rglob("*.py")}
    assert {p: found for p, found in where.items() if found} == {"model.py": own}, where
    assert AudioNet(ModelConfig(3, width=8, dense=16)).config == AudioNet(3, width=8, dense=16).config


def test_an_option_for_a_setting_added_to_model_config_needs_no_other_file():
    """What `Adding a model setting touches at most two files` rests on: the option, the flat key and
    the check come from the field."""

    @dataclasses.dataclass
    class Model:
        n_classes: int = dataclasses.field(default=0, metadata={"from_data": True})
        width: int = 8  # conv channels
        kernel: int = 3  # a new setting

    @dataclasses.dataclass
    class Train:
        lr: float = 1e-3
        model: Model = dataclasses.field(default_factory=Model)

    import argparse

    ap = argparse.ArgumentParser()
    schema.add_options(ap, Train)
    args = ap.parse_args(["--kernel", "5"])
    assert schema.values(args, Train, given_only=True) == {"kernel": 5}
    assert schema.build(Train, schema.nest(Train, {"kernel": 5})).model.kernel == 5
    assert schema.mistakes(Train, {"kernell": 5, "kernel": "x"}) == [
        "unknown setting(s): kernell (did you mean kernel?)", "kernel: expected int, got 'x'"]
    assert "a new setting" in ap.format_help()
