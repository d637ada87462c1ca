"""Reconstructions: originals against outputs, error distributions, worst images, compression."""

from __future__ import annotations

import numpy as np
import streamlit as st

from automl_core import charts, inspect
from dashboard import inspect_widgets as iw
from dashboard import state

state.ensure_routed(__file__)
st.title("Reconstructions")
with state.shown_errors():
    picked = iw.inspected_trial()
    if picked is None:
        st.stop()
    data = iw.dataset(picked)
    recon, scores = iw.test_reconstructions(picked.study, picked.trial, picked.url)
    table = inspect.scores_frame(scores, data.y_test)
    n = len(data.x_test)
    st.caption(
        f"Study **{picked.study}**, trial **#{picked.trial}**, {n} test "
        f"image{'s' if n != 1 else ''}: mean PSNR "
        f"{scores.psnr.mean():.2f} dB, mean SSIM {scores.ssim.mean():.3f}."
    )

    st.subheader("Originals (top) and reconstructions (bottom)")
    count = iw.count_slider("Images", min(20, n), min(10, n), key="sample_size")
    seed = st.number_input("Sample seed", 0, 10_000, 0, key="sample_seed")
    sample = np.sort(np.random.default_rng(int(seed)).choice(n, count, replace=False))
    titles = [f"#{i}" for i in sample] + [f"{scores.psnr[i]:.1f} dB" for i in sample]
    iw.chart(
        charts.image_strip_figure(
            np.concatenate([data.x_test[sample], recon[sample]]), titles, max_cols=count
        ),
        key="fig_sample",
    )

    st.subheader("Error distributions")
    iw.chart(charts.score_histograms_figure(table), key="fig_hist")
    iw.csv_download(
        table,
        "Per-image scores (CSV)",
        f"{picked.study}-trial{picked.trial}-scores.csv",
        "scores_csv",
    )

    st.subheader("Worst reconstructions (anomaly ranking)")
    k = iw.count_slider("How many", min(20, n), min(8, n), key="worst_k")
    worst = inspect.worst_reconstructions(scores, k)
    idx = worst["index"].to_numpy()
    iw.chart(
        charts.image_strip_figure(
            np.concatenate([data.x_test[idx], recon[idx]]),
            [f"#{i}" for i in idx] + [f"MSE {scores.mse[i]:.4f}" for i in idx],
            max_cols=k,
        ),
        key="fig_worst",
    )
    st.dataframe(worst, hide_index=True)

    st.subheader("Compression curve")
    curve = inspect.compression_curve(iw.trials_table(picked.study, picked.url))
    if curve.empty:
        st.info("No finished trial has a test PSNR yet.")
    else:
        iw.chart(charts.compression_curve_figure(curve, picked.trial), key="fig_curve")
        iw.csv_download(
            curve, "Compression curve (CSV)", f"{picked.study}-compression.csv", "curve_csv"
        )
