"""Reconstructions: originals against outputs, error distributions, worst images, compression."""

from __future__ import annotations

import numpy as np
import streamlit as st

from automl_core.analysis import charts, inspect
from automl_core.errors import AutoMLError
from automl_core.storage.results import VS_PCA_HELP
from dashboard import inspect_widgets as iw
from dashboard import state

DENOISING_IMAGES = 200  # test images the denoising PSNRs are averaged over
NOISE_LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 11))  # 0.05 to 0.5


def noise_ui(own: tuple[str, float] | None) -> tuple[str, float]:
    """The noise kind and level to add, starting at the model's own training noise."""
    kinds = list(inspect.NOISE_KINDS)
    left, right = st.columns(2)
    kind = left.selectbox("Noise", kinds, kinds.index(own[0]) if own else 0, key="denoise_kind")
    wanted = own[1] if own else 0.1
    level = right.select_slider(
        "Noise level",
        NOISE_LEVELS,
        min(NOISE_LEVELS, key=lambda v: abs(v - wanted)),
        key="denoise_level",
        help="Gaussian: the noise's standard deviation; masking: the share of values set to 0; "
        "salt-and-pepper: the share of pixels set to black or white.",
    )
    return kind, level


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
    baseline = iw.trial_pca(picked)
    if baseline is not None:
        k, pca = baseline
        psnr, ssim = float(scores.psnr.mean()), float(scores.ssim.mean())
        cols = st.columns(3)
        cols[0].metric(
            "Test PSNR", f"{psnr:.2f} dB", f"{psnr - pca.psnr:+.2f} dB vs PCA", help=VS_PCA_HELP
        )
        cols[1].metric("Test SSIM", f"{ssim:.3f}", f"{ssim - pca.ssim:+.3f} vs PCA")
        cols[2].metric(
            f"PCA, {pca.n_components} components",
            f"{pca.psnr:.2f} dB",
            help=f"SSIM {pca.ssim:.3f}. PCA fitted on the training split, scored on the same "
            "test images. " + (pca.note or ""),
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

    st.subheader("Anomaly scores")
    st.caption(
        "Each test image's reconstruction error against the validation images': an image "
        "reconstructed worse than nearly all of them is unlike what the model learned."
    )
    percentile = st.slider(
        "Flag above this percentile of the validation errors",
        50.0,
        100.0,
        99.0,
        0.5,
        key="anomaly_percentile",
    )
    report = inspect.anomaly_report(
        scores.mse, iw.validation_errors(picked.study, picked.trial, picked.url), percentile
    )
    iw.chart(charts.anomaly_figure(report), key="fig_anomaly")
    flagged = report.flagged[:20]
    if len(flagged):
        iw.chart(
            charts.image_strip_figure(
                data.x_test[flagged],
                [f"#{i} · p{report.scores['percentile'][i]:.0f}" for i in flagged],
                max_cols=min(10, len(flagged)),
            ),
            key="fig_flagged",
        )
    else:
        st.info(f"No test image is above the threshold (MSE {report.threshold:.4g}).")
    iw.csv_download(
        report.scores,
        "Anomaly scores (CSV)",
        f"{picked.study}-trial{picked.trial}-anomalies.csv",
        "anomaly_csv",
    )

    st.subheader("Denoising: noisy, denoised, clean")
    own = inspect.model_noise(picked.model)
    if own is None:
        st.caption(
            f"Trial #{picked.trial} was not trained for denoising: the gain shows how far plain "
            "reconstruction removes noise."
        )
    else:
        st.caption(
            f"Trial #{picked.trial} was trained to remove {own[0]} noise of level {own[1]:g}."
        )
    kind, level = noise_ui(own)
    scored = min(n, DENOISING_IMAGES)
    result = iw.denoising_scores(picked.study, picked.trial, picked.url, scored, level, kind, 0)
    shown = min(8, n)
    iw.chart(
        charts.image_strip_figure(
            np.concatenate([result.noisy[:shown], result.denoised[:shown], data.x_test[:shown]]),
            [f"noisy {v:.1f} dB" for v in result.noisy_scores.psnr[:shown]]
            + [f"denoised {v:.1f} dB" for v in result.denoised_scores.psnr[:shown]]
            + ["clean"] * shown,
            max_cols=shown,
        ),
        key="fig_denoise",
    )
    cols = st.columns(3)
    cols[0].metric("Noisy vs clean", f"{result.noisy_psnr:.2f} dB")
    cols[1].metric("Denoised vs clean", f"{result.denoised_psnr:.2f} dB")
    cols[2].metric("Gain", f"{result.gain_db:+.2f} dB")
    st.caption(f"Mean PSNR over the first {scored} test image{'s' if scored != 1 else ''}.")

    st.subheader("Compression curve")
    curve = inspect.compression_curve(iw.trials_table(picked.study, picked.url))
    missing = curve.loc[curve["pca_psnr"].isna(), "latent_dim"] if not curve.empty else []
    if len(missing):  # a study from before the baseline was stored: computed once, cached
        try:
            pca = {int(k): iw.pca_baseline(picked.study, picked.url, int(k)).psnr for k in missing}
            curve = inspect.compression_curve(iw.trials_table(picked.study, picked.url), pca)
        except (AutoMLError, ValueError, OSError, MemoryError) as exc:
            st.caption(f"PCA line left out: {exc}")
    if curve.empty:
        st.info("No finished trial has a test PSNR yet.")
    else:
        iw.chart(charts.compression_curve_figure(curve, picked.trial), key="fig_curve")
        st.caption(
            "Dashed: PCA with as many components as the latent size, fitted on the same "
            "training split: below it, a model does worse than a linear projection."
        )
        iw.csv_download(
            curve, "Compression curve (CSV)", f"{picked.study}-compression.csv", "curve_csv"
        )
