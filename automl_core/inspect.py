"""Looking inside a trained autoencoder: filters first (activations, latents build on it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from automl_core.models import encoder_conv_layers


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
        model: An autoencoder from ``automl_core.models.build_autoencoder`` or loaded from a
            trial, or its encoder.

    Returns:
        One :class:`LayerFilters` per encoder convolution.
    """
    out = []
    for layer in encoder_conv_layers(model):
        kernel, bias = (np.asarray(w) for w in layer.get_weights())
        out.append(LayerFilters(layer.name, kernel, bias))
    return out


def format_filters(filters: list[LayerFilters], all_channels: bool = False, decimals: int = 4) -> str:
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
        lines.append(f"Layer_{index}: {layer.layer}, {layer.num_filters} filters of "
                     f"{layer.kernels.shape[0]}x{layer.kernels.shape[1]}{note}")  # fmt: skip
        for f in range(layer.num_filters):
            kernel = layer.kernels[..., f]
            views = (
                [(f" (input channel {c + 1})" if channels > 1 else "", kernel[:, :, c])
                 for c in range(channels)]
                if per_channel else [("", kernel.mean(axis=2))]
            )  # fmt: skip
            for label, matrix in views:
                lines.append(f"Filter {f + 1}{label}:")
                for row in matrix:
                    lines.append("[" + " ".join(f"{v:{width}.{decimals}f}" for v in row) + "]")
        lines.append("")
    return "\n".join(lines)
