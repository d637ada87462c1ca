"""Exports: a trial as a self-describing ``.zip``, a study as one self-contained HTML report.

A trial bundle holds the autoencoder, its encoder and decoder as ``.keras`` files, the encoder
and decoder converted to TFLite (LiteRT) and checked against Keras on the same inputs, the
configuration and metrics as JSON, every encoder convolution's kernels as ``.npy``, and a
README saying how to load each. The study report embeds Plotly's JavaScript once and every
image as a base64 PNG, so it opens from disk with no server and no network.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna

from automl_core.analysis.charts import (
    compression_curve_figure,
    filters_figure,
    projection_figure,
    study_figures,
)
from automl_core.analysis.inspect import compression_curve, encode, encoder_filters
from automl_core.analysis.latent import latent_projection
from automl_core.analysis.leaderboard import (
    best_pca_verdict,
    chart_sample,
    column_label,
    pareto_frame,
    pca_missing_note,
    reconstruct,
    study_chart_plan,
    varying_columns,
)
from automl_core.errors import AutoMLError
from automl_core.model.datasets import load_dataset
from automl_core.storage import store
from automl_core.storage.results import (
    METRIC_COLUMNS,
    PROBE_HELP,
    VS_PCA_HELP,
    best_trial,
    trials_frame,
)
from automl_core.storage.settings import study_settings

# largest absolute difference allowed between a TFLite model's output and Keras' on the
# same inputs (float32 kernels reordered by the converter differ in the last bits)
TFLITE_TOLERANCE = 1e-4
CHECK_IMAGES = 8


class ExportError(AutoMLError, RuntimeError):
    """An export could not be made faithfully (a TFLite model that disagrees with Keras)."""


@dataclass(frozen=True)
class TfliteCheck:
    """How a TFLite conversion matched its Keras model.

    Attributes:
        part: ``encoder`` or ``decoder``.
        converted: Whether conversion worked (``reason`` says why not).
        max_abs_diff: Largest absolute difference of outputs on the check inputs.
        tolerance: The allowed difference.
        reason: Why conversion failed ('' when it worked).
    """

    part: str
    converted: bool
    max_abs_diff: float | None
    tolerance: float
    reason: str = ""

    def to_dict(self) -> dict:
        """The check as a JSON-ready dict."""
        return dict(self.__dict__)


def to_tflite(model) -> bytes:
    """A Keras model converted to a TFLite flat buffer, for one input at a time.

    ``TFLiteConverter.from_keras_model`` keeps the batch dimension open, and a decoder whose
    resize makes its spatial sizes dynamic then needs TensorFlow's own Conv2D kernel (not a
    TFLite built-in). Converting a function of a batch of one keeps every shape static, so only
    built-in operations are used.
    """
    import keras
    import tensorflow as tf

    single = keras.Input(batch_shape=(1, *model.input_shape[1:]), name=f"{model.name}_input")
    fixed = keras.Model(single, model(single, training=False), name=model.name)
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its saved endpoints
        return tf.lite.TFLiteConverter.from_keras_model(fixed).convert()


def run_tflite(flatbuffer: bytes, inputs: np.ndarray) -> np.ndarray:
    """Runs a TFLite model on a batch, one input at a time, in the TFLite interpreter."""
    import tensorflow as tf

    with warnings.catch_warnings():  # its deprecation notice (LiteRT): it still runs
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]
    target = interpreter.get_output_details()[0]
    outputs = []
    for row in np.asarray(inputs, dtype=np.float32):
        interpreter.set_tensor(source["index"], row[None])
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_tensor(target["index"])[0]))
    return np.stack(outputs)


def _check_inputs(model, seed: int = 0) -> np.ndarray:
    """Deterministic inputs in [0, 1] of a model's input shape (images, or codes)."""
    shape = tuple(int(d) for d in model.input_shape[1:])
    return np.random.default_rng(seed).random((CHECK_IMAGES, *shape), dtype=np.float32)


def convert_and_check(model, part: str, tolerance: float = TFLITE_TOLERANCE):
    """Converts one part to TFLite and compares its output with Keras' on the same inputs.

    Returns:
        (flat buffer or None, :class:`TfliteCheck`).

    Raises:
        ExportError: The converted model's output differs by more than ``tolerance``.
    """
    try:
        flatbuffer = to_tflite(model)
    except Exception as exc:  # a custom layer TFLite has no kernel for: said in the bundle
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        return None, TfliteCheck(part, False, None, tolerance, reason)
    inputs = _check_inputs(model)
    expected = np.asarray(model(inputs, training=False), dtype=np.float32)
    got = run_tflite(flatbuffer, inputs)
    diff = float(np.max(np.abs(got - expected))) if expected.size else 0.0
    check = TfliteCheck(part, True, diff, tolerance)
    if not diff <= tolerance:
        raise ExportError(
            f"the TFLite {part} differs from Keras by {diff:.3g}, more than {tolerance:g}"
        )
    return flatbuffer, check


