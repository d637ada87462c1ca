"""Every Plotly figure of the product: the plot step of each chart.

Each function takes what a data step computed (:mod:`automl_core.analysis.inspect`,
:mod:`automl_core.analysis.latent`, :mod:`automl_core.analysis.leaderboard`) and returns a
``plotly.graph_objects.Figure``; no computation on models and no decision about which
charts apply happens here. One palette (:data:`PALETTE`, led by the theme's primary colour)
and one layout serve every chart.
"""

from __future__ import annotations

import base64
import colorsys
import html
import io
import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import optuna
import pandas as pd
import plotly.graph_objects as go
from PIL import Image
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from automl_core.analysis.inspect import LayerActivation, LayerFilters
from automl_core.analysis.latent import Projection, Thumbnails, class_name
from automl_core.analysis.leaderboard import (
    ChartSample,
    ImportanceInfo,
    StudyChartPlan,
    chart_axes,
    drawable_charts,
    parameter_importances,
)
from automl_core.errors import ConfigError
from automl_core.model.space import PARAMETERS, parameter_label

if TYPE_CHECKING:  # a type only: drawing a view needs nothing of the search layer
    from automl_core.search.strategies import StrategyView

DIVERGING = "RdBu_r"
SEQUENTIAL = "Viridis"
# categorical colours; the first is the theme's primaryColor (.streamlit/config.toml)
PALETTE = (
    "#4C6EF5",
    "#F76707",
    "#2B8A3E",
    "#C2255C",
    "#7048E8",
    "#1098AD",
    "#E8590C",
    "#5C940D",
    "#862E9C",
    "#364FC7",
)
LAYOUT = {
    "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
    "height": 380,
    "template": "plotly_white",
}


def _grid(count: int, max_cols: int) -> tuple[int, int]:
    """Rows and columns of a small-multiples grid."""
    cols = max(1, min(count, max_cols))
    return max(1, math.ceil(count / cols)), cols


def _square_axes(fig: go.Figure) -> None:
    """Hides ticks and keeps pixels square in every subplot (one layout update: it is faster)."""
    plain = {"showticklabels": False, "showgrid": False, "zeroline": False, "ticks": ""}
    updates = {}
    for name in fig.layout.to_plotly_json():
        if name.startswith("xaxis"):
            updates[name] = plain
        elif name.startswith("yaxis"):
            updates[name] = {
                **plain,
                "autorange": "reversed",
                "scaleratio": 1,
                "scaleanchor": "x" + name[5:],
            }
    fig.update_layout(updates)


