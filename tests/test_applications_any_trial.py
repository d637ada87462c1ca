"""Applications from any trial: denoising scores for every model, and the ``anomalies`` command."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from automl_core.analysis import inspect
from automl_core.cli import main
from automl_core.errors import ConfigError
from automl_core.model import metrics
from automl_core.model.models import build_autoencoder
from automl_core.model.space import ModelConfig
from automl_core.storage import store

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120


def _texts(elements) -> str:
    return " | ".join(str(e.value) for e in elements)


@pytest.fixture
def trained(tiny_study):
    """(model, study dataset, trial number) of the tiny study's best trial."""
    from automl_core.storage.results import best_trial
    from automl_core.storage.settings import study_dataset

    name, url = tiny_study
    study = store.load_study(name, url, create=False)
    number = best_trial(study).number
    return store.load_trial_model(study, number), study_dataset(study), number


class TestDenoisingScores:
    def test_a_plain_trial_denoises_and_is_scored_against_the_clean_images(self, trained):
        model, data, _ = trained
        clean = data.x_test
        assert inspect.model_noise(model) is None
        result = inspect.denoising_scores(model, clean, level=0.2, kind="gaussian", seed=1)
        assert result.noisy.shape == result.denoised.shape == clean.shape
        assert not np.allclose(result.noisy, clean)
        assert 0.0 <= result.denoised.min() and result.denoised.max() <= 1.0
        noisy_psnr = metrics.reconstruction_scores(clean, result.noisy).psnr.mean()
        output = np.clip(inspect.decode(model, inspect.encode(model, result.noisy)), 0, 1)
        denoised_psnr = metrics.reconstruction_scores(clean, output).psnr.mean()
        assert result.noisy_psnr == pytest.approx(noisy_psnr)
        assert result.denoised_psnr == pytest.approx(denoised_psnr)
        assert 5.0 < result.noisy_psnr < 30.0  # sigma 0.2 on [0, 1] images: about 14-16 dB
        assert math.isfinite(result.gain_db)
        assert result.gain_db == pytest.approx(result.denoised_psnr - result.noisy_psnr)

    @pytest.mark.parametrize("kind", list(inspect.NOISE_KINDS))
    def test_level_zero_leaves_the_images_clean(self, trained, kind):
        model, data, _ = trained
        result = inspect.denoising_scores(model, data.x_test, level=0.0, kind=kind)
        np.testing.assert_array_equal(result.noisy, data.x_test)
        assert result.noisy_psnr == 100.0  # a perfect copy, capped
        reconstructed = inspect.reconstruction_errors(model, data.x_test)
        assert result.denoised_psnr == pytest.approx(reconstructed.psnr.mean(), abs=1e-4)

    @pytest.mark.parametrize("kind", list(inspect.NOISE_KINDS))
    def test_noise_is_seeded_and_in_range(self, kind):
        clean = np.random.default_rng(0).random((6, 8, 8, 1)).astype(np.float32)
        noisy = inspect.add_noise(clean, 0.3, kind, seed=3)
        assert noisy.dtype == np.float32 and 0.0 <= noisy.min() and noisy.max() <= 1.0
        assert not np.allclose(noisy, clean)
        np.testing.assert_array_equal(noisy, inspect.add_noise(clean, 0.3, kind, seed=3))
        assert not np.array_equal(noisy, inspect.add_noise(clean, 0.3, kind, seed=4))
        changed = noisy != clean
        if kind == "masking":
            assert (noisy[changed] == 0).all()
        if kind == "salt-and-pepper":
            assert np.isin(noisy[changed], [0.0, 1.0]).all()

    @pytest.mark.parametrize(
        "level, kind, message",
        [
            (0.1, "speckle", "unknown noise kind 'speckle'; expected one of gaussian"),
            (-0.1, "gaussian", "gaussian noise level must be a non-negative number"),
            (float("nan"), "gaussian", "got level=nan"),
            (1.5, "masking", "masking noise level must be a share in 0..1, got level=1.5"),
            (1.5, "salt-and-pepper", "must be a share in 0..1"),
        ],
    )
    def test_bad_noise_is_refused(self, level, kind, message):
        with pytest.raises(ConfigError, match=message):
            inspect.add_noise(np.zeros((1, 8, 8, 1), np.float32), level, kind)

    def test_images_of_another_shape_are_refused(self, trained):
        model, _, _ = trained
        with pytest.raises(ConfigError, match=r"images must have shape \(N, 8, 8, 1\)"):
            inspect.denoising_scores(model, np.zeros((2, 4, 4, 1), np.float32))

    @pytest.mark.parametrize("noise_type", ["gaussian", "masking"])
    def test_a_denoiser_knows_its_own_noise(self, noise_type):
        config = ModelConfig(
            num_conv_layers=1,
            filters=4,
            latent_dim=4,
            objective="denoising",
            noise=0.3,
            noise_type=noise_type,
        )
        model = build_autoencoder(config, (8, 8, 1)).autoencoder
        assert inspect.model_noise(model) == (noise_type, pytest.approx(0.3))


