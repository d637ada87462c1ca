"""Latent space: projections of the encoded test split, decoding by hand, interpolation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from automl_core import charts, inspect, latent
from automl_core.errors import AutoMLError
from dashboard import inspect_widgets as iw
from dashboard import state

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


def _take_selection() -> None:
    """Chart selection -> the two picked images (newest last)."""
    points = st.session_state["scatter"].selection.points
    chosen = [int(p["customdata"][0]) for p in points if p.get("customdata") is not None]
    if chosen:
        st.session_state["pick_a"] = chosen[0]
        if len(chosen) > 1:
            st.session_state["pick_b"] = chosen[-1]


def sliders_ui(z: np.ndarray, low: np.ndarray, high: np.ndarray, key: str) -> np.ndarray:
    """One slider per bottleneck unit, starting at the picked image's values."""
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


state.ensure_routed(__file__)
st.title("Latent space")
with state.shown_errors():
    picked = iw.inspected_trial()
    if picked is None:
        st.stop()
    data = iw.dataset(picked)
    method, params = projection_ui()
    compare = compare_ui(picked)
    labels = data.y_test if data.has_labels else None
    try:
        z_test = iw.latents(picked.study, picked.trial, picked.url, "test")
        proj = iw.projection(picked.study, picked.trial, picked.url, "test", method, params)
        other = (
            iw.projection(picked.study, compare, picked.url, "test", method, params)
            if compare is not None
            else None
        )
    except AutoMLError as exc:
        st.error(str(exc))
        st.stop()
    for note in proj.notices:
        st.warning(note)
    if labels is None:
        st.info("This dataset has no labels: points are not coloured.")
    variational = inspect.is_variational(picked.model)
    if variational:
        st.caption("A variational model: each point is the mean of its image's code.")

    for key, default in (("pick_a", 0), ("pick_b", min(1, len(z_test) - 1))):
        if not 0 <= st.session_state.get(key, -1) < len(z_test):
            st.session_state[key] = default
    selected = [st.session_state["pick_a"], st.session_state["pick_b"]]
    fig = charts.projection_figure(
        proj, labels, data.class_names, selected, title=f"Trial #{picked.trial}: {method.upper()}"
    )
    if other is None:
        iw.chart(fig, key="scatter", on_select=_take_selection, selection_mode="points")
    else:
        left, right = st.columns(2)
        with left:
            iw.chart(fig, key="scatter", on_select=_take_selection, selection_mode="points")
        with right:
            iw.chart(
                charts.projection_figure(
                    other,
                    labels,
                    data.class_names,
                    selected,
                    title=f"Trial #{compare}: {method.upper()}",
                ),
                key="scatter_compare",
            )
    st.caption("Click a point (shift-click a second one) to pick images; their rings follow.")
    iw.csv_download(
        pd.DataFrame(
            {
                "index": np.arange(len(proj.points)),
                "x": proj.points[:, 0],
                "y": proj.points[:, 1],
                "label": labels if labels is not None else None,
            }
        ),
        "Projection (CSV)",
        f"{picked.study}-trial{picked.trial}-{method}.csv",
        "proj_csv",
    )

    st.subheader("Representation score")
    try:
        score = iw.probe_score(picked.study, picked.trial, picked.url)
        st.metric(
            "Linear-probe accuracy (train → test)",
            f"{score.accuracy:.1%}",
            delta=f"{score.accuracy - score.chance:+.1%} over chance ({score.chance:.1%})",
        )
    except AutoMLError as exc:
        st.info(f"Linear probe hidden: {exc}.")

    last = len(z_test) - 1
    a_col, b_col = st.columns(2)
    a = a_col.number_input("Picked image #", 0, last, key="pick_a")
    b = b_col.number_input("Second image # (interpolation end)", 0, last, key="pick_b")
    st.subheader(f"Decode by hand: image #{a}")
    model = picked.model
    low, high = z_test.min(axis=0), z_test.max(axis=0)
    margin = (high - low) * 0.25 + 1e-3
    edited = sliders_ui(z_test[a], low - margin, high + margin, f"{picked.trial}-{a}")
    decoded = inspect.decode(model, np.stack([z_test[a], edited]))
    iw.chart(
        charts.image_strip_figure(
            np.stack([data.x_test[a], decoded[0], decoded[1]]),
            [f"image #{a}", "reconstruction", "decoded from the sliders"],
            height=240,
        ),
        key="fig_decode",
    )

    st.subheader(f"Interpolation from #{a} to #{b}")
    steps = st.slider("Steps", 3, 16, 8, key="steps")
    path = inspect.decode(model, latent.interpolate(z_test[a], z_test[b], steps))
    iw.chart(
        charts.image_strip_figure(
            path, [f"{t:.2f}" for t in np.linspace(0, 1, steps)], max_cols=steps
        ),
        key="fig_path",
    )

    if variational:
        st.subheader("Samples from the prior")
        st.caption(
            "Codes drawn from N(0, I), the prior the KL term pulls the means toward, decoded."
        )
        count = st.slider("Samples", 4, 32, 12, key="prior_count")
        prior_seed = st.number_input("Seed", 0, 10_000, 0, key="prior_seed")
        samples = iw.prior_samples(picked.study, picked.trial, picked.url, count, int(prior_seed))
        iw.chart(
            charts.image_strip_figure(samples, [""] * count, max_cols=min(count, 12)),
            key="fig_prior",
        )
