"""The hosted dashboard's second audit: finished searches, re-uploads, upload quotas, paths on
the Overview, links in class names, and two storages sharing one runs folder."""

from __future__ import annotations

import dataclasses
import html
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from streamlit.testing.v1 import AppTest

from automl_core import limits
from automl_core.analysis import progress
from automl_core.errors import PermissionDenied
from automl_core.hosting import access, processes, uploads
from automl_core.search import workers
from automl_core.storage import store
from automl_core.storage.settings import SearchSettings

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 90
ALICE = access.User("alice", "operator")
DEMO = ROOT / "assets" / "demo"
TINY = {"num_conv_layers": [1], "filters": [4], "latent_dim": [4], "batch_size": [32]}
HOSTILE = ('<a href="https://evil.example">x</a>', "[y](https://evil.example)")


@pytest.fixture(scope="module")
def password_hash():
    return access.hash_password("alice-secret-1")


@pytest.fixture
def shared(runs_dir, monkeypatch, password_hash):
    """``shared(path, user=None)``: an AppTest of a page in shared mode (as ``user``)."""
    monkeypatch.delenv("AUTOML_MODE", raising=False)
    monkeypatch.setenv("AUTOML_SECRETS", str(runs_dir / "no-secrets.toml"))

    def make(path, user: access.User | None = None) -> AppTest:
        if callable(path):
            at = AppTest.from_function(path, default_timeout=TIMEOUT)
        else:
            at = AppTest.from_file(str(ROOT / path), default_timeout=TIMEOUT)
        at.secrets["automl"] = {
            "mode": "shared",
            "users": {"alice": {"role": "operator", "password_hash": password_hash}},
        }
        if user is not None:
            at.session_state["_access_user"] = user
        return at

    return make


def _texts(elements) -> str:
    return " | ".join(str(e.value) for e in elements)


def _shown(at: AppTest) -> str:
    """Every text element of a page run, main area and sidebar."""
    kinds = ("markdown", "caption", "info", "warning", "error", "success", "code", "subheader")
    return " | ".join(_texts(at.get(kind)) for kind in kinds)


def _ended_launch(study: str, owner: str, log_text: str) -> processes.LaunchRecord:
    """The launch record of a search of ``study`` whose process has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass", "automl_core"])
    process.wait()
    folder = workers.launches_dir()
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"{study}-test.log"
    log.write_text(log_text, encoding="utf-8")
    record = processes.LaunchRecord(study, process.pid, time.time() - 60, str(log), [], owner)
    (folder / f"{study}.json").write_text(json.dumps(record.__dict__), encoding="utf-8")
    return record


# --- 1. a finished search is shown to every visitor -------------------------------------------


class TestFinishedSearchInSharedMode:
    def test_a_visitor_sees_the_result_of_a_finished_search(self, shared, tiny_copy, monkeypatch):
        monkeypatch.setenv("AUTOML_MODE", "shared")  # as the core reads a hosted server's mode
        _ended_launch("tiny", "alice", "trial 3 finished\n")
        at = shared("pages/search.py")
        at.session_state["watch"] = "tiny"
        at.run()
        assert not at.exception
        assert "acting user" not in _shown(at)
        assert "Search finished with 4 trials" in _texts(at.success)
        assert "trial 3 finished" not in _texts(at.code)  # the log stays the owner's

    def test_progress_without_an_actor_reads_as_a_visitor(self, tiny_copy, monkeypatch):
        _ended_launch("tiny", "alice", "")
        monkeypatch.setenv("AUTOML_MODE", "shared")
        now = progress.search_progress("tiny", store.default_storage_url())
        assert now.exists and not now.running and now.done == 4

    def test_the_error_line_is_the_owners_a_visitor_is_told_there_was_one(
        self, runs_dir, monkeypatch
    ):
        _ended_launch("failed", "alice", "error: dataset '/srv/secret/x.npz' cannot be read\n")
        monkeypatch.setenv("AUTOML_MODE", "shared")
        url = store.default_storage_url()
        seen = progress.search_progress("failed", url, actor=access.VISITOR)
        assert seen.error and "/srv/secret" not in seen.error
        assert "owner" in seen.error
        owner = progress.search_progress("failed", url, actor=ALICE)
        assert owner.error == "error: dataset '/srv/secret/x.npz' cannot be read"


# --- 2. a corrected re-upload is saved again ------------------------------------------------


def _npz_bytes(seed: int, images: int = 40, labels_seed: int | None = None) -> bytes:
    """An uncompressed ``.npz`` of 8x8 images and labels (``x`` first, ``y`` after it)."""
    rng = np.random.default_rng(seed)
    x = rng.random((images, 8, 8), dtype=np.float32)
    y = np.random.default_rng(seed if labels_seed is None else labels_seed).integers(0, 3, images)
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y.astype(np.int64))
    return buffer.getvalue()


def UPLOAD_PAGE():  # noqa: N802 - a page, named like the page paths it stands beside
    """The sidebar's upload step with the bytes of the file named in the session state."""
    from pathlib import Path

    import streamlit as st

    from dashboard import search_form

    data = Path(st.session_state["payload"]).read_bytes()
    st.session_state["saved"] = search_form.upload_ui("labels.npz", data)


