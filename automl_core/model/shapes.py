"""Architecture arithmetic without Keras: a configuration's shapes, size and feasibility.

The search's pre-flight check runs before TensorFlow is imported (the CLI and the dashboard
refuse an impossible space in milliseconds), so everything it needs to know about a model,
its bottleneck, its parameter count and whether it can be built at all, lives here;
:mod:`automl_core.model.models` builds what these functions allow.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from typing import Any

from automl_core import limits
from automl_core.errors import ConfigError
from automl_core.model import blocks
from automl_core.model.space import PARAMETERS, ModelConfig, Range, SearchSpace

# The parameters check_fits reads: the rest (learning rate, loss, ...) cannot make a model
# impossible, so a space's feasibility is decided over these alone.
SHAPE_PARAMETERS = (
    "num_conv_layers",
    "filters",
    "latent_dim",
    "kernel_size",
    "block",
    "downsample",
    "upsample",
    "convolution",
    "batch_norm",
    "residual",
    "attention",
    "bottleneck",
    "objective",
    "linear_path",
    "loss",
)
# A range's values probed for feasibility, and the most combinations tried one by one
# before sampling (each check is arithmetic: microseconds).
_RANGE_PROBES = 24
_MOST_COMBINATIONS = 20_000


def bottleneck_size(config: ModelConfig, input_shape: tuple[int, int, int]) -> tuple[int, int]:
    """Height and width after the encoder's blocks (each halves, rounding up)."""
    height, width = int(input_shape[0]), int(input_shape[1])
    for _ in range(config.num_conv_layers):
        height, width = math.ceil(height / 2), math.ceil(width / 2)
    return height, width


