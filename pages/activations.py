"""Activations: every layer's output for a test image, an uploaded one, or a drawing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from automl_core.analysis import charts, inspect
from automl_core.errors import AutoMLError
from automl_core.model import metrics
from automl_core.storage.results import VS_PCA_HELP
from dashboard import inspect_widgets as iw
from dashboard import state

SOURCES = ("Test image", "Upload", "Draw")


def test_image_ui(data) -> tuple[np.ndarray, str]:
    """A test image picked by class and index within the class."""
    left, right = st.columns(2)
    indices = np.arange(len(data.x_test))
    if data.has_labels:
        classes = sorted(int(v) for v in np.unique(data.y_test))
        label = left.selectbox("Class", classes, key="act_class", format_func=data.label_name)
        indices = indices[data.y_test == label]
    position = right.number_input(
        f"Image (of {len(indices)})", 0, len(indices) - 1, 0, key="act_index"
    )
    index = int(indices[int(position)])
    return data.x_test[index], f"test image #{index}"


def upload_ui(input_shape) -> tuple[np.ndarray | None, str]:
    """An uploaded file, converted to the model's channels and size (its bytes not kept)."""
    most = iw.upload_size_mb("max_activation_upload_bytes")
    image, name = iw.uploaded_image(
        f"Image file (PNG, JPEG, ...; at most {most} MB)", "act_upload", input_shape
    )
    if image is None:
        st.info(
            "Upload an image: it is resized to the model's input "
            f"{input_shape[0]}x{input_shape[1]} and converted to "
            f"{'grayscale' if input_shape[2] == 1 else 'RGB'}."
        )
    return image, name


def canvas_ui(input_shape) -> tuple[np.ndarray | None, str]:
    """A drawing (white strokes on black, like MNIST)."""
    from streamlit_drawable_canvas import st_canvas

    stroke = st.slider("Stroke width", 5, 40, 18, key="act_stroke")
    result = st_canvas(
        stroke_width=stroke,
        stroke_color="#FFFFFF",
        background_color="#000000",
        height=224,
        width=224,
        drawing_mode="freedraw",
        key="act_canvas",
    )
    image_data = getattr(result, "image_data", None)
    if image_data is None or not np.asarray(image_data)[..., :3].any():
        st.info(
            "The canvas is blank: draw something (strokes are cropped and centred, like "
            "MNIST digits)."
        )
        return None, ""
    return inspect.image_from_canvas(np.asarray(image_data), input_shape), "drawing"


state.ensure_routed(__file__)
st.title("Activations")
with state.shown_errors():
    picked = iw.inspected_trial()
    if picked is None:
        st.stop()
    data = iw.dataset(picked)
    probe = iw.activation_probe(picked.study, picked.trial, picked.url)
    source = st.segmented_control("Input", SOURCES, default=SOURCES[0], key="act_source")
    try:
        if source == "Upload":
            image, name = upload_ui(probe.input_shape)
        elif source == "Draw":
            image, name = canvas_ui(probe.input_shape)
        else:
            image, name = test_image_ui(data)
        if image is None:
            st.stop()
        activations = probe(image)
    except AutoMLError as exc:
        st.error(str(exc))
        st.stop()

    recon = activations[-1].values
    scores = metrics.reconstruction_scores(image[None], recon[None])
    pca = iw.image_pca_scores(picked, image)
    cols = st.columns([2, 1, 1])
    with cols[0]:
        iw.chart(
            charts.image_strip_figure(
                np.stack([image, recon]), [f"input: {name}", "reconstruction"], height=260
            ),
            key="fig_pair",
        )
    gap = f"{scores.psnr[0] - pca[1].psnr[0]:+.2f} dB vs PCA" if pca else None
    cols[1].metric("PSNR", f"{scores.psnr[0]:.2f} dB", gap, help=VS_PCA_HELP if pca else None)
    cols[2].metric("SSIM", f"{scores.ssim[0]:.3f}")
    if pca:
        cols[1].caption(
            f"PCA, {pca[0]} components: {pca[1].psnr[0]:.2f} dB, SSIM {pca[1].ssim[0]:.3f} "
            "(this image through PCA fitted on the training split, as many components as "
            "the latent size)"
        )
    latent_act = next(a for a in activations if a.layer == "latent")
    iw.chart(charts.latent_bar_figure(latent_act.values), key="fig_latent")
    iw.csv_download(
        pd.DataFrame(
            {"unit": np.arange(1, len(latent_act.values) + 1), "value": latent_act.values}
        ),
        "Latent vector (CSV)",
        f"{picked.study}-trial{picked.trial}-latent.csv",
        "latent_csv",
    )

    for part, tab in zip(
        ("encoder", "decoder"), st.tabs(["Encoder layers", "Decoder layers"]), strict=True
    ):
        with tab:
            for act in activations:
                if act.part == part and act.is_map:
                    iw.chart(charts.activation_figure(act), key=f"fig_{act.layer}")