def _keras_bytes(model) -> bytes:
    """A Keras model saved as ``.keras`` bytes."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "part.keras"
        model.save(path)
        return path.read_bytes()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def _bundle_readme(study_name: str, number: int, checks: list[TfliteCheck], layers) -> str:
    lines = [
        f"# Trial {number} of study {study_name}",
        "",
        "Exported by the autoencoder AutoML workbench "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
        "",
        "| file | what |",
        "|---|---|",
        "| `model.keras` | the trained autoencoder (input: images in [0, 1], NHWC) |",
        "| `encoder.keras`, `decoder.keras` | its two halves: image -> code, code -> image |",
        "| `encoder.tflite`, `decoder.tflite` | the halves converted to TFLite (LiteRT) |",
        "| `config.json`, `metrics.json`, `history.json` | configuration, metrics, loss curves |",
        "| `tflite_check.json` | how the TFLite outputs matched Keras on the same inputs |",
        "| `filters/<layer>.npy` | each encoder convolution's kernels, (k, k, in, out) |",
        "",
        "## Load it",
        "",
        "```python",
        "import keras, numpy as np",
        "# custom layers of denoising / variational models: `import automl_core.model.recipes` first",
        'model = keras.models.load_model("model.keras", safe_mode=True, compile=False)',
        "reconstruction = model.predict(images)  # images: float32 (N, H, W, C) in [0, 1]",
        'encoder = keras.models.load_model("encoder.keras", safe_mode=True, compile=False)',
        'kernels = np.load("filters/encoder_conv_1.npy")',
        "",
        "import tensorflow as tf",
        'interpreter = tf.lite.Interpreter(model_path="encoder.tflite")',
        "interpreter.allocate_tensors()  # then set_tensor / invoke / get_tensor, one image",
        "```",
        "",
        "## TFLite check",
        "",
    ]
    for check in checks:
        if check.converted:
            lines.append(
                f"- {check.part}: max |TFLite - Keras| = {check.max_abs_diff:.2e} "
                f"(tolerance {check.tolerance:g}) on {CHECK_IMAGES} inputs"
            )
        else:
            lines.append(f"- {check.part}: not converted ({check.reason})")
    lines += ["", "Filters: " + (", ".join(layers) if layers else "none"), ""]
    return "\n".join(lines)


def _pick_trial(study: optuna.Study, number: int | None) -> int:
    """The trial to export: ``number``, or the best one."""

    if number is None:
        return best_trial(study).number
    return store.get_trial(study, number).number


def trial_bundle(study: optuna.Study, number: int | None = None) -> tuple[str, bytes]:
    """A trial's export as a ``.zip`` in memory.

    Args:
        study: The study.
        number: The trial. Defaults to the best trial.

    Returns:
        (file name ``<study>-trial-<n>.zip``, its bytes).

    Raises:
        ArtifactMissing: The trial has no model.
        ExportError: A TFLite conversion disagrees with Keras beyond the tolerance.
    """

    number = _pick_trial(study, number)
    model = store.load_trial_model(study, number)
    folder = store.trial_artifact_dir(study, store.get_trial(study, number))
    buffer = io.BytesIO()
    checks, layers = [], []
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(folder / "model.keras", "model.keras")
        for name in ("config.json", "metrics.json", "history.json"):
            if (folder / name).is_file():
                archive.write(folder / name, name)
        for part in ("encoder", "decoder"):
            half = model.get_layer(part)
            archive.writestr(f"{part}.keras", _keras_bytes(half))
            flatbuffer, check = convert_and_check(half, part)
            checks.append(check)
            if flatbuffer is not None:
                archive.writestr(f"{part}.tflite", flatbuffer)
        for layer in encoder_filters(model):
            layers.append(layer.layer)
            archive.writestr(f"filters/{layer.layer}.npy", _npy_bytes(layer.kernels))
        archive.writestr("tflite_check.json", json.dumps([c.to_dict() for c in checks], indent=2))
        archive.writestr("README.md", _bundle_readme(study.study_name, number, checks, layers))
    return bundle_name(study.study_name, number), buffer.getvalue()


def bundle_name(study_name: str, number: int) -> str:
    """The file name of a trial's bundle: ``<study>-trial-<n>.zip``."""
    return f"{study_name}-trial-{number}.zip"