def filters_figure(filters: LayerFilters, channel: int | str = 0, max_cols: int = 8) -> go.Figure:
    """Small multiples of one layer's kernels, one diverging colour scale centred on 0.

    Args:
        filters: One layer's kernels.
        channel: Input channel to show (0-based), ``"mean"`` for the mean over input channels,
            or ``"rgb"`` for a colour composite of a 3-channel layer. Defaults to 0.
        max_cols: Subplots per row. Defaults to 8.

    Returns:
        One subplot per filter; hover shows row, column and the exact weight.

    Raises:
        ConfigError: ``channel`` does not exist in the layer.
    """
    kernels = filters.kernels
    n_in = filters.num_input_channels
    if channel == "rgb":
        if n_in != 3:
            raise ConfigError(
                f"an RGB composite needs 3 input channels; {filters.layer} has {n_in}"
            )
    elif channel == "mean":
        kernels = kernels.mean(axis=2, keepdims=True)
    elif not isinstance(channel, int) or not 0 <= channel < n_in:
        raise ConfigError(
            f"channel must be 'rgb', 'mean' or an integer in [0, {n_in - 1}], "
            f"got channel={channel!r}"
        )
    count = filters.num_filters
    rows, cols = _grid(count, max_cols)
    fig = make_subplots(
        rows,
        cols,
        subplot_titles=[f"filter {f + 1}" for f in range(count)],
        horizontal_spacing=0.02,
        vertical_spacing=0.08,
    )
    if channel == "rgb":
        scale = float(np.abs(kernels).max()) or 1.0
        traces = [
            go.Image(
                z=((kernels[..., f] / scale + 1.0) * 127.5).clip(0, 255).astype(np.uint8),
                customdata=kernels[..., f],
                hovertemplate=(
                    "row %{y}, col %{x}<br>R %{customdata[0]:.4f}<br>G %{customdata[1]:.4f}"
                    "<br>B %{customdata[2]:.4f}<extra></extra>"
                ),
            )
            for f in range(count)
        ]
    else:
        plane = kernels[:, :, 0 if channel == "mean" else channel, :]
        limit = float(np.abs(plane).max()) or 1.0
        traces = [
            go.Heatmap(
                z=plane[..., f],
                zmid=0,
                zmin=-limit,
                zmax=limit,
                colorscale=DIVERGING,
                showscale=f == 0,
                colorbar={"title": "weight", "len": 0.9, "thickness": 12},
                hovertemplate=f"filter {f + 1}<br>row %{{y}}, col %{{x}}<br>w = %{{z:.5f}}"
                "<extra></extra>",
            )
            for f in range(count)
        ]
    fig.add_traces(
        traces,
        rows=[f // cols + 1 for f in range(count)],
        cols=[f % cols + 1 for f in range(count)],
    )
    _square_axes(fig)
    what = {"rgb": "RGB composite", "mean": "mean over input channels"}.get(
        channel, f"input channel {channel + 1 if isinstance(channel, int) else channel}"
    )
    fig.update_layout(
        title=f"{filters.layer}: {count} filter{'s' if count != 1 else ''} of "
        f"{kernels.shape[0]}x{kernels.shape[1]}, {what}",
        height=max(220, 150 * rows + 80),
        margin={"t": 70, "l": 10, "r": 70},
    )
    fig.update_annotations(font_size=10)
    return fig


def weight_histogram_figure(weights: dict[str, np.ndarray], bins: int = 40) -> go.Figure:
    """Overlaid histograms of each layer's weights."""
    fig = go.Figure()
    for name, values in weights.items():
        fig.add_trace(go.Histogram(x=values, name=name, nbinsx=bins, opacity=0.6))
    fig.update_layout(
        barmode="overlay",
        title="Weight distribution per layer",
        xaxis_title="weight",
        yaxis_title="count",
        height=340,
    )
    return fig


def parameters_figure(params: pd.DataFrame) -> go.Figure:
    """Horizontal bars of parameters per layer (from ``inspect.layer_parameters``)."""
    shown = params[params["parameters"] > 0]
    fig = go.Figure(
        go.Bar(
            x=shown["parameters"],
            y=shown["part"] + " / " + shown["layer"],
            orientation="h",
            text=shown["parameters"].map("{:,}".format),
            textposition="auto",
            marker_color=np.where(shown["part"] == "encoder", PALETTE[0], PALETTE[1]),
        )
    )
    fig.update_layout(
        title=f"Parameters per layer (total {int(params['parameters'].sum()):,})",
        yaxis={"autorange": "reversed"},
        xaxis_title="parameters",
        height=max(240, 28 * len(shown) + 100),
    )
    return fig


def _mosaic(maps: np.ndarray, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Tiles (H, W, N) maps into one array with NaN gutters, and per-cell (map, row, col)."""
    height, width, count = maps.shape
    rows = math.ceil(count / cols)
    mosaic = np.full((rows * (height + 1) - 1, cols * (width + 1) - 1), np.nan, np.float32)
    where = np.full((*mosaic.shape, 3), -1, np.int32)
    r, c = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    for n in range(count):
        top, left = (n // cols) * (height + 1), (n % cols) * (width + 1)
        mosaic[top : top + height, left : left + width] = maps[..., n]
        where[top : top + height, left : left + width] = np.stack(
            [np.full_like(r, n + 1), r, c], -1
        )
    return mosaic, where


def activation_figure(
    activation: LayerActivation, max_maps: int = 32, max_cols: int = 8
) -> go.Figure:
    """One layer's feature maps as small multiples in one heatmap (a bar chart for vectors).

    The maps are tiled into a single trace (fast to build and draw); hover names the channel,
    row, column and value.

    Args:
        activation: One layer's output.
        max_maps: Most channels drawn. Defaults to 32.
        max_cols: Maps per row. Defaults to 8.
    """
    if not activation.is_map:
        return latent_bar_figure(activation.values, title=activation.layer)
    values = activation.values
    count = min(values.shape[-1], max_maps)
    rows, cols = _grid(count, max_cols)
    mosaic, where = _mosaic(values[..., :count], cols)
    fig = go.Figure(
        go.Heatmap(
            z=mosaic,
            customdata=where,
            colorscale=SEQUENTIAL,
            hoverongaps=False,
            hovertemplate="channel %{customdata[0]}<br>row %{customdata[1]}, col %{customdata[2]}"
            "<br>%{z:.4f}<extra></extra>",
        )
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x", scaleratio=1)
    more = f" (first {count} of {values.shape[-1]})" if count < values.shape[-1] else ""
    cell = max(40, min(110, 880 // cols))
    fig.update_layout(
        title=f"{activation.layer}: {values.shape[-1]} map{'s' if values.shape[-1] != 1 else ''} of "
        f"{values.shape[0]}x{values.shape[1]}{more}, channels left to right",
        height=max(180, cell * rows + 70),
        margin={"t": 50, "l": 10, "r": 10, "b": 10},
    )
    return fig


def latent_bar_figure(latent: np.ndarray, title: str = "latent vector") -> go.Figure:
    """The bottleneck values of one image as bars."""
    latent = np.asarray(latent).ravel()
    fig = go.Figure(
        go.Bar(
            x=np.arange(1, len(latent) + 1),
            y=latent,
            marker_color=np.where(latent >= 0, PALETTE[0], PALETTE[3]),
            hovertemplate="z%{x} = %{y:.4f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title, xaxis_title="latent unit", yaxis_title="value", height=280, margin={"t": 50}
    )
    return fig


def image_strip_figure(
    images: np.ndarray,
    titles: list[str] | None = None,
    max_cols: int = 10,
    height: int | None = None,
) -> go.Figure:
    """Images side by side (grayscale or RGB, values in [0, 1]) with their pixel values on hover."""
    images = np.asarray(images)
    count = len(images)
    if count == 0:
        raise ConfigError("no images to draw")
    rows, cols = _grid(count, max_cols)
    fig = make_subplots(
        rows,
        cols,
        subplot_titles=titles,
        horizontal_spacing=0.01,
        vertical_spacing=0.06 if titles else 0.02,
    )
    for i, image in enumerate(images):
        cell = {"row": i // cols + 1, "col": i % cols + 1}
        if image.shape[-1] == 3:
            fig.add_trace(go.Image(z=(image.clip(0, 1) * 255).astype(np.uint8)), **cell)
        else:
            fig.add_trace(
                go.Heatmap(
                    z=image[..., 0],
                    zmin=0,
                    zmax=1,
                    colorscale="Gray",
                    showscale=False,
                    hovertemplate="row %{y}, col %{x}: %{z:.3f}<extra></extra>",
                ),
                **cell,
            )
    _square_axes(fig)
    fig.update_layout(
        height=height or max(160, 120 * rows + (40 if titles else 10)),
        margin={"t": 30 if titles else 5, "b": 5, "l": 5, "r": 5},
    )
    fig.update_annotations(font_size=10)
    return fig


def plain_text(text: str) -> str:
    """Text for a Plotly label or hover that shows as written: its HTML tags (links, line
    breaks) and entities are escaped, so Plotly draws them as characters."""
    return html.escape(str(text), quote=False)


def class_colours(count: int) -> tuple[str, ...]:
    """One explicit colour per class, neighbouring label values far apart in hue and lightness.

    Up to 10 classes: the D3 / Tableau 10 categorical scheme; up to 24: Plotly's Dark24 (dark
    enough for a white background); more: hues a golden angle apart at three lightnesses.
    Figures index it by label value, so a class keeps its colour in every figure and in the
    HTML report (the colours are written into the figure, not taken from a theme).

    Args:
        count: Number of classes (the largest label value + 1).

    Returns:
        ``count`` colours as ``#rrggbb``.
    """
    if count <= len(qualitative.D3):
        return tuple(qualitative.D3[: max(count, 0)])
    if count <= len(qualitative.Dark24):
        return tuple(qualitative.Dark24[:count])
    colours = []
    for i in range(count):
        red, green, blue = colorsys.hls_to_rgb(
            (i * 0.618033988749895) % 1.0, (0.30, 0.42, 0.54)[i % 3], 0.75
        )
        colours.append(f"#{round(red * 255):02x}{round(green * 255):02x}{round(blue * 255):02x}")
    return tuple(colours)


# the colour of a map's points when the dataset has no labels
UNLABELLED_COLOUR = "#636efa"
# thumbnails are this share of each axis's span wide and high
THUMBNAIL_SHARE = 0.05
# small images are enlarged by whole pixels to about this size (the browser blurs less)
THUMBNAIL_PIXELS = 32
# grey levels of a grayscale thumbnail (plenty at its size; a smaller PNG palette)
THUMBNAIL_GRAYS = 63


def _thumbnail_uri(image: np.ndarray, colour: str) -> str:
    """An image as a PNG data URI, enlarged by whole pixels and framed in its class colour.

    A grayscale image is written with :data:`THUMBNAIL_GRAYS` grays and the frame's colour
    as its palette: about 450 bytes for a 28x28 digit, where RGB or 256 grays take 1 kB."""
    frame = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    scale = max(1, round(THUMBNAIL_PIXELS / max(image.shape[:2])))
    if image.shape[-1] == 1:
        pixels = (np.clip(image[..., 0], 0, 1) * (THUMBNAIL_GRAYS - 1)).round().astype(np.uint8)
        framed = np.full([n * scale + 4 for n in pixels.shape], THUMBNAIL_GRAYS, np.uint8)
    else:
        pixels = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
        framed = np.empty([n * scale + 4 for n in pixels.shape[:2]] + [3], np.uint8)
        framed[:] = frame
    framed[2:-2, 2:-2] = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
    if image.shape[-1] == 1:
        picture = Image.frombytes("P", framed.shape[::-1], framed.tobytes())
        grays = np.linspace(0, 255, THUMBNAIL_GRAYS).round().astype(np.uint8)
        picture.putpalette([*np.repeat(grays, 3).tolist(), *frame])
    else:
        picture = Image.fromarray(framed)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def projection_figure(
    projection: Projection,
    labels: np.ndarray | None = None,
    class_names: tuple[str, ...] | None = None,
    selected: list[int] | None = None,
    title: str | None = None,
    highlight: np.ndarray | None = None,
    thumbnails: Thumbnails | None = None,
) -> go.Figure:
    """WebGL scatter of a projection, one trace per class; ``customdata`` is the image index.

    Each class has its colour from :func:`class_colours`, by label value. The hover says the
    image number and its class.

    Args:
        projection: From ``latent.latent_projection``.
        labels: One integer label per point, or None (one uncoloured trace).
        class_names: Names of the label values. Defaults to the numbers. They come from
            the dataset (an uploaded file's ``class_names``): they are shown as text, never
            as Plotly's HTML (a name like ``<a href=...>`` is no link).
        selected: Indices to ring (the selected points).
        title: Figure title. Defaults to the method and its parameters.
        highlight: Indices of the points a search found: drawn larger and outlined in a
            ``matches`` trace while every other point is dimmed. Defaults to none (no search).
        thumbnails: Images to draw at their points (``latent.thumbnails``), each framed in
            its class colour and sized as a share of the axis ranges. Defaults to none.
    """
    points = projection.points
    index = np.arange(len(points))
    fig = go.Figure()
    if labels is None:
        names = np.full(len(points), "no label", dtype=object)
        colours = np.full(len(points), UNLABELLED_COLOUR, dtype=object)
        hover = "image #%{customdata[0]}<extra></extra>"
        groups = [("images", np.ones(len(points), bool), UNLABELLED_COLOUR)]
    else:
        labels = np.asarray(labels).astype(int)
        values = np.unique(labels)
        palette = class_colours(max(len(class_names or ()), int(values.max()) + 1))
        colour_of = {v: palette[int(v) % len(palette)] for v in values}
        name_of = {v: plain_text(class_name(v, class_names)) for v in values}
        names = np.array([name_of[v] for v in labels], dtype=object)
        colours = np.array([colour_of[v] for v in labels], dtype=object)
        hover = "image #%{customdata[0]}<br>class: %{customdata[1]}<extra></extra>"
        groups = [(name_of[v], labels == v, colour_of[v]) for v in values]
    searched = highlight is not None
    for name, mask, colour in groups:
        fig.add_trace(
            go.Scattergl(
                x=points[mask, 0],
                y=points[mask, 1],
                mode="markers",
                name=name,
                marker={"size": 5, "color": colour, "opacity": 0.15 if searched else 0.8},
                customdata=np.column_stack([index[mask], names[mask]]),
                hovertemplate=hover,
            )
        )
    if searched:
        found = np.asarray(highlight, dtype=int)
        fig.add_trace(
            go.Scattergl(
                x=points[found, 0],
                y=points[found, 1],
                mode="markers",
                name=f"matches ({len(found):,})",
                marker={
                    "size": 11,
                    "color": list(colours[found]),
                    "opacity": 1.0,
                    "line": {"width": 1.5, "color": "#111111"},
                },
                customdata=np.column_stack([found, names[found]]),
                hovertemplate=hover,
            )
        )
    if selected:
        sel = np.asarray(selected)
        fig.add_trace(
            go.Scattergl(
                x=points[sel, 0],
                y=points[sel, 1],
                mode="markers+text",
                name="selected",
                text=[f"#{i}" for i in sel],
                textposition="top center",
                hoverinfo="skip",
                marker={
                    "size": 14,
                    "color": "rgba(0,0,0,0)",
                    "line": {"width": 2, "color": "black"},
                },
            )
        )
    params = ", ".join(f"{k}={v:g}" for k, v in projection.params.items())
    fig.update_layout(
        title=title or f"{projection.method.upper()}{f' ({params})' if params else ''}",
        height=480,
        legend={"itemsizing": "constant"},
        xaxis={"title": "dim 1"},
        yaxis={"title": "dim 2"},
        margin={"t": 50},
    )
    if thumbnails is not None and len(thumbnails.indices):
        _add_thumbnails(fig, points, thumbnails, colours, highlight)
    return fig


def _add_thumbnails(
    fig: go.Figure,
    points: np.ndarray,
    thumbnails: Thumbnails,
    colours: np.ndarray,
    highlight: np.ndarray | None,
) -> None:
    """Draws each thumbnail centred on its point (``layout.images``), a share of the axis
    spans in size; the axes are widened so that edge images are whole. With a search, the
    images of the other points are faded."""
    low, high = points.min(axis=0), points.max(axis=0)
    span = np.where(high - low > 0, high - low, 1.0)
    size = span * THUMBNAIL_SHARE
    found = set(np.asarray(highlight, dtype=int).tolist()) if highlight is not None else None
    fig.update_layout(
        images=[
            {
                "source": _thumbnail_uri(image, colours[i]),
                "xref": "x",
                "yref": "y",
                "x": float(points[i, 0]),
                "y": float(points[i, 1]),
                "sizex": float(size[0]),
                "sizey": float(size[1]),
                "xanchor": "center",
                "yanchor": "middle",
                "sizing": "contain",
                "layer": "above",
                "opacity": 1.0 if found is None or int(i) in found else 0.3,
                "name": f"image {int(i)}",
            }
            for i, image in zip(thumbnails.indices, thumbnails.images, strict=True)
        ],
        xaxis={"range": [float(low[0] - size[0]), float(high[0] + size[0])]},
        yaxis={"range": [float(low[1] - size[1]), float(high[1] + size[1])]},
    )


def score_histograms_figure(scores: pd.DataFrame, bins: int = 30) -> go.Figure:
    """Side-by-side histograms of per-image MSE, PSNR and SSIM (from ``inspect.scores_frame``)."""
    fig = make_subplots(1, 3, subplot_titles=["MSE", "PSNR (dB)", "SSIM"])
    for col, name in enumerate(("mse", "psnr", "ssim"), start=1):
        fig.add_trace(
            go.Histogram(x=scores[name], nbinsx=bins, name=name.upper(), showlegend=False),
            row=1,
            col=col,
        )
        mean = float(scores[name].mean())
        fig.add_vline(
            x=mean,
            line_dash="dash",
            line_color="black",
            row=1,
            col=col,
            annotation_text=f"mean {mean:.4g}",
            annotation_font_size=10,
            annotation_position="top right",
            annotation_bgcolor="rgba(255,255,255,0.8)",
        )
    fig.update_yaxes(title_text="images", row=1, col=1)
    fig.update_layout(height=300, margin={"t": 50}, title="Per-image reconstruction quality")
    return fig


def compression_curve_figure(curve: pd.DataFrame, current_trial: int | None = None) -> go.Figure:
    """Best PSNR against latent size (from ``inspect.compression_curve``), with PCA's with as
    many components as a dashed line where the curve has it: the linear baseline."""
    fig = go.Figure(
        go.Scatter(
            x=curve["latent_dim"],
            y=curve["best_psnr"],
            mode="lines+markers",
            customdata=curve[["trial", "compression_ratio", "trials"]].to_numpy(),
            hovertemplate="latent %{x}<br>best PSNR %{y:.2f} dB (trial %{customdata[0]})"
            "<br>compression %{customdata[1]:.1f}x, %{customdata[2]} trials"
            "<extra></extra>",
            name="best PSNR",
        )
    )
    if "pca_psnr" in curve and curve["pca_psnr"].notna().any():
        known = curve[curve["pca_psnr"].notna()]
        fig.add_trace(
            go.Scatter(
                x=known["latent_dim"],
                y=known["pca_psnr"],
                mode="lines+markers",
                line={"dash": "dash", "color": "#7f7f7f"},
                marker={"symbol": "square", "color": "#7f7f7f"},
                hovertemplate="latent %{x}<br>PCA with %{x} components: %{y:.2f} dB"
                "<extra></extra>",
                name="PCA (same components)",
            )
        )
    if current_trial is not None and (curve["trial"] == current_trial).any():
        row = curve[curve["trial"] == current_trial].iloc[0]
        fig.add_trace(
            go.Scatter(
                x=[row["latent_dim"]],
                y=[row["best_psnr"]],
                mode="markers",
                marker={"size": 14, "symbol": "star", "color": "#d62728"},
                name=f"trial {current_trial}",
            )
        )
    fig.update_layout(
        title="Compression curve: best PSNR per latent size",
        xaxis={"title": "latent size", "type": "log"},
        yaxis_title="best test PSNR (dB)",
        height=340,
        margin={"t": 50},
    )
    return fig


def loss_curves_figure(frame: pd.DataFrame, title: str = "Loss per epoch") -> go.Figure:
    """Overlaid training (dashed) and validation (solid) loss curves, one colour per trial."""
    figure = go.Figure()
    for index, (label, group) in enumerate(frame.groupby("label", sort=False)):
        colour = PALETTE[index % len(PALETTE)]
        for split, dash in (("val_loss", "solid"), ("loss", "dash")):
            part = group[group["split"] == split]
            if part.empty:
                continue
            figure.add_trace(
                go.Scatter(
                    x=part["epoch"],
                    y=part["value"],
                    mode="lines+markers",
                    name=f"{label} {split}",
                    line={"color": colour, "dash": dash},
                    legendgroup=label,
                )
            )
    figure.update_layout(title=title, xaxis_title="epoch", yaxis_title="MSE (log scale)", **LAYOUT)
    figure.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0})
    # full numbers on every tick: Plotly's default log ticks label 0.02..0.09 as "2".."9"
    figure.update_yaxes(type="log", tickformat=".2g")
    if not frame.empty and frame["epoch"].max() <= 20:
        figure.update_xaxes(dtick=1)
    return figure


def _optuna_plot(function, study: optuna.Study, **kwargs) -> go.Figure:
    """One of Optuna's plots in the product's layout (its experimental warnings silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        figure = function(study, **kwargs)
    figure.update_layout(**LAYOUT)
    return figure


# the most parameters a contour matrix is drawn over (n parameters: n x n panels)
CONTOUR_MAX_PARAMS = 4


def _readable_axes(figure: go.Figure) -> go.Figure:
    """Axis titles and tick labels that name a parameter get its display name."""
    updates = {}
    for key, axis in figure.layout.to_plotly_json().items():
        if not key.startswith(("xaxis", "yaxis")):
            continue
        title = (axis.get("title") or {}).get("text")
        if title in PARAMETERS:
            updates[f"{key}.title.text"] = parameter_label(title)
        ticks = axis.get("ticktext")
        if ticks is not None and any(t in PARAMETERS for t in ticks):
            updates[f"{key}.ticktext"] = [parameter_label(t) for t in ticks]
    if updates:
        figure.update_layout(updates)
    return figure


def _subtitle(figure: go.Figure, text: str) -> None:
    """A line under the figure's title (what was left out of it)."""
    if text:
        figure.update_layout(
            title={"subtitle": {"text": plain_text(text), "font": {"size": 12}}},
            margin={"t": 70},
        )


def parallel_coordinates_figure(study: optuna.Study, params, target, target_name) -> go.Figure:
    """Optuna's parallel coordinates over ``params``, with display names and room for the
    objective's tick labels (Optuna writes them left of the first axis)."""
    from optuna import visualization as vis

    figure = _optuna_plot(
        vis.plot_parallel_coordinate,
        study,
        params=list(params),
        target=target,
        target_name=target_name,
    )
    for trace in figure.data:  # hover: "Latent dim: 8", not "latent_dim: 8"
        if trace.customdata is not None:
            trace.customdata = [
                [parameter_label(label), value] for label, value in trace.customdata
            ]
    count = len(params) + 1
    figure.update_layout(
        title={"text": f"Parallel coordinates: {target_name} and {len(params)} parameters"},
        margin={"l": 70, "r": 30, "t": 60, "b": 90 if count > 6 else 50},
        height=420,
    )
    figure.update_xaxes(tickangle=-30 if count > 6 else 0)
    return _readable_axes(figure)


def slice_figure(study: optuna.Study, params, target, target_name) -> go.Figure:
    """Optuna's slice plot (the objective against each parameter) with display names."""
    from optuna import visualization as vis

    figure = _optuna_plot(
        vis.plot_slice, study, params=list(params), target=target, target_name=target_name
    )
    figure.update_layout(title={"text": f"Slice: {target_name} against each parameter"})
    figure.update_layout(margin={"l": 60, "b": 60})
    return _readable_axes(figure)


def contour_figure(study: optuna.Study, params, target, target_name) -> go.Figure:
    """Optuna's contour plot of the objective over pairs of the first
    :data:`CONTOUR_MAX_PARAMS` parameters (a matrix from three on), with display names."""
    from optuna import visualization as vis

    drawn = list(params)[:CONTOUR_MAX_PARAMS]
    figure = _optuna_plot(
        vis.plot_contour, study, params=drawn, target=target, target_name=target_name
    )
    side = len(drawn)
    figure.update_layout(
        title={"text": f"Contour: {target_name} over pairs of parameters"},
        height=420 if side <= 2 else 200 * side + 80,
        margin={"l": 60, "b": 60},
    )
    if len(params) > side:
        left = ", ".join(parameter_label(n) for n in list(params)[side:])
        _subtitle(figure, f"Drawn for the first {side} chosen parameters; not drawn: {left}.")
    return _readable_axes(figure)


def study_figures(
    study: optuna.Study,
    plan: StudyChartPlan,
    sample: ChartSample | None = None,
    params=None,
    only: tuple[str, ...] | None = None,
) -> dict[str, go.Figure]:
    """Draws the charts a :class:`~automl_core.analysis.leaderboard.StudyChartPlan` chose.

    Args:
        study: The study.
        plan: What :func:`automl_core.analysis.leaderboard.study_chart_plan` decided.
        sample: What a large study's charts are drawn from
            (:func:`automl_core.analysis.leaderboard.chart_sample`); None draws the study itself.
        params: The parameters the parallel coordinates, importances, slice and contour
            plots are drawn over, in this order (see
            :func:`automl_core.analysis.leaderboard.chart_axes`). Defaults to None: those that vary.
        only: Draw only these of the plan's charts (a page shows one at a time). Defaults
            to None: every one.

    Returns:
        Figures by chart name, in the plan's order; a chart that needs more parameters than
        chosen (contour: 2) or that cannot be computed is left out.
    """
    from optuna import visualization as vis

    sample = sample or ChartSample(study)
    axes = chart_axes(plan, params)
    target = (lambda t: t.values[0]) if plan.multi_objective else None
    name = plan.objective_names[0]
    kwargs = {"target": target, "target_name": name}
    figures: dict[str, go.Figure] = {}
    drawable, _ = drawable_charts(plan, axes)
    for chart in drawable:
        if only is not None and chart not in only:
            continue
        if chart == "Optimization history":
            if sample.history is not None:
                figure = history_figure(sample.history, name)
            else:
                figure = _optuna_plot(vis.plot_optimization_history, study, **kwargs)
                if plan.few_trials:  # whole trial numbers, not 0.2 steps
                    figure.update_xaxes(dtick=1)
        elif chart == "Pareto front":
            figure = _optuna_plot(
                vis.plot_pareto_front, sample.study, target_names=list(plan.objective_names)
            )
        elif chart == "Parallel coordinates":
            figure = parallel_coordinates_figure(sample.study, axes, **kwargs)
        elif chart == "Parameter importances":
            try:
                info = parameter_importances(sample.study, axes, target)
            except (RuntimeError, ValueError, ZeroDivisionError):
                continue  # too few distinct values for fANOVA; the other charts still show
            figure = importances_figure(info, name)
        elif chart == "Slice":
            figure = slice_figure(sample.study, axes, **kwargs)
        else:
            figure = contour_figure(sample.study, axes, **kwargs)
        figures[chart] = figure
    return figures


def history_figure(points: tuple[tuple[int, float], ...], name: str) -> go.Figure:
    """Every finished trial's value by trial number, and the best so far as a step line.

    Args:
        points: ``(trial number, value)`` pairs (lower is better).
        name: The value's display name.
    """
    ordered = sorted(points)
    numbers = [n for n, _ in ordered]
    values = np.array([v for _, v in ordered], dtype=float)
    figure = go.Figure()
    figure.add_trace(
        go.Scattergl(
            x=numbers, y=values, mode="markers", name=name, marker={"color": PALETTE[0], "size": 4}
        )
    )
    figure.add_trace(
        go.Scatter(
            x=numbers,
            y=np.minimum.accumulate(values),
            mode="lines",
            line={"color": PALETTE[1], "shape": "hv"},
            name="best so far",
        )
    )
    figure.update_layout(
        title="Optimization history", xaxis_title="trial", yaxis_title=name, **LAYOUT
    )
    return figure


def importances_figure(info: ImportanceInfo, name: str) -> go.Figure:
    """fANOVA importances (:func:`automl_core.analysis.leaderboard.parameter_importances`) as
    horizontal bars, most important on top, the chart as tall as its bars.

    Optuna computes the importances; the bars are drawn here because Optuna's own chart
    re-reads every trial once per parameter for its hover text (minutes at 10,000 trials).

    Args:
        info: The importances to draw.
        name: The objective's display name.
    """
    figure = go.Figure(
        go.Bar(
            x=list(info.values),
            y=list(info.labels),
            orientation="h",
            marker_color=PALETTE[0],
            text=[f"{v:.2f}" for v in info.values],
            textposition="outside",
            cliponaxis=False,
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    top = max(info.values, default=1.0)
    figure.update_layout(
        **{**LAYOUT, "height": max(200, 34 * len(info.values) + 120)},
        title=f"Parameter importances for {name} (fANOVA)",
        xaxis={"title": "importance", "range": [0, top * 1.15], "tickformat": ".2f"},
        yaxis={"autorange": "reversed", "automargin": True},
    )
    _subtitle(figure, info.note)
    return figure


def anomaly_figure(report) -> go.Figure:
    """Validation and test reconstruction errors, overlaid, with the flagging threshold.

    Args:
        report: An :class:`automl_core.analysis.inspect.AnomalyReport`.

    Returns:
        Overlaid histograms of per-image MSE and a vertical threshold line.
    """
    fig = go.Figure()
    fig.add_trace(
        go.Histogram(
            x=report.validation_mse,
            name="validation (reference)",
            marker_color=PALETTE[0],
            opacity=0.6,
            histnorm="percent",
        )
    )
    fig.add_trace(
        go.Histogram(
            x=report.scores["mse"],
            name="test",
            marker_color=PALETTE[1],
            opacity=0.6,
            histnorm="percent",
        )
    )
    flagged = int(report.scores["flagged"].sum())
    fig.add_vline(
        x=report.threshold,
        line_dash="dash",
        line_color=PALETTE[3],
        annotation_text=f"threshold {report.threshold:.4g}: {flagged} flagged",
        annotation_position="top right",
    )
    fig.update_layout(
        barmode="overlay",
        title="Reconstruction error: test against validation",
        xaxis_title="per-image MSE",
        yaxis_title="% of images",
        **LAYOUT,
    )
    fig.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0})
    return fig


def controller_probabilities_figure(frame: pd.DataFrame) -> go.Figure:
    """The REINFORCE controller's choice probabilities over the trials it learned from.

    Args:
        frame: :func:`automl_core.search.controller.controller_probabilities`.

    Returns:
        One panel per parameter, one line per value, x = trials learned from.
    """
    parameters = list(dict.fromkeys(frame["parameter"])) if not frame.empty else []
    if not parameters:
        figure = go.Figure()
        figure.update_layout(title="The controller has no choice to make", **LAYOUT)
        return figure
    figure = make_subplots(
        rows=len(parameters), cols=1, shared_xaxes=True, subplot_titles=parameters
    )
    for row, parameter in enumerate(parameters, start=1):
        part = frame[frame["parameter"] == parameter]
        for index, (value, group) in enumerate(part.groupby("value", sort=False)):
            figure.add_trace(
                go.Scatter(
                    x=group["updates"],
                    y=group["probability"],
                    mode="lines",
                    name=f"{parameter}={value}",
                    line={"color": PALETTE[index % len(PALETTE)]},
                    customdata=group["trial"],
                    hovertemplate=(
                        f"{parameter}={value}<br>after %{{x}} trials (last: #%{{customdata}})"
                        "<br>p=%{y:.2f}<extra></extra>"
                    ),
                ),
                row=row,
                col=1,
            )
        figure.update_yaxes(range=[0, 1], title_text="p", row=row, col=1)
    figure.update_xaxes(title_text="trials learned from", row=len(parameters), col=1)
    figure.update_layout(
        **{**LAYOUT, "height": max(LAYOUT["height"], 160 * len(parameters))},
        title="Controller: choice probabilities over time",
    )
    return figure


def darts_weights_figure(frame: pd.DataFrame) -> go.Figure:
    """DARTS architecture weights as a heatmap: a row per cell and candidate, a column per epoch.

    Args:
        frame: :func:`automl_core.search.darts.darts_weights`.

    Returns:
        The heatmap (weights from 0 to 1; each cell's rows sum to 1 in every column).
    """
    figure = go.Figure()
    if frame.empty:
        figure.update_layout(title="No architecture weights yet", **LAYOUT)
        return figure
    rows = list(dict.fromkeys(zip(frame["cell"], frame["choice"], strict=True)))
    epochs = sorted(frame["epoch"].unique())
    table = frame.pivot_table(index=["cell", "choice"], columns="epoch", values="weight")
    z = np.array([[table.loc[row, epoch] for epoch in epochs] for row in rows])
    labels = [f"{cell}: {choice}" for cell, choice in rows]
    figure.add_trace(
        go.Heatmap(
            z=z,
            x=epochs,
            y=labels,
            zmin=0,
            zmax=1,
            colorscale=SEQUENTIAL,
            colorbar={"title": "weight"},
            hovertemplate="%{y}<br>epoch %{x}<br>weight %{z:.3f}<extra></extra>",
        )
    )
    figure.update_yaxes(autorange="reversed")
    figure.update_layout(
        **{**LAYOUT, "height": max(LAYOUT["height"], 22 * len(rows) + 120)},
        title="DARTS: architecture weights per cell over epochs",
        xaxis_title="epoch (0: before training)",
    )
    return figure


# the charts a strategy's views name (automl_core.search.strategies.StrategyView.chart)
STRATEGY_CHARTS: dict[str, Callable[[pd.DataFrame], go.Figure]] = {
    "controller_probabilities": controller_probabilities_figure,
    "darts_weights": darts_weights_figure,
}


def strategy_view_figure(view: StrategyView) -> go.Figure | pd.DataFrame:
    """A strategy's view drawn: its chart, or its table when it names none."""
    return view.frame if view.chart is None else STRATEGY_CHARTS[view.chart](view.frame)
