"""Looking inside a trained autoencoder: filters, activations, encode / decode, reconstructions.

Everything here returns plain arrays, dataclasses or DataFrames; ``charts`` turns
them into Plotly figures and ``latent`` projects latent vectors.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from automl_core import limits
from automl_core.errors import ConfigError, DatasetError
from automl_core.model.datasets import image_to_unit_array
from automl_core.model.metrics import ReconstructionScores, reconstruction_scores


@dataclass(frozen=True)
class LayerFilters:
    """The learned kernels of one convolution layer.

    Attributes:
        layer: The layer's name (``encoder_conv_1``, ...).
        kernels: Weights of shape (k, k, input channels, filters).
        bias: One bias per filter.
    """

    layer: str
    kernels: np.ndarray
    bias: np.ndarray

    @property
    def num_filters(self) -> int:
        """Filters (output channels) of the layer."""
        return int(self.kernels.shape[-1])

    @property
    def num_input_channels(self) -> int:
        """Input channels each filter reads."""
        return int(self.kernels.shape[-2])


def encoder_filters(model) -> list[LayerFilters]:
    """The kernels of every encoder convolution, first layer first.

    Args:
        model: An autoencoder from ``automl_core.model.models.build_autoencoder`` or loaded from a
            trial, or its encoder.

    Returns:
        One :class:`LayerFilters` per encoder convolution.
    """
    from automl_core.model.models import encoder_conv_layers  # Keras only where a model is read

    out = []
    for layer in encoder_conv_layers(model):
        out.append(LayerFilters(layer.name, *_kernel_and_bias(layer)))
    return out


def format_filters(
    filters: list[LayerFilters], all_channels: bool = False, decimals: int = 4
) -> str:
    """Formats kernels as labelled matrices: ``Layer_1:``, ``Filter 1:``, one k x k matrix.

    Layers with one input channel (or ``all_channels``) print one matrix per input channel;
    deeper layers print each filter's kernel averaged over its input channels, and say so.

    Args:
        filters: From :func:`encoder_filters`.
        all_channels: Print every input channel of every layer. Defaults to False.
        decimals: Digits after the point. Defaults to 4.

    Returns:
        The text.
    """
    lines = []
    width = decimals + 4
    for index, layer in enumerate(filters, start=1):
        channels = layer.num_input_channels
        per_channel = all_channels or channels <= 3
        note = "" if per_channel or channels == 1 else f" (mean over {channels} input channels)"
        lines.append(
            f"Layer_{index}: {layer.layer}, {layer.num_filters} filters of "
            f"{layer.kernels.shape[0]}x{layer.kernels.shape[1]}{note}"
        )
        for f in range(layer.num_filters):
            kernel = layer.kernels[..., f]
            views = (
                [
                    (f" (input channel {c + 1})" if channels > 1 else "", kernel[:, :, c])
                    for c in range(channels)
                ]
                if per_channel
                else [("", kernel.mean(axis=2))]
            )
            for label, matrix in views:
                lines.append(f"Filter {f + 1}{label}:")
                for row in matrix:
                    lines.append("[" + " ".join(f"{v:{width}.{decimals}f}" for v in row) + "]")
        lines.append("")
    return "\n".join(lines)


# --- every convolution, downloads, parameter counts -------------------------------------------


def _conv_order(name: str) -> tuple[int, int]:
    """Sort key: encoder convolutions by index, then the decoder's from input to output."""
    if name == "reconstruction":
        return (2, 0)
    index = int(name.rsplit("_", 1)[1])
    return (0, index) if name.startswith("encoder_") else (1, -index)


def _kernel_and_bias(layer) -> tuple[np.ndarray, np.ndarray]:
    """A convolution's (k, k, in, out) kernel and its bias; a depthwise-separable one gives
    its equivalent full kernel (each channel's depthwise filter times the pointwise mix)."""
    weights = [np.asarray(w) for w in layer.get_weights()]
    if len(weights) == 3:
        depthwise, pointwise, bias = weights
        return depthwise[:, :, :, :1] * pointwise[0, 0][None, None], bias
    kernel, bias = weights
    return kernel, bias


