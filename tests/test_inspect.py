"""Core inspection: filters, activations, encode/decode, user images, reconstruction tables."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from PIL import Image

from automl_core.analysis import charts
from automl_core.analysis.inspect import (
    ActivationProbe,
    compression_curve,
    conv_filters,
    decode,
    encode,
    filters_frame,
    filters_json,
    image_from_bytes,
    image_from_canvas,
    layer_parameters,
    layer_weights,
    scores_frame,
    worst_reconstructions,
)
from automl_core.errors import ConfigError, DatasetError
from automl_core.model.metrics import reconstruction_scores
from automl_core.model.models import build_autoencoder
from automl_core.model.space import ModelConfig


@pytest.fixture(scope="module", params=["pool", "strided"])
def model(request):
    """A tiny untrained 2-layer autoencoder on 8x8x1 inputs (both block kinds)."""
    config = ModelConfig(num_conv_layers=2, filters=3, latent_dim=4, block=request.param)
    return build_autoencoder(config, (8, 8, 1)).autoencoder


@pytest.fixture(scope="module")
def rgb_model():
    """A tiny autoencoder on 10x10x3 inputs (cropping decoder)."""
    return build_autoencoder(
        ModelConfig(num_conv_layers=2, filters=2, latent_dim=3), (10, 10, 3)
    ).autoencoder


def _png(array: np.ndarray, mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


class TestFilters:
    def test_extracted_filters_equal_kernel_weights(self, model):
        filters = conv_filters(model, include_decoder=True)
        encoder = model.get_layer("encoder")
        decoder = model.get_layer("decoder")
        names = [f.layer for f in filters]
        assert names[:2] == ["encoder_conv_1", "encoder_conv_2"]
        assert names[-1] == "reconstruction"
        for f in filters:
            part = encoder if f.layer.startswith("encoder") else decoder
            kernel, bias = part.get_layer(f.layer).get_weights()
            if part.get_layer(f.layer).__class__.__name__ == "Conv2DTranspose":
                kernel = np.swapaxes(kernel, 2, 3)
            np.testing.assert_array_equal(f.kernels, kernel)
            np.testing.assert_array_equal(f.bias, bias)

    def test_encoder_only_by_default(self, model):
        assert [f.layer for f in conv_filters(model)] == ["encoder_conv_1", "encoder_conv_2"]

    def test_frame_and_json_hold_every_value(self, model):
        filters = conv_filters(model)
        frame = filters_frame(filters)
        assert len(frame) == sum(f.kernels.size for f in filters)
        first = filters[0]
        row = frame[
            (frame.layer == first.layer)
            & (frame["filter"] == 2)
            & (frame.row == 1)
            & (frame.col == 0)
            & (frame.input_channel == 1)
        ]
        assert row["value"].item() == pytest.approx(float(first.kernels[1, 0, 0, 1]))
        payload = json.loads(filters_json(filters))
        assert payload["encoder_conv_2"]["shape"] == list(filters[1].kernels.shape)
        # filters[f][channel] is the k x k matrix
        np.testing.assert_allclose(
            payload["encoder_conv_2"]["filters"][1][2], filters[1].kernels[:, :, 2, 1], rtol=1e-6
        )

    def test_parameters_sum_to_model_total(self, model):
        params = layer_parameters(model)
        assert params["parameters"].sum() == model.count_params()
        assert {"encoder_conv_1", "latent", "reconstruction"} <= set(params["layer"])

    def test_weights_for_histograms(self, model):
        weights = layer_weights(model, include_decoder=True)
        assert {"encoder_conv_1", "latent", "decoder_dense", "reconstruction"} <= set(weights)

    @pytest.mark.parametrize("channel", [0, "mean"])
    def test_figure_one_heatmap_per_filter_centred(self, model, channel):
        layer = conv_filters(model)[1]
        fig = charts.filters_figure(layer, channel)
        heatmaps = [t for t in fig.data if isinstance(t, go.Heatmap)]
        assert len(heatmaps) == layer.num_filters
        assert all(t.zmid == 0 and t.zmin == -t.zmax for t in heatmaps)

    def test_rgb_composite(self, rgb_model, model):
        layer = conv_filters(rgb_model)[0]
        fig = charts.filters_figure(layer, "rgb")
        assert len([t for t in fig.data if isinstance(t, go.Image)]) == layer.num_filters
        with pytest.raises(
            ConfigError, match="RGB composite needs 3 input channels; encoder_conv_1 has 1"
        ):
            charts.filters_figure(conv_filters(model)[0], "rgb")
        with pytest.raises(ConfigError, match="channel=7"):
            charts.filters_figure(layer, 7)


class TestActivations:
    def test_shapes_per_layer(self, model):
        probe = ActivationProbe(model)
        image = np.random.default_rng(0).random((8, 8, 1), dtype=np.float32)
        acts = {a.layer: a for a in probe(image)}
        block = "strided" if "encoder_down_1" not in acts else "pool"
        assert acts["encoder_conv_1"].values.shape == (
            (4, 4, 3) if block == "strided" else (8, 8, 3)
        )
        if block == "pool":
            assert acts["encoder_down_1"].values.shape == (4, 4, 3)
            assert acts["encoder_down_2"].values.shape == (2, 2, 3)
            assert acts["decoder_up_2"].values.shape == (4, 4, 3)
        assert acts["latent"].values.shape == (4,)
        assert acts["decoder_reshape"].values.shape == (2, 2, 3)
        assert acts["decoder_conv_1"].values.shape == (8, 8, 3)
        assert acts["reconstruction"].values.shape == (8, 8, 1)
        assert [a.part for a in probe(image)][-1] == "decoder"
        for a in acts.values():
            fig = charts.activation_figure(a)
            assert isinstance(fig, go.Figure)

    def test_reconstruction_equals_model_output(self, model):
        image = np.random.default_rng(1).random((8, 8, 1), dtype=np.float32)
        acts = ActivationProbe(model)(image)
        expected = np.asarray(model(image[None], training=False))[0]
        np.testing.assert_allclose(acts[-1].values, expected, atol=1e-6)

    def test_crop_layer_probed(self, rgb_model):
        acts = {a.layer: a for a in ActivationProbe(rgb_model)(np.zeros((10, 10, 3), np.float32))}
        assert acts["decoder_crop"].values.shape == (10, 10, 2)

    def test_wrong_shape_refused(self, model):
        with pytest.raises(ConfigError, match=r"shape \(N, 8, 8, 1\), got \(1, 9, 9, 1\)"):
            ActivationProbe(model)(np.zeros((9, 9, 1), np.float32))


class TestEncodeDecode:
    def test_decode_encode_equals_model_output(self, model):
        x = np.random.default_rng(2).random((5, 8, 8, 1), dtype=np.float32)
        np.testing.assert_allclose(
            decode(model, encode(model, x, batch_size=2)),
            np.asarray(model(x, training=False)),
            atol=1e-6,
        )

    def test_decode_checks_latent_size(self, model):
        with pytest.raises(ConfigError, match=r"latents must have shape \(N, 4\)"):
            decode(model, np.zeros((1, 5)))


class TestUserImages:
    def test_grayscale_png_resized(self):
        data = _png(np.full((30, 20), 255, np.uint8), "L")
        image = image_from_bytes(data, (8, 8, 1))
        assert image.shape == (8, 8, 1) and image.dtype == np.float32
        assert image.max() == pytest.approx(1.0)

    def test_rgb_converted_to_grayscale_and_back(self):
        red = np.zeros((10, 10, 3), np.uint8)
        red[..., 0] = 255
        gray = image_from_bytes(_png(red, "RGB"), (8, 8, 1))
        assert gray.shape == (8, 8, 1) and 0.2 < gray.mean() < 0.35  # luminance of pure red
        rgb = image_from_bytes(_png(np.full((10, 10), 128, np.uint8), "L"), (4, 4, 3))
        assert rgb.shape == (4, 4, 3)
        np.testing.assert_allclose(rgb[..., 0], rgb[..., 2])

    def test_rgba_alpha_dropped(self):
        rgba = np.zeros((6, 6, 4), np.uint8)
        assert image_from_bytes(_png(rgba, "RGBA"), (8, 8, 3)).shape == (8, 8, 3)

    def test_not_an_image(self):
        with pytest.raises(DatasetError, match="not an image"):
            image_from_bytes(b"hello, this is text", (8, 8, 1))
        with pytest.raises(DatasetError, match="empty"):
            image_from_bytes(b"", (8, 8, 1))

    def test_too_many_bytes_or_pixels(self):
        data = _png(np.zeros((300, 300), np.uint8), "L")
        with pytest.raises(DatasetError, match="at most 100 are accepted"):
            image_from_bytes(data, (8, 8, 1), max_bytes=100)
        with pytest.raises(DatasetError, match=r"300x300 = 90,000 pixels"):
            image_from_bytes(data, (8, 8, 1), max_pixels=10_000)

    def test_unsupported_model_channels(self):
        with pytest.raises(ConfigError, match="2 input channels"):
            image_from_bytes(_png(np.zeros((4, 4), np.uint8), "L"), (8, 8, 2))

    def test_canvas(self):
        with pytest.raises(DatasetError, match="blank"):
            image_from_canvas(None, (8, 8, 1))
        with pytest.raises(DatasetError, match="blank"):
            image_from_canvas(np.zeros((50, 50, 4), np.uint8), (8, 8, 1))
        drawing = np.zeros((50, 50, 4), np.uint8)
        drawing[10:40, 20:30] = 255
        image = image_from_canvas(drawing, (8, 8, 1))
        assert image.shape == (8, 8, 1) and image.max() > 0.5 and image[0, 0, 0] == 0

    def test_canvas_drawing_in_a_corner_is_centred(self):
        drawing = np.zeros((100, 100, 4), np.uint8)
        drawing[2:30, 2:12] = 255
        image = image_from_canvas(drawing, (28, 28, 1))[..., 0]
        rows, cols = np.nonzero(image > 0.5)
        assert 11 <= rows.mean() <= 16 and 11 <= cols.mean() <= 16
        assert rows.max() - rows.min() >= 16  # strokes fill about 20 of 28 pixels
        raw = image_from_canvas(drawing, (28, 28, 1), center=False)[..., 0]
        assert np.nonzero(raw > 0.5)[0].mean() < 8


class TestReconstructionTables:
    def test_worst_first(self):
        x = np.zeros((4, 8, 8, 1), np.float32)
        y = x.copy()
        y[2] += 0.5
        y[0] += 0.1
        scores = reconstruction_scores(x, y)
        worst = worst_reconstructions(scores, 2)
        assert list(worst["index"]) == [2, 0]
        assert list(scores_frame(scores, np.arange(4))["label"]) == [0, 1, 2, 3]
        with pytest.raises(ConfigError, match="count=0"):
            worst_reconstructions(scores, 0)

    def test_compression_curve_best_per_latent(self):
        trials = pd.DataFrame(
            {
                "trial": [0, 1, 2, 3],
                "state": ["COMPLETE", "COMPLETE", "COMPLETE", "FAIL"],
                "latent_dim": [4, 4, 8, 2],
                "test_psnr": [10.0, 12.0, 15.0, np.nan],
                "compression_ratio": [16.0, 16.0, 8.0, 32.0],
            }
        )
        curve = compression_curve(trials)
        assert list(curve["latent_dim"]) == [4, 8]
        assert list(curve["trial"]) == [1, 2] and list(curve["trials"]) == [2, 1]
        assert compression_curve(trials.iloc[3:]).empty
        fig = charts.compression_curve_figure(curve, current_trial=2)
        assert len(fig.data) == 2
