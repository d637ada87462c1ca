"""Richer architectures: every block option builds, trains and is inspectable; impossible
combinations are refused before training with both parameters named."""

from __future__ import annotations

import numpy as np
import pytest

from automl_core.analysis.inspect import ActivationProbe, conv_filters, layer_weights
from automl_core.errors import ConfigError
from automl_core.model.datasets import split_arrays
from automl_core.model.models import build_autoencoder, check_fits, estimate_parameters
from automl_core.model.space import PARAMETERS, ModelConfig, SearchSpace

OPTIONS = [
    {"downsample": "avg-pool"},
    {"downsample": "stride"},
    {"upsample": "transpose"},
    {"downsample": "stride", "upsample": "transpose"},
    {"block": "strided", "downsample": "avg-pool"},  # strided wins: stride / transpose
    {"batch_norm": True},
    {"residual": True},
    {"residual": True, "downsample": "stride", "batch_norm": True},
    {"attention": True},
    {"dropout": 0.2},
    {"bottleneck": "conv", "latent_dim": 48},
    {"kernel_size": 5, "activation": "gelu"},
    {"kernel_size": 7, "activation": "swish", "residual": True},
    {"activation": "leaky_relu", "attention": True, "bottleneck": "conv", "latent_dim": 48},
    {"convolution": "dilated", "kernel_size": 5},
    {"convolution": "dilated", "downsample": "stride", "residual": True},
    {"convolution": "separable"},
    {"convolution": "separable", "downsample": "stride", "upsample": "transpose"},
    {"convolution": "separable", "residual": True, "batch_norm": True, "kernel_size": 5},
]


def _config(**options) -> ModelConfig:
    values = {"num_conv_layers": 2, "filters": 4, "latent_dim": 8, "batch_size": 16}
    values.update(options)
    return ModelConfig(**values)


@pytest.mark.parametrize(
    "options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items())
)
class TestEveryOption:
    def test_builds_with_the_estimated_size_and_keeps_the_image_shape(self, options):
        for shape in ((16, 16, 1), (15, 22, 3)):
            config = _config(**options)
            models = build_autoencoder(config, shape)
            assert models.autoencoder.output_shape[1:] == shape
            assert models.encoder.output_shape[1:] == (config.latent_dim,)
            assert estimate_parameters(config, shape) == models.autoencoder.count_params()

    def test_filters_activations_and_weights_are_inspectable(self, options):
        config = _config(**options)
        model = build_autoencoder(config, (16, 16, 1)).autoencoder
        filters = conv_filters(model, include_decoder=True)
        assert filters[0].layer == "encoder_conv_1"
        assert filters[0].kernels.shape[:2] == (config.kernel_size, config.kernel_size)
        activations = ActivationProbe(model)(np.zeros((16, 16, 1), np.float32))
        names = [a.layer for a in activations]
        assert names[0] == "encoder_conv_1" and "latent" in names
        assert names[-1] == "reconstruction"
        if config.residual:
            assert "encoder_add_1" in names
        if config.attention:
            assert "bottleneck_attention" in names
        assert layer_weights(model)


@pytest.mark.slow
@pytest.mark.parametrize("options", OPTIONS[::3], ids=lambda o: ",".join(o))
def test_trains_one_epoch(options):
    from automl_core.model.training import train_autoencoder

    x = np.random.default_rng(0).random((40, 16, 16, 1)).astype(np.float32)
    data = split_arrays("noise", x, None, None, seed=0)
    trained = train_autoencoder(_config(**options), data, max_epochs=1, seed=0)
    assert trained.metrics.epochs == 1 and np.isfinite(trained.metrics.val_mse)


class TestImpossibleCombinations:
    def test_attention_on_a_one_by_one_bottleneck_names_both(self):
        with pytest.raises(ConfigError, match="attention=true .* num_conv_layers=3 shrinks"):
            check_fits(_config(num_conv_layers=3, attention=True), (8, 8, 1))

    def test_conv_bottleneck_needs_a_multiple_of_its_positions(self):
        with pytest.raises(ConfigError, match="bottleneck=conv .* 4x4 .* got latent_dim=10"):
            check_fits(_config(bottleneck="conv", latent_dim=10), (16, 16, 1))

    def test_kernel_larger_than_the_image(self):
        with pytest.raises(ConfigError, match="kernel_size=7 is larger than the 4x4 image"):
            check_fits(_config(num_conv_layers=1, kernel_size=7), (4, 4, 1))

    @pytest.mark.parametrize("value", [-0.1, 0.95, "half"])
    def test_dropout_out_of_range(self, value):
        with pytest.raises(ConfigError, match="dropout must"):
            SearchSpace.from_dict({"dropout": [value]})

    def test_unknown_downsampling_lists_the_registry(self):
        with pytest.raises(
            ConfigError, match="unknown downsample 'unpool'; expected one of max-pool"
        ):
            SearchSpace.from_dict({"downsample": ["unpool"]})

    def test_boolean_options_take_only_booleans(self):
        with pytest.raises(
            ConfigError, match="residual must be true or false, got residual='yes'"
        ):
            SearchSpace.from_dict({"residual": ["yes"]})


def test_every_new_parameter_is_a_row_of_the_table():
    for name in ("downsample", "upsample", "batch_norm", "residual", "attention", "dropout",
                 "bottleneck"):  # fmt: skip
        assert name in PARAMETERS


def test_defaults_build_the_same_model_as_before_the_options():
    """Old studies' configurations (without the new keys) rebuild the same architecture."""
    old = ModelConfig.from_dict({"num_conv_layers": 2, "filters": 16, "latent_dim": 16})
    assert build_autoencoder(old, (28, 28, 1)).autoencoder.count_params() == 33153


def test_a_separable_layer_shows_its_equivalent_full_kernel():
    """Filters of a depthwise-separable convolution: depthwise x pointwise, as one kernel."""
    import keras

    model = build_autoencoder(_config(convolution="separable"), (16, 16, 1)).autoencoder
    layer = model.get_layer("encoder").get_layer("encoder_conv_2")
    depthwise, pointwise, _ = (np.asarray(w) for w in layer.get_weights())
    kernels = conv_filters(model)[1].kernels
    assert kernels.shape == (3, 3, 4, 4)
    image = np.random.default_rng(0).random((1, 6, 6, 4)).astype(np.float32)
    full = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)
    full.build(image.shape)
    full.set_weights([kernels])
    expected = (
        keras.ops.convert_to_numpy(keras.ops.depthwise_conv(image, depthwise, 1, "same"))
        @ pointwise[0, 0]
    )
    assert np.allclose(keras.ops.convert_to_numpy(full(image)), expected, atol=1e-5)


def test_dilated_convolutions_cost_more_reach_not_weights():
    plain = build_autoencoder(_config(), (16, 16, 1)).autoencoder
    dilated = build_autoencoder(_config(convolution="dilated"), (16, 16, 1)).autoencoder
    assert plain.count_params() == dilated.count_params()
    layer = dilated.get_layer("encoder").get_layer("encoder_conv_1")
    assert tuple(layer.dilation_rate) == (2, 2)


def test_an_unknown_convolution_lists_the_registry():
    with pytest.raises(ConfigError, match="standard.*dilated.*separable"):
        SearchSpace.from_dict({"convolution": ["wavelet"]})
