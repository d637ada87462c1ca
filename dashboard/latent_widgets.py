"""Widgets of the Latent space page: projection method, comparison, the map's search box and
Thumbnails toggle, chart selection, the picked image beside the map and the bottleneck
sliders.

Each reads widgets and returns plain values; the numbers behind them come from
:mod:`automl_core.analysis.latent`.
"""

from __future__ import annotations

import re

import numpy as np
import streamlit as st

from automl_core.analysis import charts, inspect, latent
from automl_core.errors import ConfigError
from automl_core.model import metrics
from dashboard import inspect_widgets as iw

MAX_SLIDERS = 32


def projection_ui() -> tuple[str, tuple[tuple[str, float], ...]]:
    """Method and its parameters from the projection registry (sidebar)."""
    method = st.sidebar.selectbox(
        "Projection",
        list(latent.PROJECTIONS),
        key="method",
        format_func=str.upper,
        help="\n\n".join(
            f"**{k.upper()}**: {m.description}" for k, m in latent.PROJECTIONS.items()
        ),
    )
    params = []
    for p in latent.PROJECTIONS[method].parameters:
        step = 1 if isinstance(p.default, int) else 0.01
        value = st.sidebar.slider(
            p.name,
            type(p.default)(p.low),
            type(p.default)(p.high),
            p.default,
            step=type(p.default)(step),
            help=p.help,
            key=f"{method}_{p.name}",
        )
        params.append((p.name, value))
    return method, tuple(params)


def compare_ui(picked) -> int | None:
    """A second trial to show side by side (sidebar)."""
    frame = iw.trials_table(picked.study, picked.url)
    others = [int(t) for t in frame.loc[frame["has_model"], "trial"] if int(t) != picked.trial]
    choice = st.sidebar.selectbox(
        "Compare with trial",
        [None, *others],
        key="compare_trial",
        format_func=lambda t: "none" if t is None else f"#{t}",
    )
    return choice


def plain_markdown(text: str) -> str:
    """Text for ``st.caption`` / ``st.warning`` that shows as written: its ASCII punctuation is
    backslash-escaped, so a class name or query such as ``[x](https://...)`` is no link."""
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", text)


def _pick_found(count: int, labels: np.ndarray | None, class_names) -> None:
    """Search box callback: an image number that is on the map becomes the picked image."""
    try:
        found = latent.find_points(st.session_state["latent_search"], count, labels, class_names)
    except ConfigError:
        return
    if found is not None and found.kind == "image":
        st.session_state["pick_a"] = int(found.indices[0])


def map_controls_ui(
    count: int, labels: np.ndarray | None, class_names: tuple[str, ...] | None
) -> tuple[latent.PointMatch | None, bool]:
    """The map's search box and Thumbnails toggle, and what the search found.

    A found image number also becomes the picked image. A search that finds nothing, or text
    that is no image number, is said in a warning.

    Returns:
        ``(the points found or None, whether to draw thumbnails)``.
    """
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    query = left.text_input(
        "Find an image or a class",
        key="latent_search",
        max_chars=100,
        placeholder="an image number (42 or #42) or a class name (class 3, cat)",
        help="An image number is ringed and picked; a class's images are outlined. Every other "
        "point is dimmed. Clear the box to see the whole map again.",
        on_change=_pick_found,
        args=(count, labels, class_names),
    )
    shown = right.toggle(
        "Thumbnails",
        key="thumbnails",
        help=f"Draws the images themselves at their points: up to {latent.THUMBNAIL_LIMIT} "
        "(the picked images, then a search's matches, then a fixed random sample), framed in "
        "their class colour. Zoom in to see them larger.",
    )
    try:
        found = latent.find_points(query, count, labels, class_names)
    except ConfigError as exc:
        st.warning(plain_markdown(str(exc)))
        return None, shown
    if found is not None:
        st.caption(plain_markdown(found.message))
    return found, shown


def picked_image_ui(model, data, z: np.ndarray, index: int) -> None:
    """The picked image and its reconstruction, with its class and scores (beside the map)."""
    image = data.x_test[index]
    rebuilt = np.clip(inspect.decode(model, z[None])[0], 0, 1)
    scores = metrics.reconstruction_scores(image[None], rebuilt[None])
    name = f", class {data.label_name(int(data.y_test[index]))}" if data.has_labels else ""
    st.markdown(plain_markdown(f"Picked: image #{index}{name}"))
    iw.chart(
        charts.image_strip_figure(
            np.stack([image, rebuilt]), ["image", "reconstruction"], max_cols=1, height=380
        ),
        key="fig_picked",
    )
    st.caption(f"PSNR {scores.psnr[0]:.1f} dB, SSIM {scores.ssim[0]:.3f}")


def take_selection() -> None:
    """Chart selection -> the two picked images (newest last)."""
    points = st.session_state["scatter"].selection.points
    chosen = [int(p["customdata"][0]) for p in points if p.get("customdata") is not None]
    if chosen:
        st.session_state["pick_a"] = chosen[0]
        if len(chosen) > 1:
            st.session_state["pick_b"] = chosen[-1]


def sliders_ui(z: np.ndarray, z_all: np.ndarray, key: str) -> np.ndarray:
    """One slider per bottleneck unit, starting at the picked image's values.

    Args:
        z: The picked image's code.
        z_all: Every code of the split (the sliders span their range, with a margin).
        key: Identifies the picked image; the sliders reset when it changes.

    Returns:
        The code as the sliders set it.
    """
    low, high = latent.slider_ranges(z_all)
    if st.session_state.get("_sliders_for") != key:
        for i, v in enumerate(z[:MAX_SLIDERS]):
            st.session_state[f"z_{i}"] = float(v)
        st.session_state["_sliders_for"] = key
    edited = z.copy()
    cols = st.columns(4)
    for i in range(min(len(z), MAX_SLIDERS)):
        edited[i] = cols[i % 4].slider(
            f"z{i + 1}",
            float(low[i]),
            float(high[i]),
            step=float(high[i] - low[i]) / 100 or 0.01,
            key=f"z_{i}",
        )
    if len(z) > MAX_SLIDERS:
        st.caption(f"Sliders for the first {MAX_SLIDERS} of {len(z)} units.")
    return edited


def prior_samples_ui(picked) -> None:
    """Images decoded from codes drawn from a variational model's prior, with their controls."""
    st.subheader("Samples from the prior")
    st.caption("Codes drawn from N(0, I), the prior the KL term pulls the means toward, decoded.")
    count = st.slider("Samples", 4, 32, 12, key="prior_count")
    prior_seed = st.number_input("Seed", 0, 10_000, 0, key="prior_seed")
    samples = iw.prior_samples(picked.study, picked.trial, picked.url, count, int(prior_seed))
    iw.chart(
        charts.image_strip_figure(samples, [""] * count, max_cols=min(count, 12)),
        key="fig_prior",
    )
