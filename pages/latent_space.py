"""Latent space: projections of the encoded test split, decoding by hand, interpolation."""

from __future__ import annotations

import numpy as np
import streamlit as st

from automl_core.analysis import charts, inspect, latent
from automl_core.errors import AutoMLError
from dashboard import inspect_widgets as iw
from dashboard import latent_widgets as lw
from dashboard import state

state.ensure_routed(__file__)
st.title("Latent space")
with state.shown_errors():
    picked = iw.inspected_trial()
    if picked is None:
        st.stop()
    data = iw.dataset(picked)
    method, params = lw.projection_ui()
    compare = lw.compare_ui(picked)
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
    found, thumbs = lw.map_controls_ui(len(z_test), labels, data.class_names)
    selected = [st.session_state["pick_a"], st.session_state["pick_b"]]
    highlight = None if found is None else found.indices
    shown = None
    if thumbs:
        shown = latent.thumbnails(
            data.x_test, first=selected, preferred=found.indices if found else ()
        )
    look = {"highlight": highlight, "thumbnails": shown}
    fig = charts.projection_figure(
        proj,
        labels,
        data.class_names,
        selected,
        title=f"Trial #{picked.trial}: {method.upper()}",
        **look,
    )
    columns = st.columns([3, 1] if other is None else [2, 2, 1])
    with columns[0]:
        iw.chart(fig, key="scatter", on_select=lw.take_selection, selection_mode="points")
    if other is not None:
        with columns[1]:
            iw.chart(
                charts.projection_figure(
                    other,
                    labels,
                    data.class_names,
                    selected,
                    title=f"Trial #{compare}: {method.upper()}",
                    **look,
                ),
                key="scatter_compare",
            )
    with columns[-1]:
        lw.picked_image_ui(picked.model, data, z_test[selected[0]], selected[0])
    st.caption(
        "Hover a point for its image number and class; click it (shift-click a second one) "
        "to pick images: the first is shown beside the map, and their rings follow."
    )
    iw.csv_download(
        latent.projection_table(proj, labels),
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
            delta=f"{score.over_chance_points:+.1f} points over chance ({score.chance:.1%})",
        )
    except AutoMLError as exc:
        st.info(f"Linear probe hidden: {exc}.")

    last = len(z_test) - 1
    a_col, b_col = st.columns(2)
    a = a_col.number_input("Picked image #", 0, last, key="pick_a")
    b = b_col.number_input("Second image # (interpolation end)", 0, last, key="pick_b")
    st.subheader(f"Decode by hand: image #{a}")
    model = picked.model
    edited = lw.sliders_ui(z_test[a], z_test, f"{picked.trial}-{a}")
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
        lw.prior_samples_ui(picked)
