"""Exports: the trial bundle round trip (Keras safe_mode, TFLite), the HTML report, the CLI."""

from __future__ import annotations

import io
import json
import re
import zipfile

import keras
import numpy as np
import pytest

from automl_core.analysis import export
from automl_core.analysis.leaderboard import reconstruct
from automl_core.cli import main
from automl_core.storage import store


@pytest.fixture(scope="module")
def bundle_files(tiny_study_home):
    """The tiny study's best trial bundle, opened: {name: bytes}, plus the trial number."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTOML_HOME", str(tiny_study_home))
        study = store.load_study("tiny", f"sqlite:///{tiny_study_home / 'studies.db'}")
        name, data = export.trial_bundle(study)
    archive = zipfile.ZipFile(io.BytesIO(data))
    return name, {n: archive.read(n) for n in archive.namelist()}


def _load(tmp_path, data: bytes, name: str):
    path = tmp_path / name
    path.write_bytes(data)
    return keras.models.load_model(path, safe_mode=True, compile=False)


class TestTrialBundle:
    def test_holds_every_part(self, bundle_files):
        name, files = bundle_files
        assert re.fullmatch(r"tiny-trial-\d+\.zip", name)
        expected = {"model.keras", "encoder.keras", "decoder.keras", "encoder.tflite"}
        expected |= {"decoder.tflite", "config.json", "metrics.json", "README.md"}
        assert expected <= set(files)
        assert any(n.startswith("filters/") and n.endswith(".npy") for n in files)
        assert "safe_mode=True" in files["README.md"].decode()
        assert json.loads(files["metrics.json"])["val_mse"] > 0

    def test_keras_files_reload_and_reproduce_the_reconstruction(
        self, bundle_files, tiny_study, tmp_path
    ):
        name, files = bundle_files
        number = int(name.split("-")[-1].removesuffix(".zip"))
        original = store.load_trial_model(store.load_study(*tiny_study), number)
        images = np.random.default_rng(0).random((4, *original.input_shape[1:]), np.float32)
        model = _load(tmp_path, files["model.keras"], "model.keras")
        np.testing.assert_allclose(reconstruct(model, images), reconstruct(original, images))
        encoder = _load(tmp_path, files["encoder.keras"], "encoder.keras")
        decoder = _load(tmp_path, files["decoder.keras"], "decoder.keras")
        halves = np.clip(decoder.predict(encoder.predict(images, verbose=0), verbose=0), 0, 1)
        np.testing.assert_allclose(halves, reconstruct(original, images), atol=1e-5)

    def test_tflite_halves_match_keras(self, bundle_files, tmp_path):
        _, files = bundle_files
        checks = json.loads(files["tflite_check.json"])
        assert [c["part"] for c in checks] == ["encoder", "decoder"]
        assert all(c["converted"] and c["max_abs_diff"] <= c["tolerance"] for c in checks)
        encoder = _load(tmp_path, files["encoder.keras"], "encoder.keras")
        images = np.random.default_rng(1).random((3, *encoder.input_shape[1:]), np.float32)
        codes = export.run_tflite(files["encoder.tflite"], images)
        np.testing.assert_allclose(codes, encoder.predict(images, verbose=0), atol=1e-4)
        decoder = _load(tmp_path, files["decoder.keras"], "decoder.keras")
        out = export.run_tflite(files["decoder.tflite"], codes)
        np.testing.assert_allclose(out, decoder.predict(codes, verbose=0), atol=1e-4)

    def test_filters_are_plain_arrays(self, bundle_files):
        _, files = bundle_files
        name = next(n for n in files if n.startswith("filters/"))
        kernels = np.load(io.BytesIO(files[name]), allow_pickle=False)
        assert kernels.ndim == 4 and kernels.dtype == np.float32

    def test_a_disagreeing_tflite_model_is_refused(self, tiny_study, monkeypatch):
        model = store.load_trial_model(store.load_study(*tiny_study), 0).get_layer("encoder")
        real = export.run_tflite
        monkeypatch.setattr(export, "run_tflite", lambda fb, x: real(fb, x) + 0.01)
        with pytest.raises(export.ExportError, match="differs from Keras by 0.01"):
            export.convert_and_check(model, "encoder")

    def test_unknown_trial(self, tiny_study):
        with pytest.raises(Exception, match="99"):
            export.trial_bundle(store.load_study(*tiny_study), 99)


@pytest.mark.parametrize(
    "options",
    [
        {"objective": "variational"},
        {"objective": "denoising", "noise": 0.2},
        {"objective": "sparse"},
        {"upsample": "transpose", "residual": True, "batch_norm": True, "attention": True},
        {"downsample": "stride", "bottleneck": "conv", "latent_dim": 16},
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)
def test_every_kind_of_model_converts_to_tflite_and_matches(options):
    """Static shapes (a batch of one) keep resize decoders on TFLite's built-in operations."""
    from automl_core.model.models import build_autoencoder
    from automl_core.model.space import ModelConfig

    config = ModelConfig(**{"num_conv_layers": 2, "filters": 4, "latent_dim": 8, **options})
    built = build_autoencoder(config, (16, 16, 1))
    model = getattr(built, "autoencoder", built)
    for part in ("encoder", "decoder"):
        flatbuffer, check = export.convert_and_check(model.get_layer(part), part)
        assert flatbuffer and check.converted and check.max_abs_diff <= check.tolerance