def conv_filters(model, include_decoder: bool = False) -> list[LayerFilters]:
    """The kernels of every convolution, encoder first, optionally the decoder's too.

    Args:
        model: An autoencoder from ``automl_core.model.models.build_autoencoder`` or a trial.
        include_decoder: Also return ``decoder_conv_i`` and ``reconstruction``. Transposed
            convolutions store (k, k, filters, input channels); they are returned in the
            (k, k, input channels, filters) layout of ordinary convolutions. Defaults to False.

    Returns:
        One :class:`LayerFilters` per convolution, in the order data flows through them.
    """
    out = encoder_filters(model)
    if include_decoder:
        import keras

        decoder = model.get_layer("decoder")
        convs = [
            layer
            for layer in decoder.layers
            if (layer.name.startswith("decoder_conv_") or layer.name == "reconstruction")
            # with a PCA path, "reconstruction" is the weightless sum of the two paths
            and layer.weights
        ]
        for layer in sorted(convs, key=lambda layer: _conv_order(layer.name)):
            kernel, bias = _kernel_and_bias(layer)
            if isinstance(layer, keras.layers.Conv2DTranspose):
                kernel = np.swapaxes(kernel, 2, 3)
            out.append(LayerFilters(layer.name, kernel, bias))
    return out


def filters_frame(filters: list[LayerFilters]) -> pd.DataFrame:
    """Every kernel value as one row, for a CSV download.

    Args:
        filters: From :func:`conv_filters`.

    Returns:
        Columns ``layer``, ``filter``, ``input_channel``, ``row``, ``col``, ``value``
        (1-based filter and channel numbers, 0-based row and column).
    """
    parts = []
    for layer in filters:
        k_h, k_w, channels, count = layer.kernels.shape
        row, col, channel, number = np.meshgrid(
            np.arange(k_h), np.arange(k_w), np.arange(channels), np.arange(count), indexing="ij"
        )
        parts.append(
            pd.DataFrame(
                {
                    "layer": layer.layer,
                    "filter": number.ravel() + 1,
                    "input_channel": channel.ravel() + 1,
                    "row": row.ravel(),
                    "col": col.ravel(),
                    "value": layer.kernels.ravel(),
                }
            )
        )
    frame = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["layer", "filter", "input_channel", "row", "col", "value"])
    )
    return frame.sort_values(
        ["layer", "filter", "input_channel", "row", "col"],
        kind="stable",
        key=lambda s: s.map(_conv_order) if s.name == "layer" else s,
    ).reset_index(drop=True)


def filters_json(filters: list[LayerFilters]) -> str:
    """The kernels as JSON: ``{layer: {"bias": [...], "filters": [[k x k per channel], ...]}}``."""
    payload = {
        layer.layer: {
            "shape": list(layer.kernels.shape),
            "bias": layer.bias.tolist(),
            "filters": [
                np.moveaxis(layer.kernels[..., f], 2, 0).tolist() for f in range(layer.num_filters)
            ],
        }
        for layer in filters
    }
    return json.dumps(payload, indent=1)


def layer_parameters(model) -> pd.DataFrame:
    """Parameter counts of every layer of the encoder and the decoder.

    Args:
        model: An autoencoder.

    Returns:
        Columns ``part`` (encoder / decoder), ``layer``, ``type``, ``output_shape``,
        ``parameters``; layers without weights included with 0.
    """
    rows = []
    for part in ("encoder", "decoder"):
        for layer in model.get_layer(part).layers:
            if layer.__class__.__name__ == "InputLayer":
                continue
            rows.append(
                {
                    "part": part,
                    "layer": layer.name,
                    "type": layer.__class__.__name__,
                    "output_shape": str(tuple(layer.output.shape[1:])),
                    "parameters": int(layer.count_params()),
                }
            )
    return pd.DataFrame(rows)


