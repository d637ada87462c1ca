"""Shared fixtures: a private runs directory per test session and a tiny finished study."""

from __future__ import annotations

import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# no background UMAP compile in every AppTest process (tests/test_latent.py tests it)
os.environ.setdefault("AUTOML_WARM_UP", "0")
# tests train in float32 unless they say otherwise: no probe per runs folder, and results
# that do not depend on the machine's number formats (tests/test_precision.py covers those)
os.environ.setdefault("AUTOML_PRECISION", "float32")
# searches train their trials in their own process: a test of the search logic then pays no
# TensorFlow start-up per worker. Tests of the processes themselves (kill, interrupt, two
# workers, PostgreSQL, the browser) ask for them with the ``process_workers`` fixture
os.environ.setdefault("AUTOML_WORKER_POOL", "inline")

import pytest  # noqa: E402

TINY_SPACE = {
    "num_conv_layers": [1, 2],
    "filters": [4],
    "activation": ["relu"],
    "latent_dim": [4, 8],
    "batch_size": [32],
}


@pytest.fixture
def process_workers(monkeypatch):
    """Searches in this test run their trials in worker processes, as they do for users."""
    monkeypatch.setenv("AUTOML_WORKER_POOL", "process")


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    """An empty runs directory used as AUTOML_HOME for one test."""
    home = tmp_path / "runs"
    monkeypatch.setenv("AUTOML_HOME", str(home))
    monkeypatch.delenv("AUTOML_STORAGE", raising=False)
    monkeypatch.delenv("AUTOML_ARTIFACTS", raising=False)
    return home


def _search_in(home, settings) -> None:
    """Runs a search to its end with AUTOML_HOME (inherited by its workers) set to ``home``."""
    from automl_core.search.runner import run_search

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTOML_HOME", str(home))
        run_search(settings, f"sqlite:///{home / 'studies.db'}")


@pytest.fixture(scope="session")
def search_in():
    """``search_in(home, settings)``: a finished study in a runs directory of its own."""
    return _search_in


@pytest.fixture(scope="session")
def tiny_study_home(tmp_path_factory):
    """A runs directory holding study ``tiny`` on ``digits``: 4 grid trials, 2 epochs each.

    Session-scoped and read-only for tests: copy it (``shutil.copytree``) before writing.
    """
    from automl_core.storage.settings import SearchSettings

    home = tmp_path_factory.mktemp("tiny_runs")
    _search_in(
        home,
        SearchSettings(
            study="tiny",
            dataset="digits",
            space=TINY_SPACE,
            strategy="grid",
            max_epochs=2,
            max_images=150,
            seed=0,
        ),
    )
    return home


@pytest.fixture
def tiny_study(tiny_study_home, monkeypatch):
    """(study name, storage URL) of the tiny study, with AUTOML_HOME pointing at it."""
    monkeypatch.setenv("AUTOML_HOME", str(tiny_study_home))
    monkeypatch.delenv("AUTOML_STORAGE", raising=False)
    monkeypatch.delenv("AUTOML_ARTIFACTS", raising=False)
    return "tiny", f"sqlite:///{tiny_study_home / 'studies.db'}"


@pytest.fixture
def tiny_copy(tiny_study_home, runs_dir):
    """A writable copy of the tiny study in this test's runs directory (returned), its
    artifacts read from the copy."""
    from automl_core.storage import store

    shutil.copytree(tiny_study_home, runs_dir)
    study = store.load_study("tiny", store.default_storage_url())
    study.set_user_attr(store.ARTIFACT_ROOT_ATTR, str(runs_dir / "artifacts"))
    return runs_dir


POSTGRES_URL = os.environ.get(
    "AUTOML_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def postgres_url() -> str:
    """The test PostgreSQL server's URL; skips where none answers, fails under CI (which
    starts one: the many-machines path must be checked on every landing)."""
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
        engine.dispose()
    except Exception as exc:  # no server, no driver
        reason = f"no PostgreSQL server answers at {POSTGRES_URL} ({type(exc).__name__})"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: CI starts PostgreSQL (.ci/run), so this test must run there")
        pytest.skip(reason)
    return POSTGRES_URL


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium for the end-to-end tests; skips where it is missing, fails under CI
    (which installs it: .ci/run)."""
    if not os.path.exists(CHROMIUM):
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: CI installs it (.ci/run), so this test must run there")
        pytest.skip(reason)
    return CHROMIUM