class TestReport:
    @pytest.fixture(scope="class")
    def html(self, tiny_study_home):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AUTOML_HOME", str(tiny_study_home))
            study = store.load_study("tiny", f"sqlite:///{tiny_study_home / 'studies.db'}")
            return export.study_report(study)

    def test_self_contained(self, html):
        assert html.startswith("<!DOCTYPE html>")
        assert not re.search(r"<script[^>]+src=", html)  # no script fetched from anywhere
        assert not re.search(r"<(img|link)[^>]+(src|href)=\"https?:", html)
        assert len(re.findall(r"\* plotly\.js v", html)) == 1  # the library inline, once

    def test_sections(self, html):
        for part in ("Leaderboard", "Optimization history", "Best trial: #", "Reconstructions"):
            assert part in html
        assert "Filters of the first encoder layer" in html and "Latent space" in html
        assert "data:image/png;base64," in html

    def test_png_data_uri(self):
        uri = export.png_data_uri(np.zeros((3, 4, 4, 1), np.float32))
        assert uri.startswith("data:image/png;base64,iVBOR")


class TestCli:
    def test_export_writes_zip_and_report(self, tiny_study, tmp_path, capsys):
        out = tmp_path / "out dir"
        assert main(["export", "--study", "tiny", "--out", str(out), "--trial", "1"]) == 0
        assert (out / "tiny-trial-1.zip").is_file() and (out / "tiny-report.html").is_file()
        assert "tiny-trial-1.zip" in capsys.readouterr().out

    def test_export_of_an_unknown_study(self, tiny_study, tmp_path, capsys):
        assert main(["export", "--study", "nope", "--out", str(tmp_path)]) == 2
        assert "no study named 'nope'" in capsys.readouterr().err

    def test_export_of_a_negative_trial(self, tiny_study, tmp_path, capsys):
        assert main(["export", "--study", "tiny", "--out", str(tmp_path), "--trial", "-1"]) == 2
        assert "trial must be a non-negative integer" in capsys.readouterr().err


@pytest.mark.slow
def test_report_opens_in_chromium_and_draws_its_figures(tiny_study, tmp_path, chromium):
    playwright = pytest.importorskip("playwright.sync_api")

    _, report = export.export_study("tiny", tmp_path, trial=0)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
            ],
        )
        page = browser.new_page()
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(report.as_uri())
        page.wait_for_selector(".plotly .main-svg", timeout=30_000)
        assert page.locator(".js-plotly-plot").count() >= 3
        assert page.locator("img[src^='data:image/png']").count() >= 1
        browser.close()
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