def estimate_parameters(config: ModelConfig, input_shape: tuple[int, int, int]) -> int:
    """The parameter count of ``config``'s autoencoder, computed without building it.

    Building a model allocates its weights, so a configuration far too large for memory is
    refused from this count first (see :func:`check_fits`).

    Args:
        config: The architecture.
        input_shape: One image's (H, W, C).

    Returns:
        The number of weights, biases and normalisation statistics of the autoencoder.
    """
    height_in, width_in, channels = (int(d) for d in input_shape)
    k, f, depth = config.kernel_size, config.filters, config.num_conv_layers
    height, width = bottleneck_size(config, input_shape)
    weights = blocks.CONVOLUTIONS[config.convolution].parameters
    conv_ff = weights(k, f, f)
    _, up = blocks.resampling(config)
    up_conv = (k * k * f * f + f) if up.in_convolution else conv_ff  # transposed: standard
    per_norm = 4 * f if config.batch_norm else 0  # gamma, beta, moving mean and variance
    encoder = weights(k, channels, f) + (depth - 1) * conv_ff + depth * per_norm
    decoder = depth * (up_conv + per_norm) + (k * k * f * channels + channels)
    if config.residual:
        skips = (channels * f + f) + (depth - 1) * (f * f + f)
        encoder += depth * (conv_ff + per_norm) + skips
        decoder += depth * (conv_ff + per_norm)
    if config.attention:
        heads, key_dim = blocks.ATTENTION_HEADS, max(1, f // blocks.ATTENTION_HEADS)
        encoder += 3 * (f * heads * key_dim + heads * key_dim) + heads * key_dim * f + f
    positions = height * width
    if config.bottleneck == "conv":
        code = config.latent_dim // positions
        return encoder + decoder + (f * code + code) + (code * f + f)
    features = positions * f
    if config.linear_path:  # PCA's projection and its transpose, each with biases
        pixels = height_in * width_in * channels
        encoder += pixels * config.latent_dim + config.latent_dim
        decoder += config.latent_dim * pixels + pixels
    if config.objective == "variational":  # a second dense layer: the code's log-variance
        encoder += features * config.latent_dim + config.latent_dim
    return encoder + decoder + 2 * features * config.latent_dim + config.latent_dim + features


def estimate_work(config: ModelConfig, input_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one image's forward pass, computed without building the model.

    The same count as :func:`automl_core.model.models.multiply_accumulates` over the convolutions,
    dense layers and attention (close to it, not exact: it is the unit of a time estimate
    made before TensorFlow is imported).

    Args:
        config: The architecture.
        input_shape: One image's (H, W, C).

    Returns:
        Multiply-accumulates per image.
    """
    height, width, channels = (int(d) for d in input_shape)
    k, f = config.kernel_size, config.filters
    kind = blocks.CONVOLUTIONS[config.convolution].parameters

    def per_position(cin: int, cout: int) -> int:  # a convolution's weights minus its biases
        return kind(k, cin, cout) - cout

    down, up = blocks.resampling(config)
    total, h, w, cin = 0, height, width, channels
    for _ in range(config.num_conv_layers):
        half = math.ceil(h / 2) * math.ceil(w / 2)
        positions = half if down.in_convolution else h * w
        total += positions * per_position(cin, f)
        if config.residual:
            total += positions * (per_position(f, f) + cin * f)
        h, w, cin = math.ceil(h / 2), math.ceil(w / 2), f
    positions, latent = h * w, config.latent_dim
    if config.attention:
        inner = blocks.ATTENTION_HEADS * max(1, f // blocks.ATTENTION_HEADS)
        total += 4 * positions * f * inner + 2 * positions * positions * inner
    if config.bottleneck == "conv":
        total += 2 * positions * f * (latent // positions)
    else:
        codes = 2 if config.objective == "variational" else 1
        total += (codes + 1) * positions * f * latent  # the code and the decoder's dense
        if config.linear_path:
            total += 2 * height * width * channels * latent
    for _ in range(config.num_conv_layers):
        if up.in_convolution:  # transposed: every input position spreads a k x k kernel
            total += h * w * k * k * f * f
        h, w = 2 * h, 2 * w
        if not up.in_convolution:
            total += h * w * per_position(f, f)
        if config.residual:
            total += h * w * per_position(f, f)
    total += height * width * k * k * f * channels  # the reconstruction
    return int(total)


def check_fits(config: ModelConfig, input_shape: tuple[int, int, int]) -> None:
    """Checks, without building anything, that a configuration can be built for the images.

    Raises:
        ConfigError: The image would shrink below 1x1, a combination of options is
            impossible (the message names both parameters), or the model would be larger
            than the ``max_model_parameters`` limit.
    """
    height, width, channels = (int(d) for d in input_shape)
    if 2**config.num_conv_layers > min(height, width):
        raise ConfigError(
            f"num_conv_layers={config.num_conv_layers} would shrink the {height}x{width} image "
            "below 1x1"
        )
    if config.kernel_size > min(height, width):
        raise ConfigError(
            f"kernel_size={config.kernel_size} is larger than the {height}x{width} image"
        )
    bottom_h, bottom_w = bottleneck_size(config, input_shape)
    if config.attention and bottom_h * bottom_w < 2:
        raise ConfigError(
            f"attention=true needs a bottleneck of at least 2 positions, but "
            f"num_conv_layers={config.num_conv_layers} shrinks the {height}x{width} image to "
            "1x1; use fewer layers or attention=false"
        )
    if config.bottleneck == "conv" and config.objective == "variational":
        raise ConfigError(
            "objective=variational needs bottleneck=dense (its code is a dense mean and "
            "variance), got bottleneck=conv"
        )
    if config.linear_path and config.bottleneck == "conv":
        raise ConfigError(
            "linear_path=true adds a dense PCA code to a dense bottleneck, got bottleneck=conv; "
            "use bottleneck=dense or linear_path=false"
        )
    if config.linear_path and config.objective == "variational":
        raise ConfigError(
            "linear_path=true needs a deterministic code, got objective=variational; use "
            "another objective or linear_path=false"
        )
    if config.linear_path and config.loss == "bce":
        raise ConfigError(
            "linear_path=true gives unbounded outputs, which loss=bce cannot score; use "
            "loss=mse, l1 or mse_ssim, or linear_path=false"
        )
    if config.bottleneck == "conv" and config.latent_dim % (bottom_h * bottom_w):
        raise ConfigError(
            f"bottleneck=conv needs latent_dim to be a multiple of the {bottom_h}x{bottom_w} "
            f"bottleneck ({bottom_h * bottom_w} positions), got latent_dim={config.latent_dim}"
        )
    size = estimate_parameters(config, input_shape)
    if size > limits.get("max_model_parameters"):
        raise ConfigError(
            f"filters={config.filters}, latent_dim={config.latent_dim} and "
            f"num_conv_layers={config.num_conv_layers} make a model of {size:,} parameters "
            f"on {height}x{width}x{channels} images, more than the "
            f"{limits.get('max_model_parameters'):,} allowed (AUTOML_MAX_MODEL_PARAMETERS)"
        )


def _probe_values(name: str, parameter: Any) -> list:
    """The values of one parameter that the feasibility check tries."""
    if not isinstance(parameter, Range):
        return list(parameter.values)
    low, high = parameter.low, parameter.high
    if PARAMETERS[name].kind != "int":
        return [low, high]
    low, high = int(low), int(high)
    step = int(parameter.step or 1)
    if (high - low) // step < _RANGE_PROBES:
        return list(range(low, high + 1, step))
    spread = {low + step * round(i * (high - low) / step / _RANGE_PROBES) for i in range(25)}
    powers = {2**e for e in range(high.bit_length() + 1) if low <= 2**e <= high}
    return sorted(v for v in spread | powers | {low, high} if (v - low) % step == 0)


def check_space_fits(space: SearchSpace, input_shape: tuple[int, int, int]) -> float:
    """Checks, before any training, that a search space holds a configuration that fits.

    Every combination of the shape parameters is checked with :func:`check_fits` (a range
    by a spread of its values, a huge product by a fixed-seed sample), so a space in which
    nothing can be built is refused at once instead of failing trial after trial.

    Args:
        space: The search space.
        input_shape: One image's (H, W, C).

    Returns:
        The share of the checked combinations that fit (1.0: all of them).

    Raises:
        ConfigError: No combination fits; the message gives the most common reasons.
    """
    names = [n for n in SHAPE_PARAMETERS if n in space.parameters]
    values = [_probe_values(n, space.parameters[n]) for n in names]
    total = math.prod(len(v) for v in values)
    if total <= _MOST_COMBINATIONS:
        combos: Any = itertools.product(*values)
    else:
        rng = random.Random(0)
        combos = (tuple(rng.choice(v) for v in values) for _ in range(_MOST_COMBINATIONS))
    reasons: Counter[str] = Counter()
    checked = fitting = 0
    for combo in combos:
        checked += 1
        try:
            check_fits(ModelConfig(**dict(zip(names, combo, strict=True))), input_shape)
        except ConfigError as exc:
            reasons[str(exc)] += 1
        else:
            fitting += 1
    if fitting == 0:
        height, width, channels = input_shape
        common = "; ".join(reason for reason, _ in reasons.most_common(2))
        raise ConfigError(
            f"no configuration of this search space can be built for {height}x{width}x"
            f"{channels} images ({checked:,} combinations checked), e.g. {common}"
        )
    return fitting / checked
