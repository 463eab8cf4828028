import pytest
import torch

from audionet_ray.modeling.model import FRONTENDS, AudioNet, Filterbank, ModelConfig, conv_lengths, count_parameters, flops_per_clip


def test_reference_parameter_count():
    assert count_parameters(AudioNet(31)) == 9_988_895


def test_conv_layer_lengths():
    assert conv_lengths() == [3993, 991, 240, 53, 6]
    m = AudioNet(12, width=8, dense=16)
    x = torch.randn(2, 1, 16000)
    lengths = []
    for layer in m.features:
        x = layer(x)
        if isinstance(layer, torch.nn.Conv1d):
            lengths.append(x.shape[-1])
    assert lengths == [3993, 991, 240, 53, 6]


@pytest.mark.parametrize("n_classes", [12, 31, 35])
def test_output_shapes(n_classes):
    m = AudioNet(n_classes).eval()
    with torch.no_grad():
        assert m(torch.randn(3, 16000)).shape == (3, n_classes)
        assert m(torch.randn(2, 1, 16000)).shape == (2, n_classes)


def test_small_model_same_shape_and_zero_biases():
    m = AudioNet(10, width=16, dense=32)
    assert m.classifier[1].in_features == 16 * 6
    for p_name, p in m.named_parameters():
        if p_name.endswith("bias"):
            assert torch.count_nonzero(p) == 0, p_name


def test_glorot_initialisation_scale():
    torch.manual_seed(0)
    m = AudioNet(31)
    conv2 = m.features[2].weight  # fan_in = fan_out = 256 * 32: std = sqrt(2 / (fan_in + fan_out))
    expected = (2.0 / (2 * 256 * 32)) ** 0.5
    assert abs(conv2.std().item() - expected) / expected < 0.02
    dense = m.classifier[1].weight  # uniform with bound sqrt(6 / (fan_in + fan_out))
    bound = (6.0 / (1536 + 512)) ** 0.5
    assert dense.abs().max().item() <= bound and dense.abs().max().item() > 0.95 * bound


def test_flops_match_reference_estimate():
    cfg = ModelConfig(31)
    assert 5.3e9 < flops_per_clip(cfg, training=False) < 5.6e9
    assert 16.0e9 < flops_per_clip(cfg) < 16.8e9


def test_dropout_only_in_training():
    m = AudioNet(5, width=8, dense=16)
    x = torch.randn(4, 16000)
    m.eval()
    assert torch.equal(m(x), m(x))
    m.train()
    torch.manual_seed(1)
    a = m(x)
    torch.manual_seed(2)
    assert not torch.equal(a, m(x))


# ----------------------------------------------------------------------------- variants

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from audionet_ray.modeling.model import NORMS, POOLS  # noqa: E402

SEED_KEYS = {"n_classes", "width", "dense", "dropout"}  # what the seed's ModelConfig recorded


def test_defaults_are_the_reference_and_old_records_load_as_it():
    cfg = ModelConfig(31)
    assert (cfg.norm, cfg.pool, cfg.dense_layers, cfg.dropout) == ("none", "flatten", 4, 0.2)
    old = {"n_classes": 31, "width": 256, "dense": 512, "dropout": 0.2}  # a bundle written before the variants
    m = AudioNet.from_config(old)
    assert m.config == cfg and count_parameters(m) == 9_988_895
    kinds = [type(layer).__name__ for layer in m.features]
    assert kinds == ["Conv1d", "ReLU"] * 5
    assert [type(layer).__name__ for layer in m.classifier] == [
        "Flatten", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout",
        "Linear", "ReLU", "Linear"]
    # the seed's state_dict keys, so its checkpoints and bundles load unchanged
    assert {k.rsplit(".", 1)[0] for k in m.state_dict()} == {
        "features.0", "features.2", "features.4", "features.6", "features.8",
        "classifier.1", "classifier.4", "classifier.7", "classifier.10", "classifier.12"}
    with pytest.raises(ValueError, match="unknown model setting.*kernel_size"):
        AudioNet.from_config({**old, "kernel_size": 3})


