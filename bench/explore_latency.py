"""Latency of the inspection pages' work: first render (cold) and cached render.

Run: ``python bench/explore_latency.py [--quick]``. Uses ``mnist-5k`` encoded by a small
3-layer autoencoder trained for one epoch here. "First" is the computation plus building the
Plotly figures; "cached" is a hit of the same ``st.cache_data`` the pages use plus the figures.
Prints a Markdown table (paste it under "## Exploration latency" in bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np


def _timed(function):
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the 5,000-point t-SNE")
    args = parser.parse_args()
    logging.getLogger("streamlit").setLevel(logging.ERROR)

    import keras
    import streamlit as st

    from automl_core.analysis import charts, inspect, latent
    from automl_core.model.datasets import load_dataset
    from automl_core.model.models import build_autoencoder
    from automl_core.model.space import ModelConfig

    data = load_dataset("mnist-5k", seed=0)
    images = np.concatenate([data.x_train, data.x_val, data.x_test])
    labels = np.concatenate([data.y_train, data.y_val, data.y_test])
    config = ModelConfig(num_conv_layers=3, filters=16, latent_dim=16)
    model = build_autoencoder(config, data.input_shape).autoencoder
    model.compile("adam", "mse", steps_per_execution=16)
    model.fit(data.x_train, data.x_train, batch_size=64, epochs=1, verbose=0)
    rows: list[tuple[str, float, float, str]] = []

    # filters: extraction and one heatmap grid per layer
    def filters_render(filters):
        return [
            charts.filters_figure(f, "mean" if f.num_input_channels > 1 else 0) for f in filters
        ]

    cached_filters = st.cache_data(lambda: inspect.conv_filters(model))
    _, first = _timed(lambda: filters_render(cached_filters()))
    _, cached = _timed(lambda: filters_render(cached_filters()))
    rows.append(("filters, 3 encoder layers (16 filters each)", first, cached, ""))

    # activations: the probe is built once per model (cache_resource), then per image
    def activations_render(probe, image):
        acts = probe(image)
        return [charts.activation_figure(a) for a in acts]

    (probe, build) = _timed(lambda: inspect.ActivationProbe(model))
    _, first = _timed(lambda: activations_render(probe, data.x_test[0]))
    _, cached = _timed(lambda: activations_render(probe, data.x_test[1]))
    rows.append(
        (
            "activations of one image, 13 layers",
            build + first,
            cached,
            "cached = probe cached, a new image (nothing of it cached)",
        )
    )

    z_all, encode_s = _timed(lambda: inspect.encode(model, images))
    rows.append(("encode 5,000 images", encode_s, float("nan"), "once per trial, then cached"))

    @st.cache_data(max_entries=32)
    def projection(n, method, params):
        return latent.latent_projection(z_all[:n], method, dict(params))

    # numba compiles UMAP's and pynndescent's kernels once per process: timed on its own
    _, jit = _timed(lambda: latent.latent_projection(z_all[:4200], "umap", {"n_neighbors": 5}))
    rows.append(
        (
            "UMAP numba JIT warm-up (4,200 points)",
            jit,
            float("nan"),
            "once per server process, before any projection below",
        )
    )

    plan = [("umap", 1000), ("umap", 5000), ("tsne", 1000), ("tsne", 5000), ("pca", 5000)]
    for method, n in plan:
        if args.quick and method == "tsne" and n == 5000:
            continue
        params = tuple(latent.projection_params(method).items())

        def render(n=n, method=method, params=params):
            proj = projection(n, method, params)
            return charts.projection_figure(proj, labels[:n], data.class_names)

        _, first = _timed(render)
        _, cached = _timed(render)
        note = "sklearn Barnes-Hut, 1,000 iterations" if method == "tsne" else ""
        rows.append((f"{method.upper()} of {n:,} latent points", first, cached, note))

    print(
        f"keras {keras.__version__}, {os.cpu_count()} CPU cores, load average "
        f"{os.getloadavg()[0]:.2f} at the end"
    )
    print("| what | first render (s) | cached render (s) | note |")
    print("|---|---:|---:|---|")
    for what, first, cached, note in rows:
        cached_text = "–" if np.isnan(cached) else f"{cached:.3f}"
        print(f"| {what} | {first:.3f} | {cached_text} | {note} |")


if __name__ == "__main__":
    main()
