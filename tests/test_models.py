import pytest
import torch
from torch import nn

from mnist_classifier.errors import ConfigError
from mnist_classifier.models import REGISTRY, architecture, build_model, model_config
from helpers import perturb_batch_norm


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_architecture_maps_images_to_ten_logits(name):
    model = build_model(name).eval()
    with torch.no_grad():
        out = model(torch.rand(3, 1, 28, 28))
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()


def test_registry_has_the_seed_presets_and_ours():
    assert {"mlp", "mlp-bn", "cnn", "cnn-fast"} <= set(REGISTRY)


def _linear_sizes(model):
    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]


def test_mlp_matches_seed_000():
    model = build_model("mlp")
    assert _linear_sizes(model) == [(784, 128), (128, 64), (64, 10)]
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.2, 0.2]


def test_mlp_bn_matches_seed_001():
    model = build_model("mlp-bn")
    assert _linear_sizes(model) == [(784, 512), (512, 256), (256, 128), (128, 10)]
    assert [m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm1d)] == [512, 256]
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.3, 0.2]


def test_options_override_defaults():
    model = build_model("mlp", hidden_layers=[32], dropout=0.5)
    assert _linear_sizes(model) == [(784, 32), (32, 10)]
    assert model_config("mlp", hidden_layers=[32]) == {"hidden_layers": [32], "dropout": 0.2}
    cnn = build_model("cnn", channels=[8, 16, 32])
    assert [m.out_channels for m in cnn.modules() if isinstance(m, nn.Conv2d)][0] == 8


@pytest.mark.parametrize("name, options, message", [
    ("mlp", {"hidden_layers": []}, "hidden_layers must be a non-empty list"),
    ("mlp", {"hidden_layers": [64, 0]}, "hidden_layers must be a non-empty list"),
    ("mlp", {"dropout": 1.5}, r"dropout must be in \[0, 1\)"),
    ("cnn", {"channels": [8, 16]}, "channels must be a list of 3 whole numbers from 1 to 512, got \\[8, 16\\]"),
    ("cnn", {"depth": 3}, "cnn has no option depth"),
])
def test_nonsense_options_are_rejected(name, options, message):
    with pytest.raises(ConfigError, match=message):
        build_model(name, **options)


def test_unknown_architecture():
    with pytest.raises(ConfigError, match="unknown architecture 'resnet' \\(choose from mlp, mlp-bn, cnn, cnn-fast, ensemble\\)"):
        architecture("resnet")


def test_default_cnn_is_small_enough_to_ship():
    params = sum(p.numel() for p in build_model("cnn").parameters())
    assert params * 4 < 3 * 1024 * 1024  # float32 weights well under the 3 MB budget for the shipped file


def test_options_that_must_fit_each_other_are_checked_before_building():
    from mnist_classifier.models import check_config

    with pytest.raises(ConfigError, match="mlp-bn: dropouts has 3 values but there are 1 hidden layers"):
        check_config("mlp-bn", {"hidden_layers": [1]})
    assert check_config("mlp-bn", {"hidden_layers": [64], "dropouts": [0.1]})["dropouts"] == [0.1]


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_architecture_survives_batch_norm_folding(name, mnist):
    """inference.prepare_for_inference folds each BN into its layer: the same answers, for every architecture,
    with BN statistics far from (0, 1) so that a wrong fold shows."""
    from mnist_classifier.inference import predict_logits, prepare_for_inference

    torch.manual_seed(0)
    model = perturb_batch_norm(build_model(name), seed=1)
    images = mnist.test_images[:256]
    folded = prepare_for_inference(model)
    assert not any(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) for m in folded.modules()) or \
        name.startswith("mlp")  # fx folds conv-BN pairs; an MLP's BN follows a Linear and stays
    expected, got = predict_logits(model, images), predict_logits(folded, images)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(got.argmax(1), expected.argmax(1))