def report_name(study_name: str) -> str:
    """The file name of a study's report: ``<study>-report.html``."""
    return f"{study_name}-report.html"


# --- the study report --------------------------------------------------------------------


def png_data_uri(images: np.ndarray, cols: int = 10, scale: int = 3) -> str:
    """Images (N, H, W, C) in [0, 1] tiled into one PNG, as a ``data:`` URI."""
    from PIL import Image

    images = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
    count, height, width, channels = images.shape
    cols = max(1, min(cols, count))
    rows = -(-count // cols)
    sheet = np.ones((rows * (height + 1), cols * (width + 1), channels), np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        sheet[r * (height + 1) : r * (height + 1) + height, c * (width + 1) : c * (width + 1) + width] = image  # fmt: skip
    pixels = (sheet * 255).round().astype(np.uint8)
    picture = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _best_trial_sections(study: optuna.Study, number: int) -> list[str]:
    """Reconstructions, filters and the latent scatter of the best trial, as HTML parts."""

    model = store.load_trial_model(study, number)
    parts = []
    try:
        settings = study_settings(study)
        data = load_dataset(
            settings.dataset,
            settings.seed,
            settings.val_fraction,
            settings.test_fraction,
            settings.max_images,
        )
    except AutoMLError as exc:
        parts.append(f"<p>Reconstructions and latent space left out: {html.escape(str(exc))}</p>")
        data = None
    if data is not None:
        images = data.x_test[:10]
        both = np.concatenate([images, reconstruct(model, images)])
        parts.append(
            "<h3>Reconstructions</h3><p>Top row: test images; bottom row: the model's.</p>"
            f'<img alt="reconstructions" src="{png_data_uri(both, cols=len(images))}">'
        )
        sample = data.x_test[:300]
        labels = data.y_test[:300] if data.y_test is not None else None
        projection = latent_projection(encode(model, sample), "pca")
        # projection_figure writes each class's colour into the figure itself: the report
        # has no dashboard theme to lend them
        figure = projection_figure(projection, labels, data.class_names, title="Latent (PCA)")
        parts.append("<h3>Latent space</h3>" + _figure_html(figure))
    filters = encoder_filters(model)
    if filters:
        parts.append("<h3>Filters of the first encoder layer</h3>")
        parts.append(_figure_html(filters_figure(filters[0])))
    return parts


_PLOTLY_INCLUDED: list[bool] = []


# the template of every figure in the report. A figure made in a process that imported
# Streamlit (the Export page) takes Streamlit's template, whose colours are placeholders
# (#000001, #000002, ...) that only the dashboard's theme replaces: on their own they are black
REPORT_TEMPLATE = "plotly_white"


def _figure_html(figure) -> str:
    """A figure as an HTML fragment, in :data:`REPORT_TEMPLATE`; Plotly's JavaScript goes
    inline with the first one."""
    figure.update_layout(template=REPORT_TEMPLATE)
    first = not _PLOTLY_INCLUDED
    _PLOTLY_INCLUDED.append(True)
    return figure.to_html(full_html=False, include_plotlyjs=True if first else False)


# the report's page: as wide as a screen, a wide table scrolls inside its own box
REPORT_STYLE = (
    "body{font-family:sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;"
    "color:#1F2937}"
    ".table-wrap{max-width:100%;overflow-x:auto;margin-bottom:1em}"
    "table{border-collapse:collapse;font-size:12px}"
    "td,th{border:1px solid #ddd;padding:3px 6px;vertical-align:top}"
    "th{background:#F3F4F6;white-space:nowrap}"
    "td{max-width:28em;overflow-wrap:anywhere}"
    "img{image-rendering:pixelated;max-width:100%}"
    ".js-plotly-plot,.plotly-graph-div{max-width:100%}"
)


def report_table(frame) -> str:
    """The report's leaderboard: trial and state, the metrics (those any trial has), the
    parameters that vary, precision where it varies, then the notes where any trial has one,
    under their display names, in a box that scrolls sideways rather than widening the page.

    Args:
        frame: :func:`automl_core.storage.results.trials_frame`.

    Returns:
        An HTML fragment (every cell escaped).
    """

    # a metric no trial has is left out, but vs PCA, whose blanks a note explains
    columns = [
        c
        for c in ("trial", "state", *METRIC_COLUMNS)
        if c in frame and (c in ("trial", "state", "vs_pca_db") or frame[c].notna().any())
    ]
    columns += varying_columns(frame)
    if "precision" in frame and frame["precision"].nunique() > 1:
        columns.append("precision")
    for note in ("user_note", "note"):
        if note in frame and frame[note].fillna("").astype(str).str.strip().any():
            columns.append(note)
    shown = frame[columns].rename(columns={c: column_label(c) for c in columns})
    table = shown.to_html(
        index=False, escape=True, float_format=lambda v: f"{v:.5g}", na_rep="", border=0
    )
    return f'<div class="table-wrap">{table}</div>'


def study_report(study: optuna.Study) -> str:
    """A study as one self-contained HTML page.

    Leaderboard (metrics first, the parameters that vary), optimisation history, parallel
    coordinates, parameter importances, slice and contour plots (over the parameters that
    vary, as the Leaderboard page draws them), the Pareto front and set of a
    multi-objective study, the compression curve, and the best trial's reconstructions,
    filters and latent scatter (each class in its own colour, set on the figure). Plotly's
    JavaScript is inline once, images are base64 PNGs: it opens from disk with no server
    and no network.

    Args:
        study: The study.

    Returns:
        The HTML text.
    """

    _PLOTLY_INCLUDED.clear()
    name = html.escape(study.study_name)
    frame = trials_frame(study)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Study {name}</title>",
        f"<style>{REPORT_STYLE}</style>",
        "</head><body>",
        f"<h1>Study {name}</h1>",
        f"<p>{len(frame)} trials; exported {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        ".</p>",
        "<h2>Leaderboard</h2>",
        f"<p><em>vs PCA (dB): {html.escape(VS_PCA_HELP)}."
        + (
            f" Linear probe: {html.escape(PROBE_HELP)}."
            if "probe_accuracy" in frame and frame["probe_accuracy"].notna().any()
            else ""
        )
        + " Only the parameters that differ between trials are shown.</em></p>",
        report_table(frame),
    ]
    missing = pca_missing_note(frame)
    if missing:
        parts.append(f"<p><em>{html.escape(missing)}</em></p>")
    plan = study_chart_plan(study)
    sample = chart_sample(study)
    figures = study_figures(study, plan, sample)
    for note in plan.notes + ((sample.note,) if sample.note else ()):
        parts.append(f"<p><em>{html.escape(note)}</em></p>")
    for title, figure in figures.items():
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(_figure_html(figure))
    pareto = pareto_frame(study, plan)
    if not pareto.empty:
        parts.append("<h2>Pareto set</h2>")
        table = pareto.to_html(index=False, escape=True, float_format=lambda v: f"{v:.5g}")
        parts.append(f'<div class="table-wrap">{table}</div>')
    curve = compression_curve(frame)
    if not curve.empty:
        parts.append("<h2>Compression curve</h2>")
        parts.append(
            "<p>Best test PSNR per latent size; dashed: PCA with as many components, "
            "fitted on the same training split.</p>"
        )
        parts.append(_figure_html(compression_curve_figure(curve)))
    finished = frame[frame["has_model"]] if "has_model" in frame else frame.iloc[0:0]
    if not finished.empty:
        number = _pick_trial(study, None)
        parts.append(f"<h2>Best trial: #{number}</h2>")
        verdict = best_pca_verdict(frame)
        if verdict is not None and verdict.trial == number:
            style = ' style="color:#b91c1c;font-weight:bold"' if verdict.below else ""
            parts.append(f"<p{style}>Against PCA: {html.escape(verdict.text)}</p>")
        parts += _best_trial_sections(study, number)
    parts.append("</body></html>")
    return "\n".join(parts)


def export_study(
    study_name: str, out_dir: Path | str, trial: int | None = None, storage_url: str | None = None
) -> tuple[Path, Path]:
    """Writes a trial's bundle and the study's report into a folder (the CLI's ``export``).

    Args:
        study_name: The study.
        out_dir: The folder (created if missing).
        trial: The trial number. Defaults to the best trial.
        storage_url: The storage. Defaults to :func:`store.default_storage_url`.

    Returns:
        (the ``.zip`` path, the ``.html`` path).

    Raises:
        ExportError: The folder cannot be made or written (not a folder, read-only, a full
            disk); nothing partial is left in it.
    """
    study = store.load_study(study_name, storage_url, create=False)
    folder = Path(out_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(
            f"cannot make the export folder '{folder}': {exc.strerror or exc}; give a folder "
            "you may write"
        ) from None
    name, data = trial_bundle(study, trial)
    bundle = folder / name
    report = folder / report_name(study.study_name)
    _write_whole(bundle, data)
    try:
        _write_whole(report, study_report(study).encode("utf-8"))
    except ExportError:
        bundle.unlink(missing_ok=True)
        raise
    return bundle, report


def _write_whole(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary name: all of it, or nothing there.

    Raises:
        ExportError: It cannot be written.
    """
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_bytes(data)
        partial.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise ExportError(f"cannot write '{path}': {exc.strerror or exc}") from None
