import pytest
import torch

from audionet_ray.model import AudioNet, ModelConfig, conv_lengths, count_parameters, flops_per_clip


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
