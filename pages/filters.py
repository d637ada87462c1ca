"""Filters: every learned convolution kernel as a heatmap, weight histograms, parameters."""

from __future__ import annotations

import streamlit as st

from automl_core.analysis import charts, inspect
from dashboard import inspect_widgets as iw
from dashboard import state


def channel_ui(layer: inspect.LayerFilters):
    """Which input channel of a layer to draw (an RGB composite for 3-channel input)."""
    n = layer.num_input_channels
    if n == 1:
        return 0
    options = (["rgb"] if n == 3 else []) + ["mean", *range(n)]
    return st.selectbox(
        "Input channel", options, key=f"channel_{layer.layer}", format_func=channel_name
    )


def channel_name(channel) -> str:
    """How a channel choice reads in the select box."""
    names = {"rgb": "RGB composite", "mean": "mean over channels"}
    return names[channel] if isinstance(channel, str) else f"channel {channel + 1}"


state.ensure_routed(__file__)
st.title("Filters")
with state.shown_errors():
    picked = iw.inspected_trial()
    if picked is None:
        st.stop()
    with_decoder = st.sidebar.toggle("Include the decoder's convolutions", key="with_decoder")
    filters = inspect.conv_filters(picked.model, include_decoder=with_decoder)
    plural = "s" if len(filters) != 1 else ""
    st.caption(
        f"Study **{picked.study}**, trial **#{picked.trial}**: {len(filters)} convolution "
        f"layer{plural}. Colours are centred on 0 (red positive, blue negative), one scale per "
        "layer; hover a cell for its exact weight."
    )

    kernels_tab, weights_tab = st.tabs(["Kernels", "Weights and parameters"])
    with kernels_tab:
        left, right = st.columns(2)
        with left:
            iw.csv_download(
                inspect.filters_frame(filters),
                "All kernels (CSV)",
                f"{picked.study}-trial{picked.trial}-filters.csv",
                "filters_csv",
            )
        right.download_button(
            "All kernels (JSON)",
            inspect.filters_json(filters),
            file_name=f"{picked.study}-trial{picked.trial}-filters.json",
            mime="application/json",
            key="filters_json",
            icon=":material/download:",
        )
        for layer in filters:
            st.subheader(layer.layer)
            channel = channel_ui(layer)
            iw.chart(charts.filters_figure(layer, channel), key=f"fig_{layer.layer}")

    with weights_tab:
        params = inspect.layer_parameters(picked.model)
        weights = inspect.layer_weights(picked.model, include_decoder=with_decoder)
        iw.chart(charts.weight_histogram_figure(weights), key="fig_weights")
        iw.chart(charts.parameters_figure(params), key="fig_params")
        st.dataframe(params, hide_index=True)
        iw.csv_download(
            params,
            "Parameters (CSV)",
            f"{picked.study}-trial{picked.trial}-params.csv",
            "params_csv",
        )
