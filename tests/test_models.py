"""The autoencoder builder: shapes for any image size, the layer-name contract."""

from __future__ import annotations

import numpy as np
import pytest

from automl_core.errors import ConfigError
from automl_core.model.models import build_autoencoder, encoder_conv_layers
from automl_core.model.space import ModelConfig


@pytest.mark.parametrize("block", ["pool", "strided"])
@pytest.mark.parametrize(
    "shape, depth", [((28, 28, 1), 2), ((8, 8, 1), 3), ((32, 32, 3), 2), ((13, 17, 1), 2)]
)
def test_output_matches_input_shape(shape, depth, block):
    config = ModelConfig(num_conv_layers=depth, filters=4, latent_dim=6, block=block)
    models = build_autoencoder(config, shape)
    x = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    out = models.autoencoder.predict(x, verbose=0)
    assert out.shape == x.shape and 0.0 <= out.min() and out.max() <= 1.0
    assert models.encoder.output_shape == (None, 6)
    assert models.decoder.input_shape == (None, 6)


def test_layer_names_are_the_contract():
    models = build_autoencoder(ModelConfig(num_conv_layers=2, filters=4), (28, 28, 1))
    assert [layer.name for layer in encoder_conv_layers(models.autoencoder)] == [
        "encoder_conv_1",
        "encoder_conv_2",
    ]
    names = {layer.name for layer in models.encoder.layers}
    assert {"encoder_down_1", "encoder_flatten", "latent"} <= names
    names = {layer.name for layer in models.decoder.layers}
    assert {"decoder_dense", "decoder_reshape", "decoder_conv_1", "reconstruction"} <= names


def test_decode_of_encode_is_the_autoencoder():
    models = build_autoencoder(ModelConfig(num_conv_layers=1, filters=4), (8, 8, 1))
    x = np.random.default_rng(1).random((3, 8, 8, 1), dtype=np.float32)
    chained = models.decoder.predict(models.encoder.predict(x, verbose=0), verbose=0)
    np.testing.assert_allclose(chained, models.autoencoder.predict(x, verbose=0), atol=1e-6)


def test_depth_too_large():
    with pytest.raises(ConfigError, match="num_conv_layers=4 would shrink the 8x8 image"):
        build_autoencoder(ModelConfig(num_conv_layers=4), (8, 8, 1))
