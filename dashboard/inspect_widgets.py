"""Shared pieces of the inspection pages: the inspected trial, cached computations, downloads.

Everything heavy is cached here once per (study, trial, ...) so the four pages share it:
models and activation probes with ``st.cache_resource``, arrays and tables with
``st.cache_data``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from automl_core import limits
from automl_core.analysis import inspect, latent
from automl_core.errors import AutoMLError, DatasetError
from automl_core.model import baseline, metrics, representation
from automl_core.storage import store
from dashboard import state

SHOWN_TRIAL_NUMBERS = 20  # in the "trials with a model" list of a warning


@dataclass(frozen=True)
class Inspected:
    """The study and trial a page looks at, and the loaded model."""

    study: str
    trial: int
    url: str
    model: object


def trials_table(study: str, url: str) -> pd.DataFrame:
    """The study's trials, re-read only when a trial is added or finishes (one small query a
    rerun: a 10,000-trial study is not read again on every page)."""
    return _trials_table(study, url, state.board_version((study,), url))


@st.cache_data(max_entries=16, show_spinner=False)
def _trials_table(study: str, url: str, version: tuple) -> pd.DataFrame:
    from automl_core.storage.results import trials_frame

    return trials_frame(state.load_study(study, url))


def _explain_missing(frame: pd.DataFrame, wanted: int, shown: int | None) -> None:
    """Says why the trial in the URL has no model, and what is shown instead."""
    rows = frame[frame["trial"] == wanted]
    if rows.empty:
        st.warning(f"Trial {wanted} does not exist in this study.")
        return
    row = rows.iloc[0]
    why = f" ({row['note']})" if isinstance(row["note"], str) and row["note"] else ""
    with_model = [f"#{int(t)}" for t in frame.loc[frame["has_model"], "trial"]]
    finished = ", ".join(with_model[:SHOWN_TRIAL_NUMBERS])
    if len(with_model) > SHOWN_TRIAL_NUMBERS:
        finished += f" and {len(with_model) - SHOWN_TRIAL_NUMBERS:,} more"
    instead = f" Showing trial {shown} instead." if shown is not None else ""
    st.warning(
        f"Trial {wanted} is {row['state'].lower()} and has no model{why}.{instead} "
        f"Trials with a model: {finished or 'none yet'}."
    )


def inspected_trial() -> Inspected | None:
    """Sidebar study and trial pickers, then the trial's model; explains when there is none.

    Returns:
        The inspected trial, or None when the page cannot show anything (the page says why).
    """
    study = state.study_picker()
    if study is None:
        st.info("No study yet: launch a search on the Search page.")
        return None
    url = state.storage_url()
    wanted = st.query_params.get("trial")
    trial = state.trial_picker(study)
    frame = trials_table(study, url)
    with_model = (
        set(frame.loc[frame["has_model"], "trial"].astype(int)) if not frame.empty else set()
    )
    # the URL still holds the previous pick on the rerun after a new one: only a trial
    # without a model needs explaining
    if wanted is not None and wanted.isdigit() and int(wanted) not in with_model:
        _explain_missing(frame, int(wanted), trial)
    if trial is None:
        st.warning(
            f"Study {study!r} has no finished trial with a model yet; failed and pruned "
            "trials keep none. Pick another study, or wait for a trial to finish."
        )
        if not frame.empty:
            st.dataframe(frame[["trial", "state", "note"]], hide_index=True)
        return None
    try:
        model = state.load_model(study, trial, url)
    except AutoMLError as exc:
        st.error(str(exc))
        return None
    return Inspected(study, trial, url, model)


def dataset(picked: Inspected):
    """The study's dataset, split as the search split it; what loading changed is told."""
    data = state.load_study_dataset(picked.study, picked.url)
    for note in state.dataset_notes(picked.study, picked.url):
        st.caption(f"Dataset: {note}.")
    return data


def count_slider(label: str, most: int, default: int, key: str) -> int:
    """A slider for how many images to show, from 1 to ``most``.

    With a single image there is nothing to choose (Streamlit refuses a slider whose ends
    meet): no widget, and ``most`` is returned.
    """
    if most <= 1:
        return most
    return st.slider(label, 1, most, min(default, most), key=key)


@st.cache_resource(max_entries=8, show_spinner=False)
def activation_probe(study: str, trial: int, url: str) -> inspect.ActivationProbe:
    """A trial's activation probe, built once per model."""
    return inspect.ActivationProbe(state.load_model(study, trial, url))


@st.cache_data(max_entries=16, show_spinner="Encoding…")
def latents(study: str, trial: int, url: str, split: str) -> np.ndarray:
    """The latent vectors of one split of the study's dataset."""
    data = state.load_study_dataset(study, url)
    return inspect.encode(state.load_model(study, trial, url), getattr(data, f"x_{split}"))