def test_batch_norm_adds_two_parameters_per_channel_of_each_conv():
    # the measurement in issue 13: width 32 with batch norm is +320 parameters
    assert count_parameters(AudioNet(16, 32, 128, norm="batch")) - count_parameters(AudioNet(16, 32, 128)) == 320


@pytest.mark.parametrize("bad, msg", [
    (dict(norm="bn"), "norm must be one of none, batch, group, layer"),
    (dict(pool="max"), "pool must be one of flatten, avg"),
    (dict(norm="group", width=12, norm_groups=8), "norm_groups must be >= 1 and divide width"),
    (dict(dense_layers=-1), "dense_layers must be >= 0"),
    (dict(dropout=1.0), "dropout must be in"),
    (dict(frontend="mel"), "frontend must be one of conv, filterbank"),
    (dict(frontend="filterbank", filters=0), "filters must be between 1 and 512"),
])
def test_bad_variant_is_one_line_naming_the_option(bad, msg):
    with pytest.raises(ValueError, match=msg) as e:
        AudioNet(5, **{"width": 8, "dense": 16, **bad})
    assert "\n" not in str(e.value)


variants = st.builds(
    dict,
    n_classes=st.integers(1, 40),
    width=st.sampled_from([4, 8, 12, 16]),
    dense=st.integers(1, 48),
    dropout=st.floats(0.0, 0.9),
    norm=st.sampled_from(NORMS),
    norm_groups=st.sampled_from([1, 2, 4]),
    pool=st.sampled_from(POOLS),
    dense_layers=st.integers(0, 5),
    frontend=st.sampled_from(FRONTENDS),
    filters=st.sampled_from([1, 8, 40]),
    spec_augment=st.booleans(),
)


@settings(max_examples=30, deadline=None)
@given(variants)
def test_every_variant_round_trips_and_counts_its_parameters(kw):
    kw["spec_augment"] = kw["spec_augment"] and kw["frontend"] == "filterbank"  # masks need the filterbank
    torch.manual_seed(0)
    m = AudioNet(**kw)
    cfg = m.config
    assert AudioNet.from_config(cfg.to_dict()).config == cfg
    # the layer order: conv -> norm -> ReLU, and a norm after every conv or after none
    kinds = [type(layer).__name__ for layer in m.features]
    per_conv = 2 if cfg.norm == "none" else 3
    assert len(kinds) == 5 * per_conv and kinds[::per_conv] == ["Conv1d"] * 5 and kinds[per_conv - 1::per_conv] == ["ReLU"] * 5
    # parameters from the shapes alone
    w, d, f = cfg.width, cfg.dense, cfg.filters
    if cfg.frontend == "filterbank":  # 2f Gabor filters of 400 taps, no bias; its norm; kernel-3 convs
        conv = 2 * f * 400 + (0 if cfg.norm == "none" else 2 * f) + (f * 3 * w + w) + 4 * (w * 3 * w + w)
    else:
        conv = (1 * 32 * w + w) + 4 * (w * 32 * w + w)
    conv += 0 if cfg.norm == "none" else 5 * 2 * w
    dims = [w * (1 if cfg.pool == "avg" else conv_lengths(frontend=cfg.frontend)[-1]), *[d] * cfg.dense_layers, cfg.n_classes]
    dense = sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))
    assert count_parameters(m) == conv + dense
    m.eval()
    with torch.no_grad():
        x = torch.randn(3, 16000)
        out = m(x)
        assert out.shape == (3, cfg.n_classes) and torch.isfinite(out).all()
        # in eval mode a clip's logits do not depend on the rest of its batch (batch norm uses its running statistics)
        assert torch.allclose(m(x[:1]), out[:1], atol=1e-5, rtol=1e-4)
    assert flops_per_clip(cfg) == 3 * flops_per_clip(cfg, training=False) > 0