def layer_weights(model, include_decoder: bool = False) -> dict[str, np.ndarray]:
    """Every kernel weight of each convolution (and dense layer), flattened, for histograms."""
    out = {f.layer: f.kernels.ravel() for f in conv_filters(model, include_decoder)}
    # the bottleneck's weights: a dense layer, or 1x1 convolutions in a convolutional one
    names = (("encoder", "latent"), ("encoder", "encoder_code"))
    names += (("decoder", "decoder_dense"), ("decoder", "decoder_code")) if include_decoder else ()
    for part, name in names:
        layers = {layer.name: layer for layer in model.get_layer(part).layers}
        if name in layers and layers[name].get_weights():
            out[name] = np.asarray(layers[name].get_weights()[0]).ravel()
    return out


# --- images a user brings ------------------------------------------------------------------


def _fit_to_model(image, input_shape: tuple[int, int, int]) -> np.ndarray:
    """Converts a PIL image to the model's channels and size, as float32 in [0, 1]."""
    from PIL import Image

    height, width, channels = input_shape
    if channels not in (1, 3):
        raise ConfigError(
            f"models with {channels} input channels take no uploaded images; "
            "expected 1 (grayscale) or 3 (RGB)"
        )
    return image_to_unit_array(image, channels, (width, height), Image.Resampling.LANCZOS)