@st.cache_data(max_entries=32, show_spinner="Projecting…")
def projection(
    study: str,
    trial: int,
    url: str,
    split: str,
    method: str,
    params: tuple[tuple[str, float], ...],
) -> latent.Projection:
    """A cached 2-D projection, keyed by (study, trial, split, method, params)."""
    return latent.latent_projection(latents(study, trial, url, split), method, dict(params))


@st.cache_data(max_entries=16, show_spinner="Fitting the linear probe…")
def probe_score(study: str, trial: int, url: str) -> representation.ProbeResult:
    """Linear-probe accuracy: logistic regression on train latents (the first
    ``max_probe_images``, as a search records it), scored on test latents."""
    data = state.load_study_dataset(study, url)
    n = representation.probe_train_count(len(data.x_train))
    return representation.linear_probe(
        latents(study, trial, url, "train")[:n],
        None if data.y_train is None else data.y_train[:n],
        latents(study, trial, url, "test"),
        data.y_test,
    )


@st.cache_data(max_entries=16, show_spinner="Reconstructing the test split…")
def test_reconstructions(study: str, trial: int, url: str):
    """(reconstructions, per-image scores) of the test split."""
    data = state.load_study_dataset(study, url)
    model = state.load_model(study, trial, url)
    recon = inspect.decode(model, latents(study, trial, url, "test"))
    return recon, metrics.reconstruction_scores(data.x_test, recon)


@st.cache_data(max_entries=8, show_spinner="Scoring the validation images…")
def validation_errors(study: str, trial: int, url: str) -> np.ndarray:
    """Per-image MSE of the validation split: the reference for anomaly scores."""
    data = state.load_study_dataset(study, url)
    model = state.load_model(study, trial, url)
    return inspect.reconstruction_errors(model, data.x_val).mse


@st.cache_data(max_entries=16, show_spinner="Adding noise and denoising…")
def denoising_scores(
    study: str, trial: int, url: str, count: int, level: float, kind: str, seed: int
) -> inspect.DenoisingScores:
    """Noise added to the first ``count`` test images, the model's outputs, and their PSNRs."""
    data = state.load_study_dataset(study, url)
    model = state.load_model(study, trial, url)
    return inspect.denoising_scores(model, data.x_test[:count], level, kind, seed)


@st.cache_data(max_entries=8, show_spinner=False)
def prior_samples(study: str, trial: int, url: str, count: int, seed: int) -> np.ndarray:
    """Images decoded from codes drawn from a variational model's prior."""
    return inspect.sample_prior(state.load_model(study, trial, url), count, seed)[1]


@st.cache_data(max_entries=32, show_spinner="Scoring PCA with as many components…")
def pca_baseline(study: str, url: str, latent_dim: int) -> baseline.PcaScores:
    """PCA's test scores with ``latent_dim`` components: read from the study's PCA cache
    (written by its search), computed and cached there for studies from before it."""
    data = state.load_study_dataset(study, url)
    folder = store.artifact_root() / store.study_artifact_folder(state.load_study(study, url))
    return baseline.pca_scores(data, latent_dim, folder / "pca")


@st.cache_resource(max_entries=8, show_spinner="Fitting PCA with as many components…")
def pca_model(study: str, url: str, latent_dim: int):
    """PCA with ``latent_dim`` components fitted on the study's training split (shared by
    every session: read-only)."""
    return baseline.fit_pca(state.load_study_dataset(study, url).x_train, latent_dim)


def trial_latent_dim(picked: Inspected) -> int | None:
    """The inspected trial's latent size (PCA's components), or None when not recorded."""
    frame = trials_table(picked.study, picked.url)
    rows = frame[frame["trial"] == picked.trial] if "latent_dim" in frame else frame.iloc[0:0]
    if rows.empty or pd.isna(rows.iloc[0]["latent_dim"]):
        return None
    return int(rows.iloc[0]["latent_dim"])


def trial_pca(picked: Inspected) -> tuple[int, baseline.PcaScores] | None:
    """(latent size, PCA's test scores) for the inspected trial; None, with a caption saying
    why, when the baseline cannot be had."""
    latent_dim = trial_latent_dim(picked)
    if latent_dim is None:
        st.caption("PCA baseline left out: the trial has no recorded latent size.")
        return None
    try:
        return latent_dim, pca_baseline(picked.study, picked.url, latent_dim)
    except (AutoMLError, ValueError, OSError, MemoryError) as exc:
        st.caption(f"PCA baseline left out: {exc}")
        return None


