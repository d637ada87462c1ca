"""PCA as the baseline: scored like test_psnr, cached once per latent size, shown wherever a
model is judged (leaderboard, CLI, inspection pages, HTML report)."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial
from streamlit.testing.v1 import AppTest

from automl_core.analysis import leaderboard
from automl_core.cli import main
from automl_core.model import baseline
from automl_core.model.datasets import load_dataset, split_arrays
from automl_core.model.metrics import reconstruction_scores
from automl_core.storage import results
from automl_core.storage.trials import METRICS_ATTR, TrialRecord

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120


@pytest.fixture(autouse=True)
def fresh_memo():
    baseline.clear_memo()
    yield
    baseline.clear_memo()


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", 0, max_images=200)


def _direct_sklearn(data, k: int) -> tuple[float, float]:
    """PCA scored by hand, as training.py scores test_psnr: clipped, mean of per-image."""
    from sklearn.decomposition import PCA

    flat = data.x_train.reshape(len(data.x_train), -1)
    pca = PCA(n_components=k, svd_solver="full").fit(flat)
    test = data.x_test.reshape(len(data.x_test), -1)
    rebuilt = np.clip(pca.inverse_transform(pca.transform(test)), 0, 1)
    scores = reconstruction_scores(data.x_test, rebuilt.reshape(data.x_test.shape).astype("f4"))
    return float(scores.psnr.mean()), float(scores.ssim.mean())


class TestScores:
    @pytest.mark.parametrize("k", [2, 8, 20])
    def test_matches_sklearn_on_the_same_split(self, digits, k):
        scores = baseline.pca_scores(digits, k)
        psnr, ssim = _direct_sklearn(digits, k)
        assert abs(scores.psnr - psnr) < 0.1
        assert abs(scores.ssim - ssim) < 0.01
        assert scores.n_components == scores.requested == k and scores.note == ""
        assert scores.metrics() == {"pca_psnr": scores.psnr, "pca_ssim": scores.ssim}

    def test_fit_pca_is_reusable_and_reconstructs_in_shape(self, digits):
        pca = baseline.fit_pca(digits.x_train, 6)
        assert pca.components_.shape == (6, 64)
        rebuilt = baseline.pca_reconstruct(pca, digits.x_test[:3])
        assert rebuilt.shape == digits.x_test[:3].shape and rebuilt.dtype == np.float32
        assert rebuilt.min() >= 0.0 and rebuilt.max() <= 1.0

    def test_components_are_clamped_with_a_note(self):
        rng = np.random.default_rng(0)
        data = split_arrays("tiny", rng.random((12, 4, 4, 1), dtype=np.float32), None, None)
        scores = baseline.pca_scores(data, 50)
        n_train = len(data.x_train)
        assert scores.n_components == n_train and scores.requested == 50
        assert f"{n_train} components instead of 50" in scores.note
        assert baseline.clamp_components(8, 100, 16) == (8, "")

    @pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
    def test_latent_dim_must_be_a_positive_integer(self, digits, bad):
        with pytest.raises(ValueError, match="latent_dim must be a positive integer"):
            baseline.pca_scores(digits, bad)


class TestCache:
    def test_fitted_once_per_latent_size(self, digits, tmp_path, monkeypatch):
        fits = []
        real = baseline.fit_pca
        monkeypatch.setattr(baseline, "fit_pca", lambda x, k: fits.append(k) or real(x, k))
        first = baseline.pca_scores(digits, 4, tmp_path)
        assert baseline.pca_scores(digits, 4, tmp_path) == first
        assert fits == [4]
        baseline.pca_scores(digits, 8, tmp_path)
        assert fits == [4, 8]
        # another process: the JSON cache answers, nothing is refitted
        baseline.clear_memo()
        assert baseline.pca_scores(digits, 4, tmp_path) == first
        assert fits == [4, 8]
        files = sorted(p.name for p in tmp_path.iterdir())
        assert len(files) == 2 and all(f.startswith("pca-") for f in files)

    def test_another_split_is_another_key(self, digits, tmp_path):
        other = load_dataset("digits", 1, max_images=200)
        assert baseline.dataset_fingerprint(other) != baseline.dataset_fingerprint(digits)
        baseline.pca_scores(digits, 4, tmp_path)
        baseline.pca_scores(other, 4, tmp_path)
        assert len(list(tmp_path.iterdir())) == 2

    def test_a_broken_cache_file_is_recomputed(self, digits, tmp_path):
        first = baseline.pca_scores(digits, 4, tmp_path)
        (cached,) = tmp_path.iterdir()
        cached.write_text("{not json")
        baseline.clear_memo()
        assert baseline.pca_scores(digits, 4, tmp_path) == first
        assert json.loads(cached.read_text())["latent_dim"] == 4

    def test_a_failing_baseline_is_logged_and_left_out(self, digits, monkeypatch, caplog):
        def broken(x, k):
            raise MemoryError("no room")

        monkeypatch.setattr(baseline, "fit_pca", broken)
        with caplog.at_level(logging.WARNING, logger="automl_core.model.baseline"):
            assert baseline.baseline_metrics(digits, 4) == {}
        assert "PCA baseline with 4 components left out: no room" in caplog.text


# --- the table and the verdict -----------------------------------------------------------

DIST = {"latent_dim": CategoricalDistribution([4, 8])}


def _add(study, latent, val, psnr, pca=None):
    metrics = {"val_mse": val, "test_psnr": psnr, "test_ssim": 0.5, "compression_ratio": 16.0}
    if pca is not None:
        metrics.update(pca_psnr=pca, pca_ssim=0.4)
    study.add_trial(
        create_trial(
            state=TrialState.COMPLETE,
            value=val,
            params={"latent_dim": latent},
            distributions=DIST,
            user_attrs={
                METRICS_ATTR: metrics,
                "config": {"latent_dim": latent},
                "artifact_dir": f"s/{len(study.trials)}",
            },
        )
    )


@pytest.fixture
def judged(tmp_path):
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}")
    _add(study, 4, 0.01, 18.0, pca=19.5)  # the best model, below PCA
    _add(study, 8, 0.02, 22.0, pca=20.0)
    _add(study, 8, 0.03, 21.0)  # stored before the baseline existed
    return study


class TestLeaderboard:
    def test_vs_pca_column(self, judged):
        frame = results.trials_frame(judged)
        assert list(frame["trial"]) == [0, 1, 2]
        assert frame["vs_pca_db"].iloc[0] == pytest.approx(-1.5)
        assert frame["vs_pca_db"].iloc[1] == pytest.approx(2.0)
        assert math.isnan(frame["vs_pca_db"].iloc[2])
        columns = leaderboard.display_columns(frame, with_study=False)
        assert columns.index("vs_pca_db") == columns.index("test_psnr") + 1
        assert "vs_pca_db" in results.EMPTY_COLUMNS
        assert math.isnan(TrialRecord(0, "COMPLETE").vs_pca_db)

    def test_verdict_says_below(self, judged):
        frame = results.trials_frame(judged)
        verdict = leaderboard.best_pca_verdict(frame)
        assert verdict.below and verdict.trial == 0 and verdict.gap_db == pytest.approx(-1.5)
        assert "1.50 dB BELOW PCA with 4 components" in verdict.text
        above = leaderboard.pca_verdict(1, 8, 22.0, 20.0)
        assert not above.below and "2.00 dB above PCA with 8 components" in above.text
        assert leaderboard.pca_verdict(1, 8, 22.0, math.nan) is None
        assert "blank for 1 finished trial" in leaderboard.pca_missing_note(frame)

    def test_cli_leaderboard_shows_the_comparison(self, judged, tmp_path, capsys):
        url = f"sqlite:///{tmp_path / 's.db'}"
        assert main(["leaderboard", "--study", "s", "--storage", url]) == 0
        out = capsys.readouterr().out
        assert "vs_pca_db" in out.splitlines()[0].split()
        assert "-1.5" in out.splitlines()[1]
        assert "negative = worse than a linear projection" in out
        assert main(["leaderboard", "--study", "s", "--storage", url, "--wide"]) == 0
        header = capsys.readouterr().out.splitlines()[0].split()
        assert "vs_pca_db" in header and "pca_psnr" in header

    def test_compression_curve_has_the_pca_line(self, judged):
        from automl_core.analysis import charts
        from automl_core.analysis.inspect import compression_curve

        frame = results.trials_frame(judged)
        curve = compression_curve(frame)
        assert list(curve["pca_psnr"]) == [19.5, 20.0]
        figure = charts.compression_curve_figure(curve)
        assert [t.name for t in figure.data] == ["best PSNR", "PCA (same components)"]
        older = frame.drop(columns=["pca_psnr"])
        assert compression_curve(older)["pca_psnr"].isna().all()
        assert list(compression_curve(older, {4: 1.0, 8: 2.0})["pca_psnr"]) == [1.0, 2.0]


# --- a real tiny search, the CLI summary, the pages and the report --------------------------


class TestRealSearch:
    def test_trial_metrics_hold_the_baseline(self, tiny_study):
        from automl_core.storage import store
        from automl_core.storage.settings import study_settings

        name, url = tiny_study
        study = store.load_study(name, url)
        settings = study_settings(study)
        data = load_dataset(
            settings.dataset,
            settings.seed,
            settings.val_fraction,
            settings.test_fraction,
            settings.max_images,
        )
        complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
        assert complete
        for trial in complete:
            metrics = trial.user_attrs[METRICS_ATTR]
            expected, _ = _direct_sklearn(data, trial.user_attrs["config"]["latent_dim"])
            assert abs(metrics["pca_psnr"] - expected) < 0.1
            assert 0 < metrics["pca_ssim"] <= 1
        cache = store.artifact_root() / store.study_artifact_folder(study) / "pca"
        sizes = {t.user_attrs["config"]["latent_dim"] for t in complete}
        assert len(list(cache.glob("pca-*.json"))) == len(sizes)

    def test_cli_summary_compares_the_best_with_pca(self, tiny_study, capsys):
        name, url = tiny_study
        assert main(["filters", "--study", name, "--storage", url]) == 0
        out = capsys.readouterr().out
        line = next(x for x in out.splitlines() if "PCA with" in x)
        below = "BELOW" in line
        assert line.startswith("WARNING: ") == below
        assert ("a linear projection" in line) == below

    def test_report_shows_the_comparison(self, tiny_study):
        from automl_core.analysis.export import study_report
        from automl_core.storage import store

        report = study_report(store.load_study(*tiny_study))
        assert (
            "<th>vs PCA (dB)</th>" in report
            and "negative = worse than a linear projection" in report
        )
        assert "Against PCA: Trial #" in report and "PCA (same components)" in report


@pytest.fixture
def no_demo(monkeypatch, tmp_path):
    from dashboard import state

    monkeypatch.setattr(state, "DEMO_DIR", tmp_path / "no-demo")


def _page(name: str, study: str = "tiny") -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=TIMEOUT)
    at.session_state["study"] = study
    return at.run()


def _ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def _chart_names(at: AppTest, key: str) -> list[str]:
    charts = [c for c in at.get("plotly_chart") if key in c.proto.id]
    assert charts, key
    return [t.get("name") for t in json.loads(charts[0].proto.spec)["data"]]


@pytest.mark.slow
class TestPages:
    def test_leaderboard_page(self, tiny_study, no_demo):
        at = _page("leaderboard")
        _ok(at)
        (table,) = at.dataframe
        assert "vs_pca_db" in table.value.columns and table.value["vs_pca_db"].notna().any()
        said = [i.value for i in at.info] + [c.value for c in at.caption]
        assert any("PCA" in s and "Trial #" in s for s in said)

    def test_reconstructions_page(self, tiny_study, no_demo):
        at = _page("reconstructions")
        _ok(at)
        labels = [m.label for m in at.metric]
        assert "Test PSNR" in labels and any(m.startswith("PCA, ") for m in labels)
        assert "vs PCA" in str(at.metric[0].proto.delta)
        assert "PCA (same components)" in _chart_names(at, "fig_curve")

    def test_activations_page(self, tiny_study, no_demo):
        at = _page("activations")
        _ok(at)
        assert {m.label for m in at.metric} == {"PSNR", "SSIM"}
        assert "vs PCA" in str(at.metric[0].proto.delta)
        assert any(c.value.startswith("PCA, ") for c in at.caption)


@pytest.fixture
def older_study(tiny_study_home, runs_dir, no_demo):
    """Study ``old``: the tiny study's trials as stored before the PCA baseline existed."""
    from automl_core.storage import store

    shutil.copytree(tiny_study_home, runs_dir)
    url = store.default_storage_url()
    tiny = store.load_study("tiny", url)
    old = optuna.create_study(study_name="old", storage=url)
    for key, value in tiny.user_attrs.items():
        old.set_user_attr(key, value)
    old.set_user_attr(store.ARTIFACT_ROOT_ATTR, str(runs_dir / "artifacts"))
    for trial in tiny.trials:
        attrs = dict(trial.user_attrs)
        metrics = dict(attrs.get(METRICS_ATTR) or {})
        metrics.pop("pca_psnr", None)
        metrics.pop("pca_ssim", None)
        attrs[METRICS_ATTR] = metrics
        old.add_trial(
            create_trial(
                state=trial.state,
                values=trial.values,
                params=trial.params,
                distributions=trial.distributions,
                user_attrs=attrs,
                intermediate_values=trial.intermediate_values,
            )
        )
    return "old", url


@pytest.mark.slow
class TestOlderStudies:
    def test_leaderboard_shows_blanks(self, older_study):
        at = _page("leaderboard", "old")
        _ok(at)
        (table,) = at.dataframe
        assert table.value["vs_pca_db"].isna().all()
        assert any("vs PCA is blank" in c.value for c in at.caption)

    def test_reconstructions_compute_the_baseline_lazily(self, older_study):
        at = _page("reconstructions", "old")
        _ok(at)
        assert any(m.label.startswith("PCA, ") for m in at.metric)
        assert "PCA (same components)" in _chart_names(at, "fig_curve")