def test_a_corrected_reupload_with_the_same_start_is_saved(runs_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("AUTOML_MODE", raising=False)
    monkeypatch.setenv("AUTOML_SECRETS", str(runs_dir / "no-secrets.toml"))
    first, corrected = _npz_bytes(0), _npz_bytes(0, labels_seed=1)
    assert len(first) == len(corrected) and first[:4096] == corrected[:4096] != corrected
    (tmp_path / "first.npz").write_bytes(first)
    (tmp_path / "corrected.npz").write_bytes(corrected)
    at = AppTest.from_function(UPLOAD_PAGE, default_timeout=TIMEOUT)
    at.session_state["payload"] = str(tmp_path / "first.npz")
    at.run()
    assert not at.exception
    saved_first = at.session_state["saved"]
    at.session_state["payload"] = str(tmp_path / "corrected.npz")
    at.run()
    assert not at.exception
    saved_corrected = at.session_state["saved"]
    assert saved_corrected != saved_first
    assert Path(saved_corrected).read_bytes() == corrected
    assert Path(saved_first).read_bytes() == first


# --- 3. per-user upload quotas: how many, and how many bytes ---------------------------------


class TestUploadQuotas:
    @pytest.fixture
    def sharing(self, runs_dir, monkeypatch):
        monkeypatch.setenv("AUTOML_MODE", "shared")
        return runs_dir

    def test_the_quotas_are_named_limits(self):
        assert limits.get("max_uploads_per_user") > 0
        assert limits.get("max_upload_total_bytes") >= limits.get("max_upload_bytes")

    def test_uploads_at_the_count_limit_then_refused(self, sharing, monkeypatch):
        monkeypatch.setenv("AUTOML_MAX_UPLOADS_PER_USER", "2")
        saved = [uploads.save_upload(f"d{i}.npz", _npz_bytes(i), actor=ALICE) for i in range(2)]
        again = uploads.save_upload("d0.npz", _npz_bytes(0), actor=ALICE)  # the same file
        assert again == saved[0]
        with pytest.raises(
            PermissionDenied, match=r"alice already has 2 uploads.*max_uploads_per_user"
        ):
            uploads.save_upload("d2.npz", _npz_bytes(2), actor=ALICE)
        kept = sorted(p for p in uploads.user_uploads_dir(ALICE).iterdir())
        assert kept == sorted(saved)  # nothing saved before is lost, nothing new is kept
        assert not list(uploads.uploads_dir().glob(".*.part*"))

    def test_uploads_at_the_byte_limit_then_refused(self, sharing, monkeypatch):
        files = [_npz_bytes(i) for i in range(3)]
        assert len({len(f) for f in files}) == 1
        monkeypatch.setenv("AUTOML_MAX_UPLOAD_TOTAL_BYTES", str(2 * len(files[0])))
        saved = [uploads.save_upload(f"d{i}.npz", files[i], actor=ALICE) for i in range(2)]
        with pytest.raises(
            PermissionDenied, match=r"max_upload_total_bytes.*AUTOML_MAX_UPLOAD_TOTAL"
        ):
            uploads.save_upload("d2.npz", files[2], actor=ALICE)
        assert sorted(uploads.user_uploads_dir(ALICE).iterdir()) == sorted(saved)
        assert [p.read_bytes() for p in saved] == files[:2]

    def test_quotas_are_per_user(self, sharing, monkeypatch):
        monkeypatch.setenv("AUTOML_MAX_UPLOADS_PER_USER", "1")
        uploads.save_upload("d0.npz", _npz_bytes(0), actor=ALICE)
        other = access.User("bob", "operator")
        assert uploads.save_upload("d1.npz", _npz_bytes(1), actor=other).is_file()


# --- 4. the Overview names an upload by its file name, never the server's path ---------------


def test_the_overview_shows_an_uploads_name_not_its_path(shared, runs_dir):
    folder = runs_dir / "uploads" / "alice"
    folder.mkdir(parents=True)
    upload = folder / "my_digits-0123456789abcdef.npz"
    upload.write_bytes(_npz_bytes(0))
    url = store.default_storage_url()
    study = optuna.create_study(study_name="uploaded", storage=store.open_storage(url))
    settings = SearchSettings(study="uploaded", dataset=str(upload), space=TINY, strategy="grid")
    study.set_user_attr(store.SETTINGS_ATTR, settings.to_dict())
    at = shared("pages/overview.py").run()
    assert not at.exception
    shown = _shown(at)
    assert "my_digits.npz" in shown
    assert str(runs_dir) not in shown and "uploads/alice" not in shown
    assert uploads.display_name(str(upload)) == "my_digits.npz"
    assert uploads.display_name("digits") == "digits"
    assert uploads.display_name("/srv/data/photos.zip") == "photos.zip"


# --- 5. class names are text, never links ----------------------------------------------------


def _no_link(text: str) -> None:
    assert "<a" not in text and "\\u003ca" not in text.lower()


def test_class_names_in_the_latent_figure_are_text():
    from automl_core.analysis.charts import projection_figure
    from automl_core.analysis.latent import Projection

    points = np.arange(12, dtype=np.float32).reshape(6, 2)
    projection = Projection(points=points, method="pca", params={}, notices=())
    labels = np.array([0, 0, 1, 1, 2, 2])
    names = (*HOSTILE, "cats & dogs")
    figure = projection_figure(projection, labels, names)
    shown = [trace.name for trace in figure.data]
    assert [html.unescape(name) for name in shown] == list(names)
    for trace in figure.data:
        _no_link(trace.name)
        _no_link(" ".join(str(v) for v in np.asarray(trace.customdata)[:, 1]))
    _no_link(figure.to_json())


def test_class_names_in_the_report_are_text(tiny_study, monkeypatch):
    import automl_core.model.datasets as datasets
    from automl_core.analysis import export

    real = datasets.load_dataset

    def with_hostile_names(*args, **kwargs):
        data = real(*args, **kwargs)
        names = tuple(f'<a href="https://evil.example/{i}">class {i}</a>' for i in range(10))
        return dataclasses.replace(data, class_names=names)

    monkeypatch.setattr(export, "load_dataset", with_hostile_names)  # the name the report uses
    report = export.study_report(store.load_study(*tiny_study))
    assert "evil.example" in report and "&lt;a href=" in report
    _no_link(report.split("<h3>Latent space</h3>", 1)[1].split("<h3>", 1)[0])


# --- 6. two storages sharing one runs folder --------------------------------------------------


def test_deleting_the_demo_in_one_storage_keeps_the_others_models(runs_dir):
    first = f"sqlite:///{runs_dir / 'first.db'}"
    second = f"sqlite:///{runs_dir / 'second.db'}"
    name = "demo-mnist-5k"
    for url in (first, second):
        assert store.install_study(
            f"sqlite:///{DEMO / 'studies.db'}", DEMO / "artifacts", name, url
        )
    keys = {
        store.load_study(name, url).user_attrs.get(store.ARTIFACT_KEY_ATTR)
        for url in (first, second)
    }
    assert None not in keys and len(keys) == 2
    processes.delete_study(name, first)
    study = store.load_study(name, second)
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert finished
    for trial in finished:
        assert (store.trial_artifact_dir(study, trial) / "model.keras").is_file()
    assert (DEMO / "artifacts" / name).is_dir()  # the bundled copy is never touched


@pytest.fixture
def sleeping_searches(runs_dir, monkeypatch):
    """Launches are real, but each runs a sleeping process instead of a search."""
    started = []
    real = processes.build_command

    def sleeper(settings_file, workers):
        real(settings_file, workers)
        return [sys.executable, "-c", "import time; time.sleep(60)", "automl_core"]

    monkeypatch.setattr(processes, "build_command", sleeper)
    yield started
    for study, url in started:
        record = processes.read_record(study, url)
        if record is not None:
            try:
                processes.os.killpg(record.pid, 9)
            except ProcessLookupError:
                pass


def test_launch_records_are_kept_per_storage(sleeping_searches, runs_dir):
    first = f"sqlite:///{runs_dir / 'first.db'}"
    second = f"sqlite:///{runs_dir / 'second.db'}"
    settings = SearchSettings(study="same", dataset="digits", space=TINY, strategy="grid")
    sleeping_searches.extend([("same", first), ("same", second)])
    ours = processes.launch_search(settings, 1, first)
    assert processes.is_running("same", first)
    assert not processes.is_running("same", second)
    assert processes.read_record("same", second) is None
    assert processes.stop_search("same", grace_seconds=2, storage_url=second) is False
    assert processes.is_running("same", first)  # the other storage's Stop did not kill it
    theirs = processes.launch_search(settings, 1, second)  # not "already running"
    assert theirs.pid != ours.pid and processes.is_running("same", second)
    assert processes.stop_search("same", grace_seconds=2, storage_url=second)
    assert processes.is_running("same", first) and not processes.is_running("same", second)
    assert processes.stop_search("same", grace_seconds=2, storage_url=first)
    assert not processes.is_running("same", first)


def test_the_default_storage_keeps_the_old_signatures(sleeping_searches, runs_dir):
    settings = SearchSettings(study="plain", dataset="digits", space=TINY, strategy="grid")
    sleeping_searches.append(("plain", store.default_storage_url()))
    processes.launch_search(settings)
    assert processes.is_running("plain") and processes.read_record("plain").owner == "local"
    assert processes.running_studies() == ["plain"]
    assert processes.running_studies(f"sqlite:///{runs_dir / 'other.db'}") == []
    assert processes.stop_search("plain", grace_seconds=2)
    assert not processes.is_running("plain")