def image_from_bytes(
    data: bytes,
    input_shape: tuple[int, int, int],
    max_bytes: int | None = None,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Decodes an uploaded image file into one model input.

    Colour is converted to what the model reads: RGB to grayscale by luminance, grayscale to
    RGB by repeating the channel; an alpha channel is dropped; 16-bit grayscale is scaled by
    its real bit depth. The image is resized (not cropped) to the model's input. The pixel
    count is checked from the header, before the image is decoded.

    Args:
        data: The file's bytes (PNG, JPEG, ...).
        input_shape: The model's (H, W, C).
        max_bytes: Largest accepted file. Defaults to the ``max_activation_upload_bytes``
            limit (10 MiB).
        max_pixels: Largest accepted width x height. Defaults to the
            ``max_activation_upload_pixels`` limit (4096 x 4096).

    Returns:
        float32 array (H, W, C) in [0, 1].

    Raises:
        DatasetError: Not an image, or too large.
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    max_bytes = limits.get("max_activation_upload_bytes") if max_bytes is None else max_bytes
    max_pixels = limits.get("max_activation_upload_pixels") if max_pixels is None else max_pixels
    if len(data) == 0:
        raise DatasetError("the uploaded file is empty; expected a PNG or JPEG image")
    if len(data) > max_bytes:
        raise DatasetError(
            f"the uploaded file has {len(data):,} bytes; at most {max_bytes:,} are accepted"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        with image:
            pixels = image.width * image.height
            if pixels > max_pixels:
                raise DatasetError(
                    f"the uploaded image is {image.width}x{image.height} = {pixels:,} pixels; "
                    f"at most {max_pixels:,} are accepted"
                )
            image.load()
            return _fit_to_model(image, input_shape)
    except Image.DecompressionBombError as exc:
        raise DatasetError(
            f"the uploaded image has more pixels than Pillow opens safely ({exc}); "
            f"at most {max_pixels:,} are accepted"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, (ConfigError, DatasetError)):  # ours, already clear
            raise
        raise DatasetError(
            f"the uploaded file is not an image PIL can read ({exc}); expected a PNG or JPEG"
        ) from exc


def image_from_canvas(
    rgba: np.ndarray | None, input_shape: tuple[int, int, int], center: bool = True
) -> np.ndarray:
    """Turns a drawing (RGBA, strokes painted on a transparent or black background) into input.

    Args:
        rgba: The canvas image, (H, W, 4) uint8, or None before anything was drawn.
        input_shape: The model's (H, W, C).
        center: Crop to the strokes and centre them with a margin, as MNIST digits are
            (a digit drawn in a corner still reads as that digit). Defaults to True.

    Returns:
        float32 array (H, W, C) in [0, 1]: bright strokes on black, like MNIST.

    Raises:
        DatasetError: The canvas is blank.
    """
    from PIL import Image

    if rgba is None or rgba.ndim != 3 or rgba.shape[-1] != 4:
        raise DatasetError("the canvas is blank: draw something first")
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha
    if rgb.max() <= 0:
        raise DatasetError("the canvas is blank: draw something first")
    if center:
        rgb = _center_like_mnist(rgb)
    return _fit_to_model(Image.fromarray(rgb.clip(0, 255).astype(np.uint8), "RGB"), input_shape)


def _center_like_mnist(rgb: np.ndarray) -> np.ndarray:
    """Crops to the strokes and pads them into a square, strokes filling 20/28 of the side."""
    rows, cols = np.nonzero(rgb.max(axis=-1))
    crop = rgb[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    side = int(np.ceil(max(crop.shape[:2]) * 28 / 20))
    out = np.zeros((side, side, 3), rgb.dtype)
    top, left = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
    out[top : top + crop.shape[0], left : left + crop.shape[1]] = crop
    return out


# --- activations, encode, decode -----------------------------------------------------------


@dataclass(frozen=True)
class LayerActivation:
    """The output of one layer for one image.

    Attributes:
        part: ``encoder`` or ``decoder``.
        layer: The layer's name.
        values: (H, W, channels) for feature maps, (units,) for vectors.
    """

    part: str
    layer: str
    values: np.ndarray

    @property
    def is_map(self) -> bool:
        """Whether the activation is a stack of 2-D maps."""
        return self.values.ndim == 3


class ActivationProbe:
    """Computes every layer's output for one image in two model calls (encoder, decoder).

    Build it once per model (it wraps the encoder and decoder into multi-output models) and
    call it per image.
    """

    def __init__(self, model) -> None:
        """Builds the probe models.

        Args:
            model: An autoencoder with ``encoder`` and ``decoder`` sub-models.
        """
        import keras

        self.encoder = model.get_layer("encoder")
        self.decoder = model.get_layer("decoder")
        self.input_shape = tuple(int(d) for d in self.encoder.input.shape[1:])
        self._enc_layers = [
            layer
            for layer in self.encoder.layers
            if layer.name.startswith(("encoder_conv_", "encoder_add_", "encoder_down_"))
            or layer.name in ("bottleneck_attention", "latent")
        ]
        self._dec_layers = [
            layer
            for layer in self.decoder.layers
            if layer.name.startswith(
                ("decoder_up_", "decoder_conv_", "decoder_add_", "decoder_crop")
            )
            or layer.name in ("decoder_reshape", "reconstruction")
        ]
        self._enc = keras.Model(self.encoder.input, [layer.output for layer in self._enc_layers])
        self._dec = keras.Model(self.decoder.input, [layer.output for layer in self._dec_layers])

    def __call__(self, image: np.ndarray) -> list[LayerActivation]:
        """Every probed layer's activation for one image.

        Args:
            image: (H, W, C) in [0, 1], the model's input shape.

        Returns:
            Encoder layers first (the last one is ``latent``), then decoder layers (the last
            one is ``reconstruction``).

        Raises:
            ConfigError: The image does not have the model's input shape.
        """
        image = check_images(image[None], self.input_shape)
        enc = [np.asarray(v)[0] for v in _as_list(self._enc(image, training=False))]
        dec = [np.asarray(v)[0] for v in _as_list(self._dec(enc[-1][None], training=False))]
        pairs = [("encoder", layer, v) for layer, v in zip(self._enc_layers, enc, strict=True)]
        pairs += [("decoder", layer, v) for layer, v in zip(self._dec_layers, dec, strict=True)]
        return [LayerActivation(part, layer.name, v) for part, layer, v in pairs]


def _as_list(outputs) -> list:
    """A model's outputs as a list (a one-output model returns a bare tensor)."""
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def check_images(images: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """Checks a batch against the model's input shape and returns it as float32.

    Raises:
        ConfigError: The shape differs.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(input_shape):
        raise ConfigError(
            f"images must have shape (N, {', '.join(map(str, input_shape))}), got {images.shape}"
        )
    return images


def encode(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The latent vectors of a batch of images.

    Args:
        model: An autoencoder.
        images: (N, H, W, C) in [0, 1].
        batch_size: Images per call. Defaults to 256.

    Returns:
        (N, latent_dim) float32.
    """
    encoder = model.get_layer("encoder")
    images = check_images(images, tuple(encoder.input.shape[1:]))
    return _batched(encoder, images, batch_size)


def decode(model, latents: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Images decoded from latent vectors.

    Args:
        model: An autoencoder.
        latents: (N, latent_dim).
        batch_size: Vectors per call. Defaults to 256.

    Returns:
        (N, H, W, C) float32 in [0, 1].

    Raises:
        ConfigError: The vectors do not have the latent size.
    """
    decoder = model.get_layer("decoder")
    latent_dim = int(decoder.input.shape[-1])
    latents = np.asarray(latents, dtype=np.float32)
    if latents.ndim != 2 or latents.shape[1] != latent_dim:
        raise ConfigError(f"latents must have shape (N, {latent_dim}), got {latents.shape}")
    return _batched(decoder, latents, batch_size)


def _batched(part, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    """Runs a model over inputs in batches by direct calls (faster than predict when small)."""
    outs = [
        np.asarray(part(inputs[i : i + batch_size], training=False))
        for i in range(0, len(inputs), batch_size)
    ]
    if not outs:
        return np.zeros((0, *part.output.shape[1:]), np.float32)
    return np.concatenate(outs).astype(np.float32)


# --- reconstructions ------------------------------------------------------------------------


def worst_reconstructions(scores: ReconstructionScores, count: int = 10) -> pd.DataFrame:
    """The images reconstructed worst (highest MSE), an anomaly ranking.

    Args:
        scores: Per-image scores from ``automl_core.model.metrics.reconstruction_scores``.
        count: How many to return. Defaults to 10.

    Returns:
        Columns ``rank``, ``index`` (into the scored images), ``mse``, ``psnr``, ``ssim``.
    """
    if count < 1:
        raise ConfigError(f"count must be a positive integer, got count={count}")
    order = np.argsort(-scores.mse, kind="stable")[:count]
    return pd.DataFrame(
        {
            "rank": np.arange(1, len(order) + 1),
            "index": order,
            "mse": scores.mse[order],
            "psnr": scores.psnr[order],
            "ssim": scores.ssim[order],
        }
    )


def scores_frame(scores: ReconstructionScores, labels: np.ndarray | None = None) -> pd.DataFrame:
    """Per-image scores as a table (``index``, ``mse``, ``psnr``, ``ssim``, ``label``)."""
    frame = pd.DataFrame(
        {
            "index": np.arange(len(scores.mse)),
            "mse": scores.mse,
            "psnr": scores.psnr,
            "ssim": scores.ssim,
        }
    )
    if labels is not None:
        frame["label"] = labels
    return frame


def compression_curve(trials: pd.DataFrame, pca: dict[int, float] | None = None) -> pd.DataFrame:
    """Best test PSNR per latent size over a study's finished trials, with PCA's beside it.

    Args:
        trials: From ``automl_core.storage.results.trials_frame``.
        pca: PCA's test PSNR by latent size, for sizes whose trials have none stored
            (studies from before the baseline was recorded). Defaults to none.

    Returns:
        Columns ``latent_dim``, ``best_psnr``, ``trial`` (the trial reaching it),
        ``compression_ratio``, ``trials`` (finished trials with that size) and ``pca_psnr``
        (PCA with ``latent_dim`` components on the same split, NaN where unknown); sorted
        by latent size; empty when no trial finished with a PSNR.
    """
    columns = ["latent_dim", "best_psnr", "trial", "compression_ratio", "trials", "pca_psnr"]
    if trials.empty or "latent_dim" not in trials or "test_psnr" not in trials:
        return pd.DataFrame(columns=columns)
    done = trials[(trials["state"] == "COMPLETE") & trials["test_psnr"].notna()]
    if done.empty:
        return pd.DataFrame(columns=columns)
    best = done.loc[done.groupby("latent_dim")["test_psnr"].idxmax()]
    counts = done.groupby("latent_dim").size()
    curve = pd.DataFrame(
        {
            "latent_dim": best["latent_dim"].astype(int).to_numpy(),
            "best_psnr": best["test_psnr"].to_numpy(dtype=float),
            "trial": best["trial"].astype(int).to_numpy(),
            "compression_ratio": best["compression_ratio"].to_numpy(dtype=float),
            "trials": counts.loc[best["latent_dim"]].to_numpy(),
        }
    )
    stored = {}
    if "pca_psnr" in done:
        # one PCA per latent size and split: every trial of a size stores the same value
        stored = done.dropna(subset=["pca_psnr"]).groupby("latent_dim")["pca_psnr"].first()
        stored = {int(k): float(v) for k, v in stored.items()}
    given = {int(k): float(v) for k, v in (pca or {}).items()}
    curve["pca_psnr"] = [
        stored.get(int(k), given.get(int(k), np.nan)) for k in curve["latent_dim"]
    ]
    return curve.sort_values("latent_dim").reset_index(drop=True)


# --- applications: anomaly detection, denoising, sampling a VAE ------------------------------


@dataclass(frozen=True)
class AnomalyReport:
    """Test images scored against the validation images' reconstruction errors.

    Attributes:
        scores: Per test image: ``index``, ``mse``, ``percentile`` (the share of validation
            images reconstructed better, 0-100) and ``flagged``.
        threshold: The MSE above which an image is flagged.
        validation_mse: The validation images' errors, the reference distribution.
    """

    scores: pd.DataFrame
    threshold: float
    validation_mse: np.ndarray

    @property
    def flagged(self) -> np.ndarray:
        """Indices of the flagged test images, worst first."""
        flagged = self.scores[self.scores["flagged"]].sort_values("mse", ascending=False)
        return flagged["index"].to_numpy()


def anomaly_report(
    test_mse: np.ndarray, validation_mse: np.ndarray, percentile: float = 99.0
) -> AnomalyReport:
    """Flags test images whose reconstruction error is unusual for the model.

    An autoencoder reconstructs what resembles its training data; an image it reconstructs
    worse than nearly every validation image is likely out of distribution.

    Args:
        test_mse: Per-image MSE of the images to score.
        validation_mse: Per-image MSE of held-out images like the training data.
        percentile: Flag above this percentile of the validation errors (0-100).
            Defaults to 99.

    Returns:
        The report.

    Raises:
        ConfigError: The percentile is outside 0-100 or there are no validation errors.
    """
    if not 0.0 <= percentile <= 100.0:
        raise ConfigError(f"percentile must lie in 0..100, got percentile={percentile}")
    validation_mse = np.sort(np.asarray(validation_mse, dtype=float))
    if validation_mse.size == 0:
        raise ConfigError("anomaly scores need at least one validation image")
    test_mse = np.asarray(test_mse, dtype=float)
    threshold = float(np.percentile(validation_mse, percentile))
    rank = np.searchsorted(validation_mse, test_mse, side="right") / validation_mse.size
    scores = pd.DataFrame(
        {
            "index": np.arange(test_mse.size),
            "mse": test_mse,
            "percentile": 100.0 * rank,
            "flagged": test_mse > threshold,
        }
    )
    return AnomalyReport(scores, threshold, validation_mse)


def is_denoising(model) -> bool:
    """Whether a trained autoencoder was trained to denoise (it has an input noise layer)."""
    encoder = model.get_layer("encoder")
    return any(layer.name == "input_noise" for layer in encoder.layers)


def denoising_examples(model, images: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy versions of images, made with the model's own training noise, and its output.

    Args:
        model: A denoising autoencoder (see :func:`is_denoising`).
        images: Clean images, NHWC in [0, 1].
        seed: Seed of the noise. Defaults to 0.

    Returns:
        ``(noisy, denoised)``, each like ``images`` (noisy clipped to [0, 1]).

    Raises:
        ConfigError: The model has no input noise layer.
    """
    import keras

    if not is_denoising(model):
        raise ConfigError("this model was not trained to denoise (objective is not denoising)")
    images = check_images(images, tuple(int(d) for d in model.input_shape[1:]))
    keras.utils.set_random_seed(seed)
    noise = model.get_layer("encoder").get_layer("input_noise")
    noisy = np.clip(keras.ops.convert_to_numpy(noise(images, training=True)), 0.0, 1.0)
    denoised = np.clip(model.predict(noisy.astype(np.float32), verbose=0), 0.0, 1.0)
    return noisy.astype(np.float32), denoised.astype(np.float32)


def _gaussian_noise(images: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Adds Gaussian noise of standard deviation ``level`` to every value."""
    return images + level * rng.standard_normal(images.shape, dtype=np.float32)


def _masking_noise(images: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Sets a share ``level`` of the values to 0 (the ``masking`` training noise)."""
    return np.where(rng.random(images.shape) < level, 0.0, images)


def _salt_and_pepper_noise(
    images: np.ndarray, level: float, rng: np.random.Generator
) -> np.ndarray:
    """Sets a share ``level`` of the pixels (all their channels) to black or white, half each."""
    pixels = (*images.shape[:-1], 1)
    hit = rng.random(pixels) < level
    white = rng.random(pixels) < 0.5
    return np.where(hit, white.astype(images.dtype), images)


NOISE_KINDS = {
    "gaussian": _gaussian_noise,
    "masking": _masking_noise,
    "salt-and-pepper": _salt_and_pepper_noise,
}
"""Noise a denoising view can add: name -> ``(images, level, rng) -> noisy images``."""


def add_noise(
    images: np.ndarray, level: float, kind: str = "gaussian", seed: int = 0
) -> np.ndarray:
    """Noisy copies of images, clipped to [0, 1].

    Args:
        images: Clean images, NHWC in [0, 1].
        level: The Gaussian noise's standard deviation, or the share of values
            (``masking``) or pixels (``salt-and-pepper``) hit; 0 leaves the images as they are.
        kind: One of :data:`NOISE_KINDS`. Defaults to ``gaussian``.
        seed: Seed of the noise. Defaults to 0.

    Returns:
        float32 images like ``images``.

    Raises:
        ConfigError: The kind is unknown or the level is out of range.
    """
    if kind not in NOISE_KINDS:
        raise ConfigError(f"unknown noise kind {kind!r}; expected one of {', '.join(NOISE_KINDS)}")
    most = None if kind == "gaussian" else 1.0
    if not (np.isfinite(level) and level >= 0 and (most is None or level <= most)):
        expected = "a non-negative number" if most is None else "a share in 0..1"
        raise ConfigError(f"{kind} noise level must be {expected}, got level={level}")
    images = np.asarray(images, dtype=np.float32)
    noisy = NOISE_KINDS[kind](images, float(level), np.random.default_rng(seed))
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def model_noise(model) -> tuple[str, float] | None:
    """The noise a denoising model was trained with, as ``(kind, level)``; None for others."""
    if not is_denoising(model):
        return None
    layer = model.get_layer("encoder").get_layer("input_noise")
    if hasattr(layer, "stddev"):  # keras.layers.GaussianNoise
        return "gaussian", float(layer.stddev)
    return "masking", float(layer.rate)


@dataclass(frozen=True)
class DenoisingScores:
    """Clean images with noise added, the model's outputs for them, and both PSNRs.

    Attributes:
        kind: The noise kind (see :data:`NOISE_KINDS`).
        level: The noise level.
        noisy: The noisy images, in [0, 1].
        denoised: The model's reconstructions of the noisy images, clipped to [0, 1].
        noisy_scores: Per image, the noisy image against the clean one.
        denoised_scores: Per image, the reconstruction against the clean image.
    """

    kind: str
    level: float
    noisy: np.ndarray
    denoised: np.ndarray
    noisy_scores: ReconstructionScores
    denoised_scores: ReconstructionScores

    @property
    def noisy_psnr(self) -> float:
        """Mean PSNR of the noisy images against the clean ones, in dB."""
        return float(self.noisy_scores.psnr.mean())

    @property
    def denoised_psnr(self) -> float:
        """Mean PSNR of the reconstructions against the clean images, in dB."""
        return float(self.denoised_scores.psnr.mean())

    @property
    def gain_db(self) -> float:
        """How much closer to the clean images the model's output is than its input, in dB."""
        return self.denoised_psnr - self.noisy_psnr


def denoising_scores(
    model, images: np.ndarray, level: float = 0.1, kind: str = "gaussian", seed: int = 0
) -> DenoisingScores:
    """Adds noise to clean images, reconstructs them, and scores both against the clean ones.

    Any trained autoencoder can be asked: for one not trained to denoise, the gain shows how
    far plain reconstruction removes noise. The reconstructions are made as the test split's
    are (encode, then decode; no training noise), and scored like them (clipped to [0, 1],
    ``automl_core.model.metrics.reconstruction_scores``).

    Args:
        model: An autoencoder.
        images: Clean images, NHWC in [0, 1], the model's input shape.
        level: The noise level (see :func:`add_noise`). Defaults to 0.1.
        kind: One of :data:`NOISE_KINDS`. Defaults to ``gaussian``.
        seed: Seed of the noise. Defaults to 0.

    Returns:
        The noisy and denoised images and their scores.

    Raises:
        ConfigError: The images do not have the model's input shape, there are none, or the
            noise is invalid (see :func:`add_noise`).
    """
    images = check_images(images, tuple(int(d) for d in model.input_shape[1:]))
    if len(images) == 0:
        raise ConfigError("denoising scores need at least one image")
    noisy = add_noise(images, level, kind, seed)
    denoised = np.clip(decode(model, encode(model, noisy)), 0.0, 1.0)
    return DenoisingScores(
        kind,
        float(level),
        noisy,
        denoised,
        reconstruction_scores(images, noisy),
        reconstruction_scores(images, denoised),
    )


def reconstruction_errors(model, images: np.ndarray) -> ReconstructionScores:
    """Per-image scores of a model's reconstructions of images, as the Reconstructions page
    scores the test and validation splits (encode, decode, ``reconstruction_scores``).

    Raises:
        ConfigError: The images do not have the model's input shape.
    """
    return reconstruction_scores(images, decode(model, encode(model, images)))


def is_variational(model) -> bool:
    """Whether a trained autoencoder is a VAE (its code has a mean and a variance)."""
    encoder = model.get_layer("encoder")
    return any(layer.name == "latent_log_var" for layer in encoder.layers)


def sample_prior(model, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Draws codes from a VAE's prior N(0, I) and decodes them: new images.

    Args:
        model: A variational autoencoder (see :func:`is_variational`).
        count: How many images.
        seed: Seed of the draws. Defaults to 0.

    Returns:
        ``(codes, images)``.

    Raises:
        ConfigError: The model is not variational, or ``count`` is not positive.
    """
    if not is_variational(model):
        raise ConfigError("only a variational model (objective=variational) has a prior to sample")
    if count < 1:
        raise ConfigError(f"count must be a positive integer, got count={count}")
    latent_dim = int(model.get_layer("encoder").output_shape[-1])
    codes = np.random.default_rng(seed).standard_normal((count, latent_dim)).astype(np.float32)
    return codes, decode(model, codes)
