"""The model registry (registry.py): architectures by name, the name a checkpoint and a bundle
record choosing the class that loads them, and one line for a name this package does not know.

A second architecture is registered for real (a subclass of AudioNet under its own name) and
goes through the real checkpoint writer, export and bundle loader; nothing is mocked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from audionet_ray import registry
from audionet_ray.detection.bundle import CONFIG_FILE, BundleError, load, read_config, write_config
from audionet_ray.training.checkpoint import META_FILE
from audionet_ray.training.checkpoint import save as save_checkpoint
from audionet_ray.training.config import TrainConfig
from audionet_ray.core.errors import ConfigError
from audionet_ray.deploy.export import export
from audionet_ray.modeling.model import AudioNet, ModelConfig

CLASSES = ["yes", "no", "_silence_"]


class EchoNet(AudioNet):
    """A second architecture for these tests: AudioNet's layers under another name."""


@pytest.fixture
def echo_registered(monkeypatch):
    monkeypatch.setitem(registry.ARCHITECTURES, "EchoNet", EchoNet)
    return "EchoNet"


def _checkpoint(folder: Path, architecture: str) -> Path:
    """A real checkpoint (checkpoint.save) of a small untrained model of `architecture`."""
    cfg = TrainConfig.from_dict({"epochs": 1, "width": 8, "dense": 16, "seed": 0})
    model_cfg = cfg.model_config(len(CLASSES))
    torch.manual_seed(0)
    model = registry.build(architecture, model_cfg)
    folder.mkdir(parents=True)
    save_checkpoint(folder, model, torch.optim.SGD(model.parameters(), lr=0.1), 1, cfg, model_cfg, CLASSES,
                    {"val_accuracy": 0.5})
    return folder


def _export(ckpt: Path, out: Path) -> Path:
    return export(ckpt, out, calibrate_fa=None, int8=False)


# ----------------------------------------------------------------------------- names

def test_names_hold_the_default_and_an_unknown_name_is_one_line_naming_the_known_ones():
    assert registry.DEFAULT in registry.names()
    for bad in ("ResNet", "audionet", ["AudioNet"]):
        with pytest.raises(ConfigError) as e:
            registry.build(bad, ModelConfig(n_classes=3, width=8, dense=16))
        msg = str(e.value)
        assert "\n" not in msg and "unknown architecture" in msg and ", ".join(registry.names()) in msg


def test_a_model_of_an_unregistered_class_has_no_name():
    with pytest.raises(ConfigError, match="not a registered architecture"):
        registry.name_of(EchoNet.from_config(ModelConfig(n_classes=3, width=8, dense=16)))


@pytest.mark.parametrize("settings", [dict(width=8, dense=16),
                                      dict(width=8, dense=16, norm="batch", pool="avg", dense_layers=1),
                                      dict(width=8, dense=16, frontend="filterbank", filters=8, norm="group",
                                           norm_groups=2)])
def test_build_round_trips_a_state_dict(settings):
    """What a checkpoint stores (the settings as a dict, the weights) builds the same model again."""
    cfg = ModelConfig(n_classes=3, **settings)
    torch.manual_seed(1)
    first = registry.build(registry.DEFAULT, cfg).eval()
    torch.manual_seed(2)  # other initial weights: only load_state_dict can make them equal
    again = registry.build(registry.name_of(first), json.loads(json.dumps(cfg.to_dict()))).eval()
    again.load_state_dict(first.state_dict())
    assert again.config == first.config and type(again) is type(first)
    x = torch.randn(2, cfg.clip_samples)
    with torch.no_grad():
        assert torch.equal(first(x), again(x))


# ----------------------------------------------------------------------------- the recorded name chooses

def test_a_checkpoint_and_its_bundle_record_the_architecture_and_load_as_that_class(echo_registered, tmp_path):
    ckpt = _checkpoint(tmp_path / "ckpt" / "checkpoint_000001", echo_registered)
    assert json.loads((ckpt / META_FILE).read_text())["architecture"] == "EchoNet"
    out = _export(ckpt, tmp_path / "bundle")
    assert read_config(out)["model"]["architecture"] == "EchoNet"
    b = load(out)
    assert type(b.model) is EchoNet and not b.model.training


def test_records_written_before_the_registry_load_as_audionet(tmp_path):
    """A checkpoint's meta.json and a bundle's config.json without `architecture`: AudioNet."""
    ckpt = _checkpoint(tmp_path / "ckpt" / "checkpoint_000001", registry.DEFAULT)
    meta = json.loads((ckpt / META_FILE).read_text())
    del meta["architecture"]
    (ckpt / META_FILE).write_text(json.dumps(meta))
    out = _export(ckpt, tmp_path / "bundle")
    assert read_config(out)["model"]["architecture"] == "AudioNet"
    config = read_config(out)
    del config["model"]["architecture"]
    write_config(out, config)
    assert type(load(out).model) is AudioNet


def test_an_unknown_recorded_architecture_is_one_line_from_export_and_from_load(echo_registered, tmp_path):
    ckpt = _checkpoint(tmp_path / "ckpt" / "checkpoint_000001", registry.DEFAULT)
    out = _export(ckpt, tmp_path / "bundle")
    config = read_config(out)
    config["model"]["architecture"] = "FutureNet"
    write_config(out, config)
    with pytest.raises(BundleError) as e:
        load(out)
    assert str(e.value).startswith(f"{out / CONFIG_FILE}: unknown architecture 'FutureNet'")
    assert "AudioNet, EchoNet" in str(e.value) and "\n" not in str(e.value)

    meta = json.loads((ckpt / META_FILE).read_text())
    (ckpt / META_FILE).write_text(json.dumps({**meta, "architecture": "FutureNet"}))
    with pytest.raises(ConfigError) as e:
        _export(ckpt, tmp_path / "bundle2")
    assert "unknown architecture 'FutureNet'" in str(e.value) and "\n" not in str(e.value)