def _flagged_rows(out: str) -> list[list[str]]:
    """The printed table of flagged images, one list of fields per row (header left out)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "flagged, worst first" in line)
    rows = []
    for line in lines[start + 2 :]:
        if line.startswith("scores of all"):
            break
        rows.append(line.split())
    return rows


class TestAnomaliesCommand:
    def test_prints_flagged_rows_and_writes_the_pages_scores(
        self, tiny_study, trained, tmp_path, capsys
    ):
        from dashboard import inspect_widgets as iw

        name, url = tiny_study
        _, data, number = trained
        out = tmp_path / "scores.csv"
        assert main(["anomalies", "--study", name, "--percentile", "50", "--csv", str(out)]) == 0
        printed = capsys.readouterr().out
        n = len(data.x_test)
        assert f"study tiny, trial {number}: {n} test images of the study's dataset" in printed
        assert "threshold MSE" in printed and f"scores of all {n} images: {out}" in printed
        # the numbers of the Reconstructions page, from the page's own cached functions
        _, scores = iw.test_reconstructions(name, number, url)
        report = inspect.anomaly_report(scores.mse, iw.validation_errors(name, number, url), 50.0)
        written = pd.read_csv(out)
        assert list(written.columns) == list(report.scores.columns)
        np.testing.assert_array_equal(written["index"], report.scores["index"])
        np.testing.assert_allclose(written["mse"], report.scores["mse"], rtol=1e-12)
        np.testing.assert_allclose(written["percentile"], report.scores["percentile"])
        np.testing.assert_array_equal(written["flagged"], report.scores["flagged"])
        rows = _flagged_rows(printed)
        assert len(report.flagged) > 0
        assert [int(row[0]) for row in rows] == report.flagged.tolist()
        # digits has labels: the class is the last field, the test split's label
        assert [row[-1] for row in rows] == [str(data.y_test[i]) for i in report.flagged]

    def test_default_csv_lands_in_the_current_folder(
        self, tiny_study, tmp_path, monkeypatch, capsys
    ):
        monkeypatch.chdir(tmp_path)
        assert main(["anomalies", "--study", "tiny", "--trial", "0", "--percentile", "100"]) == 0
        printed = capsys.readouterr().out
        assert (tmp_path / "tiny-trial0-anomalies.csv").is_file()
        assert "study tiny, trial 0:" in printed
        assert "tiny-trial0-anomalies.csv" in printed

    def test_images_from_an_npz(self, tiny_study, trained, tmp_path, capsys):
        _, data, number = trained
        path = tmp_path / "mine.npz"
        images = data.x_test[:6].copy()
        images[0] = 1.0  # all white: unlike any digit
        np.savez(path, x=images, y=np.arange(6))
        out = tmp_path / "mine.csv"
        argv = ["anomalies", "--study", "tiny", "--data", str(path), "--csv", str(out)]
        assert main(argv + ["--percentile", "90"]) == 0
        printed = capsys.readouterr().out
        assert f"trial {number}: 6 images of {path}" in printed
        written = pd.read_csv(out)
        assert len(written) == 6
        assert written["mse"].idxmax() == 0 and bool(written["flagged"][0])


@pytest.fixture
def tiny_with_failure(tiny_study_home, runs_dir):
    """A copy of the tiny study plus one failed trial (no model); its number."""
    shutil.copytree(tiny_study_home, runs_dir)
    study = store.load_study("tiny", store.default_storage_url())
    study.set_user_attr(store.ARTIFACT_ROOT_ATTR, str(runs_dir / "artifacts"))
    trial = study.ask()
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return trial.number


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("error: ")
    return err


class TestAnomaliesBadInput:
    @pytest.mark.parametrize(
        "extra, message",
        [
            (["--study", "ghost"], "no study named 'ghost'"),
            (["--study", "tiny", "--trial", "99"], "study 'tiny' has no trial 99"),
            (["--study", "tiny", "--trial", "-1"], "trial must be a non-negative integer"),
            (["--study", "tiny", "--percentile", "101"], "percentile must lie in 0..100, got"),
            (["--study", "tiny", "--percentile", "-5"], "got percentile=-5"),
            (["--study", "tiny", "--percentile", "nan"], "got percentile=nan"),
            (["--study", "tiny", "--data", "/no/such/images.npz"], "does not exist"),
            (["--study", "tiny", "--csv", "/no/such/dir/a.csv"], "--csv /no/such/dir/a.csv: the"),
        ],
    )
    def test_one_clear_line(self, tiny_study, capsys, extra, message):
        err = _one_line_error(capsys, ["anomalies", *extra])
        assert message in err

    def test_unreadable_data(self, tiny_study, tmp_path, capsys):
        path = tmp_path / "broken.npz"
        path.write_bytes(b"not a zip archive")
        err = _one_line_error(capsys, ["anomalies", "--study", "tiny", "--data", str(path)])
        assert "broken.npz" in err

    def test_images_of_another_shape(self, tiny_study, tmp_path, capsys):
        path = tmp_path / "big.npz"
        np.savez(path, x=np.zeros((3, 28, 28, 1), np.float32))
        err = _one_line_error(capsys, ["anomalies", "--study", "tiny", "--data", str(path)])
        assert "28x28x1" in err and "8x8x1" in err and "big.npz" in err

    def test_trial_without_a_model(self, tiny_with_failure, capsys):
        argv = ["anomalies", "--study", "tiny", "--trial", str(tiny_with_failure)]
        err = _one_line_error(capsys, argv)
        assert f"trial {tiny_with_failure} of study 'tiny' has no saved model" in err


@pytest.fixture
def no_demo(monkeypatch, tmp_path):
    """Keeps the bundled demo study out of the storage the test reads."""
    from dashboard import state

    monkeypatch.setattr(state, "DEMO_DIR", tmp_path / "no-demo")


def test_reconstructions_page_denoises_with_a_plain_trial(tiny_study, no_demo):
    at = AppTest.from_file(str(ROOT / "pages" / "reconstructions.py"), default_timeout=TIMEOUT)
    at.session_state["study"] = "tiny"
    at.run()
    assert not at.exception, at.exception
    assert not at.error, _texts(at.error)
    assert "Denoising: noisy, denoised, clean" in _texts(at.subheader)
    assert "was not trained for denoising" in _texts(at.caption)
    labels = [m.label for m in at.metric]
    assert {"Noisy vs clean", "Denoised vs clean", "Gain"} <= set(labels)
    assert at.select_slider(key="denoise_level").value == pytest.approx(0.1)
    assert at.selectbox(key="denoise_kind").value == "gaussian"
    gain = next(m.value for m in at.metric if m.label == "Gain")
    at.select_slider(key="denoise_level").set_value(0.4)
    at.selectbox(key="denoise_kind").set_value("salt-and-pepper").run()
    assert not at.exception, at.exception
    assert not at.error, _texts(at.error)
    noisy = next(m.value for m in at.metric if m.label == "Noisy vs clean")
    assert float(noisy.split()[0]) < 15.0  # 40% of the pixels black or white
    assert next(m.value for m in at.metric if m.label == "Gain") != gain