def test_filterbank_starts_as_mel_spaced_band_passes_and_removes_channel_colour():
    """Each Gabor filter's peak response sits at its mel-spaced centre, rising with the band
    index; a fixed per-band gain (a microphone's colour) leaves the log features unchanged."""
    fb = Filterbank(40)
    w = fb.conv.weight.detach()[:, 0].double()
    resp = torch.fft.rfft(w[:40], n=16000).abs() ** 2 + torch.fft.rfft(w[40:], n=16000).abs() ** 2  # 1 Hz bins
    peaks = resp.argmax(1)
    assert 50 < peaks[0] < 150 and 7000 < peaks[-1] < 7700
    assert (peaks[1:] > peaks[:-1]).all()
    torch.manual_seed(0)
    x = torch.randn(2, 1, 16000)
    with torch.no_grad():
        a, b = fb(x), fb(3.0 * x)  # a gain is a constant in the log domain (log 9 = 2.2): gone after the mean, but for the 1e-4 floor
    assert a.shape == (2, 40, 98)
    assert (a - b).abs().mean() < 0.05 and torch.allclose(a.mean(-1), torch.zeros(2, 40), atol=1e-4)


def test_spec_augment_masks_bands_and_frames_in_training_only():
    torch.manual_seed(0)
    fb = Filterbank(64, spec_augment=True)
    x = torch.randn(16, 1, 16000)
    with torch.no_grad():
        masked = fb.train()(x)
        plain = fb.eval()(x)
    zero = masked == 0
    assert 0.05 < zero.float().mean() < 0.5
    # whole bands (all 98 frames) and whole frames (all 64 bands) are masked, elsewhere unchanged
    assert zero.all(dim=2).any() and zero.all(dim=1).any()
    assert torch.equal(masked[~zero], plain[~zero])
    assert not (plain == 0).any()
    with pytest.raises(ValueError, match="spec_augment needs frontend filterbank"):
        AudioNet(5, 8, 16, spec_augment=True)


def test_filterbank_variant_is_cheap_and_the_reference_state_dict_keys_stay():
    ref = AudioNet(31)
    assert not any(k.startswith("frontend") for k in ref.state_dict())
    fb = AudioNet(16, 64, 128, norm="batch", pool="avg", dense_layers=0, frontend="filterbank")
    assert "frontend.0.conv.weight" in fb.state_dict()
    assert conv_lengths(frontend="filterbank") == [49, 25, 13, 7, 4]
    # ~200x fewer multiply-adds than the reference, ~7x fewer than the waveform net at the same width
    small = ModelConfig(16, 64, 128, norm="batch", pool="avg", dense_layers=0)
    assert flops_per_clip(fb.config) * 5 < flops_per_clip(small) and flops_per_clip(fb.config) * 200 < flops_per_clip(ref.config)


@pytest.mark.parametrize("norm", NORMS)
def test_norm_layers_normalise_each_conv_output(norm):
    """A loud clip and the same clip 1000x quieter: with normalisation the conv features (and so
    the logits) barely change; without it (the reference) they scale with the input."""
    torch.manual_seed(0)
    m = AudioNet(5, width=8, dense=16, norm=norm, norm_groups=2).train()  # batch stats for batch norm
    x = torch.randn(4, 1, 16000)
    with torch.no_grad():
        loud, quiet = m.features(x), m.features(x / 1000)
    ratio = (loud.norm() / quiet.norm()).item()
    if norm == "none":
        assert ratio > 100
    else:
        assert 0.9 < ratio < 1.1


@pytest.mark.parametrize("norm", NORMS)
def test_every_parameter_of_every_norm_gets_a_gradient(norm):
    """The norm layers are in the graph and train; whether a variant trains well is measured in
    benchmarks/bench_variants.py, not here."""
    torch.manual_seed(0)
    m = AudioNet(3, width=8, dense=16, norm=norm, norm_groups=2).train()
    loss = torch.nn.functional.cross_entropy(m(torch.randn(6, 16000)), torch.arange(6) % 3)
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
