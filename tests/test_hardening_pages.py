"""Dashboard hardening (#10): storage errors at every page's edge, no password or traceback
shown, a one-image test split, and load notes where a dataset is loaded."""

from __future__ import annotations

import contextlib
import io
import os
import sqlite3
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import optuna
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120
PAGES = (
    "overview",
    "search",
    "leaderboard",
    "filters",
    "activations",
    "latent_space",
    "reconstructions",
)
INSPECTION_PAGES = ("filters", "activations", "latent_space", "reconstructions")
SECRET_URL = "postgresql://bob:s3cret@127.0.0.1:1/x"  # nothing listens on port 1


def _texts(elements) -> str:
    return " | ".join(str(e.value) for e in elements)


def _everything(at: AppTest) -> str:
    """Every text the page shows, main area and sidebar."""
    kinds = ("error", "warning", "info", "success", "markdown", "caption", "code", "exception")
    return " | ".join(
        _texts(getattr(at, kind)) + _texts(getattr(at.sidebar, kind)) for kind in kinds
    )


def _page(name: str, **session) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=TIMEOUT)
    for key, value in session.items():
        at.session_state[key] = value
    return at.run()


def _session_for(page: str) -> dict:
    """The search page reads the storage only while it follows a search."""
    return {"watch": "s"} if page == "search" else {}


@pytest.fixture
def no_demo(monkeypatch, tmp_path):
    """Keeps the bundled demo study out of the storage the test reads."""
    from dashboard import state

    monkeypatch.setattr(state, "DEMO_DIR", tmp_path / "no-demo")


def _damaged_db(path: Path) -> None:
    """A real study database whose middle pages are overwritten."""
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    study = optuna.create_study(study_name="s", storage=storage)
    for value in range(200):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        trial.set_user_attr("note", "n" * 200)
        study.tell(trial, value)
    storage.engine.dispose()
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(path, "r+b") as file:
        file.seek(path.stat().st_size // 2)
        file.write(b"\xa5" * 8192)


@pytest.mark.parametrize("page", PAGES)
def test_random_bytes_database_is_an_error_not_a_traceback(page, runs_dir):
    runs_dir.mkdir(parents=True)
    (runs_dir / "studies.db").write_bytes(os.urandom(16_384))
    at = _page(page, **_session_for(page))
    assert not at.exception, at.exception
    errors = _texts(at.error)
    assert f"the study database {runs_dir / 'studies.db'} cannot be used as SQLite" in errors
    assert "file is not a database" in errors and "not a study database" in errors


@pytest.mark.parametrize("page", ("overview", "leaderboard", "filters", "reconstructions"))
def test_partly_overwritten_database_is_an_error_not_a_traceback(page, runs_dir):
    _damaged_db(runs_dir / "studies.db")
    at = _page(page, **_session_for(page))
    assert not at.exception, at.exception
    assert "database disk image is malformed" in _texts(at.error)


@pytest.mark.parametrize("page", PAGES)
def test_unreachable_storage_is_told_without_its_password(page, runs_dir, monkeypatch):
    monkeypatch.setenv("AUTOML_STORAGE", SECRET_URL)
    at = _page(page, **_session_for(page))
    assert not at.exception, at.exception
    assert "storage 'postgresql://bob:***@127.0.0.1:1/x' is unreachable" in _texts(at.error)
    assert "s3cret" not in _everything(at)


def test_pages_read_a_missing_database_without_creating_it(runs_dir, no_demo):
    at = _page("overview")
    assert not at.exception
    assert "No study yet" in _texts(at.sidebar.info)
    assert not (runs_dir / "studies.db").exists()


def _failing_page() -> None:
    raise RuntimeError("cannot reach postgresql://bob:s3cret@127.0.0.1:1/x")


def test_visitors_never_see_tracebacks(monkeypatch):
    import streamlit.config

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert config["client"]["showErrorDetails"] == "none"
    monkeypatch.chdir(ROOT)  # Streamlit reads .streamlit/config.toml from the working folder
    streamlit.config.get_config_options(force_reparse=True)
    at = AppTest.from_function(_failing_page, default_timeout=TIMEOUT).run()
    assert len(at.exception) == 1  # an error the page did not catch: told, but redacted
    assert "s3cret" not in at.exception[0].message and not at.exception[0].stack_trace


@pytest.fixture
def tiny_copy_study(tiny_copy):
    """The study of the writable tiny copy (see conftest's ``tiny_copy``)."""
    from automl_core.storage import store

    return store.load_study("tiny", store.default_storage_url())


def _set_settings(study, **changes) -> None:
    from automl_core.storage import store

    study.set_user_attr(store.SETTINGS_ATTR, {**study.user_attrs[store.SETTINGS_ATTR], **changes})


@pytest.mark.parametrize("page", INSPECTION_PAGES)
def test_a_one_image_test_split(page, tiny_copy_study, no_demo):
    _set_settings(tiny_copy_study, max_images=3)  # 1 training, 1 validation and 1 test image
    at = _page(page, study="tiny")
    assert not at.exception, at.exception
    if page == "reconstructions":
        assert "1 test image: mean PSNR" in _texts(at.caption)
        # no count to choose from one image (the anomaly threshold is a percentile)
        assert {slider.key for slider in at.slider} <= {"anomaly_percentile"}
        assert len(at.get("plotly_chart")) >= 3


def _write_mixed_images(folder: Path, count: int = 24) -> None:
    """``count`` 8x8 grayscale digits; 4 saved at 10x10, 3 as grayscale with alpha."""
    from automl_core.model.datasets import load_arrays

    x, _, _ = load_arrays("digits")
    folder.mkdir(parents=True)
    for i in range(count):
        image = Image.fromarray((x[i, ..., 0] * 255).astype(np.uint8), mode="L")
        if i < 4:
            image = image.resize((10, 10))
        elif i < 7:
            image = image.convert("LA")
        image.save(folder / f"{i:03d}.png")


@pytest.mark.parametrize("page", ("overview", "reconstructions"))
def test_load_notes_are_shown_where_a_study_dataset_is_loaded(
    page, tiny_copy_study, runs_dir, no_demo
):
    folder = runs_dir / "mixed"
    _write_mixed_images(folder)
    _set_settings(tiny_copy_study, dataset=str(folder))
    at = _page(page, study="tiny")
    assert not at.exception, at.exception
    captions = _texts(at.caption)
    assert "Dataset: 4 of 24 images were resized to 8x8" in captions
    assert "Dataset: 3 of 24 images were converted to grayscale (from LA: 3)" in captions


def _upload_page(path: str) -> None:
    """A script that hands one file to the Search page's upload step."""
    from pathlib import Path

    from dashboard.search_form import upload_ui

    upload_ui(Path(path).name, Path(path).read_bytes())


def test_load_notes_are_shown_where_an_upload_is_accepted(runs_dir, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(12):
            image = Image.new("L", (12, 12) if i < 3 else (8, 8), color=20 * i)
            if i == 5:
                image = image.convert("RGB")
            png = io.BytesIO()
            image.save(png, format="PNG")
            archive.writestr(f"img_{i:02d}.png", png.getvalue())
    upload = tmp_path / "mixed.zip"
    upload.write_bytes(buffer.getvalue())
    at = AppTest.from_function(_upload_page, args=(str(upload),), default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    assert "Dataset saved as" in _texts(at.sidebar.success)
    infos = _texts(at.sidebar.info)
    assert "3 of 12 images were resized to 8x8" in infos
    assert "11 of 12 images were converted to RGB (from L: 11)" in infos