def image_pca_scores(
    picked: Inspected, image: np.ndarray
) -> tuple[int, metrics.ReconstructionScores] | None:
    """(components, scores) of PCA with the trial's latent size reconstructing one image;
    None, with a caption saying why, when it cannot be had."""
    latent_dim = trial_latent_dim(picked)
    if latent_dim is None:
        return None
    try:
        pca = pca_model(picked.study, picked.url, latent_dim)
        rebuilt = baseline.pca_reconstruct(pca, image[None])
    except (AutoMLError, ValueError, OSError, MemoryError) as exc:
        st.caption(f"PCA baseline left out: {exc}")
        return None
    return int(pca.n_components_), metrics.reconstruction_scores(image[None], rebuilt)


def upload_size_mb(limit: str) -> int:
    """A byte limit in Streamlit's upload megabytes (MiB), rounded up so the widget never
    refuses a file the core accepts (the core's own check then refuses the rest exactly)."""
    return max(1, math.ceil(limits.get(limit) / limits.MIB))


def _release_upload(file) -> None:
    """Lets go of an uploaded file's bytes at once, rather than when the session ends.

    Streamlit keeps an upload in server memory until the browser removes it or the session
    closes, and the session's widget value holds another reference. Its own ``chat_input``
    frees what it has read the same way (``remove_file`` on the in-memory manager); there is
    no public call for it. Emptying the file object (public ``BytesIO`` API) drops the
    widget value's reference. Best effort: on another Streamlit the bytes are freed later.
    """
    with contextlib.suppress(Exception):
        from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        if ctx is not None and isinstance(ctx.uploaded_file_mgr, MemoryUploadedFileManager):
            ctx.uploaded_file_mgr.remove_file(session_id=ctx.session_id, file_id=file.file_id)
    with contextlib.suppress(Exception):
        file.seek(0)
        file.truncate(0)


def _take_upload(key: str, input_shape: tuple[int, int, int]) -> None:
    """The uploader's callback: decodes a new file once, keeps only the decoded image."""
    file = st.session_state.get(key)
    taken = st.session_state.get(f"{key}_image")
    if file is None:
        st.session_state.pop(f"{key}_image", None)
        return
    if taken is not None and taken["file_id"] == file.file_id:
        return  # already decoded (its bytes are gone)
    entry = {"file_id": file.file_id, "name": file.name, "shape": tuple(input_shape)}
    try:
        most = limits.get("max_activation_upload_bytes")
        if file.size > most:  # a client that skipped the browser's check: never read
            raise DatasetError(
                f"the uploaded file has {file.size:,} bytes; at most {most:,} are accepted "
                f"({limits.LIMITS['max_activation_upload_bytes'].env})"
            )
        entry["image"] = inspect.image_from_bytes(file.getvalue(), tuple(input_shape))
    except AutoMLError as exc:
        entry["error"] = str(exc)
    finally:
        _release_upload(file)
    st.session_state[f"{key}_image"] = entry


def uploaded_image(
    label: str, key: str, input_shape: tuple[int, int, int]
) -> tuple[np.ndarray | None, str]:
    """An image file uploader whose file is decoded once and then let go of.

    The widget refuses files over the ``max_activation_upload_bytes`` limit in the browser,
    before they are sent (Streamlit's per-widget ``max_upload_size``; the server itself
    only enforces ``server.maxUploadSize``, so a larger file from another client is
    refused here unread). A new file is decoded to the model's input in the uploader's
    callback, and only that small array is kept in the session, under ``<key>_image``.

    Args:
        label: The widget's label.
        key: The widget's key.
        input_shape: The model's (H, W, C).

    Returns:
        ``(image, file name)``, or ``(None, "")`` when no file is uploaded or it was read
        for a model with another input shape (the page says so).

    Raises:
        DatasetError: The file is not an image, or over a limit (its message says which).
    """
    st.file_uploader(
        label,
        key=key,
        max_upload_size=upload_size_mb("max_activation_upload_bytes"),
        on_change=_take_upload,
        args=(key, tuple(input_shape)),
    )
    taken = st.session_state.get(f"{key}_image")
    if taken is None:
        return None, ""
    if "error" in taken:
        raise DatasetError(taken["error"])
    if tuple(taken["shape"]) != tuple(input_shape):
        height, width, _ = taken["shape"]
        st.info(
            f"'{taken['name']}' was read for a model with {width}x{height} inputs: remove it and "
            "upload it again for this model."
        )
        return None, ""
    return taken["image"], taken["name"]


def csv_download(frame: pd.DataFrame, label: str, file_name: str, key: str) -> None:
    """A download button with a table as CSV."""
    st.download_button(
        label,
        frame.to_csv(index=False).encode("utf-8"),
        file_name=file_name,
        mime="text/csv",
        key=key,
        icon=":material/download:",
    )


def chart(fig, key: str, **kwargs):
    """Renders a figure with the modebar's PNG export at 2x scale."""
    config = {
        "toImageButtonOptions": {"format": "png", "scale": 2, "filename": key},
        "displaylogo": False,
    }
    return st.plotly_chart(fig, key=key, config=config, width="stretch", **kwargs)
