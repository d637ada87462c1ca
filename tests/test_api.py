"""The Python API (``automl_core.search`` / ``results`` / ``load_model`` / ``export``) and the
installed package: ``pip install .``, the ``automl`` console script, and a search run from
outside the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

import automl_core
from automl_core import api, cli
from automl_core.errors import ArtifactMissing, ConfigError, DatasetError, StorageError
from automl_core.model.space import SearchSpace
from automl_core.search import preflight, workers
from automl_core.search.strategies import default_space
from automl_core.storage import store

ROOT = Path(__file__).resolve().parent.parent


def _environment(**extra: str) -> dict[str, str]:
    """This process's environment without a PYTHONPATH (nothing found through the
    repository), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, **extra}


def test_import_does_not_load_tensorflow(tmp_path):
    code = (
        "import automl_core, automl_core.model.space, sys; "
        "assert 'tensorflow' not in sys.modules, 'tensorflow'; "
        "assert 'optuna' not in sys.modules, 'optuna'; "
        "print(automl_core.__version__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=_environment(PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == automl_core.__version__


def test_the_package_offers_the_four_functions():
    assert automl_core.__all__ == ["search", "results", "load_model", "export"]
    for name in automl_core.__all__:
        assert getattr(automl_core, name) is getattr(api, name)
    # the search layer (a folder named like search()) is still imported by its full name,
    # and importing more of it does not rebind the package's attribute
    from automl_core.search import darts, runner  # noqa: F401

    assert automl_core.search is api.search and callable(runner.run_search)
    assert set(automl_core.__all__) <= set(dir(automl_core))
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        automl_core.nope  # noqa: B018


def _no_process(*args, **kwargs):
    pytest.fail("a worker process was started for a search that should have been refused")


@pytest.mark.parametrize(
    ("kwargs", "argv", "error", "message"),
    [
        (
            {"dataset": "nope"},
            ["--dataset", "nope"],
            DatasetError,
            "unknown dataset 'nope'; expected one of mnist-5k, digits",
        ),
        (
            {"dataset": "digits", "space": {"filters": []}},
            ["--dataset", "digits", "--space", "{space_file}"],
            ConfigError,
            "filters: the list of choices is empty; give at least one value",
        ),
        (
            {"dataset": "digits", "strategy": "nope"},
            ["--dataset", "digits", "--strategy", "nope"],
            ConfigError,
            "unknown strategy 'nope'; expected one of grid, random",
        ),
        (
            {"dataset": "digits", "trials": 0},
            ["--dataset", "digits", "--trials", "0"],
            ConfigError,
            "trials must be a positive integer, got trials=0",
        ),
        (
            {"dataset": "digits", "seed": -1},
            ["--dataset", "digits", "--seed", "-1"],
            ConfigError,
            "seed must be a non-negative integer, got seed=-1",
        ),
    ],
)
def test_bad_input_raises_the_clis_error_before_any_process(
    runs_dir, tmp_path, monkeypatch, capsys, kwargs, argv, error, message
):
    monkeypatch.setattr(workers, "spawn_worker", _no_process)
    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps({"filters": []}), encoding="utf-8")
    with pytest.raises(error, match=message) as raised:
        automl_core.search(**kwargs)
    argv = [a.format(space_file=space_file) for a in argv]
    assert cli.main(["search", *argv]) == 2
    assert capsys.readouterr().err == f"error: {raised.value}\n"  # the CLI's very line
    assert not (runs_dir / "logs").exists()


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("{missing}", "search space file '.*missing.yaml' does not exist"),
        ("{empty}", "a search space must be a mapping of parameter names, got None"),
        ([4, 8], r"a search space must be a mapping of parameter names, got \[4, 8\]"),
        ({"filter": [4]}, "unknown parameter 'filter'"),
    ],
)
def test_a_bad_space_is_refused(runs_dir, tmp_path, monkeypatch, space, message):
    monkeypatch.setattr(workers, "spawn_worker", _no_process)
    (tmp_path / "empty.yaml").write_text("", encoding="utf-8")
    if isinstance(space, str):
        space = space.format(missing=tmp_path / "missing.yaml", empty=tmp_path / "empty.yaml")
    with pytest.raises(ConfigError, match=message):
        automl_core.search(dataset="digits", space=space)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trials": "2"}, "trials must be an integer, got trials='2'"),
        ({"max_epochs": 1.5}, "max_epochs must be an integer, got max_epochs=1.5"),
        ({"timeout": "60"}, "timeout must be a number, got timeout='60'"),
        ({"workers": 0}, "workers must be a positive integer, got workers=0"),
        ({"precision": "float64"}, "unknown precision 'float64'"),
        ({"study": "a b"}, "invalid study name 'a b'"),
    ],
)
def test_bad_settings_are_refused(runs_dir, monkeypatch, kwargs, message):
    monkeypatch.setattr(workers, "spawn_worker", _no_process)
    with pytest.raises(ConfigError, match=message):
        automl_core.search(dataset="digits", **kwargs)


def test_a_space_is_read_as_the_cli_reads_its_space_file(tmp_path):
    (tmp_path / "space.yaml").write_text("filters: [4, 8]\nlatent_dim: 16\n", encoding="utf-8")
    from_file = api._space_dict(tmp_path / "space.yaml")
    assert from_file == api._space_dict({"filters": [4, 8], "latent_dim": 16})
    assert from_file == api._space_dict(SearchSpace.from_dict({"filters": [4, 8]}))
    assert from_file["filters"] == [4, 8] and from_file["num_conv_layers"] == [2]  # defaults
    # no space: the strategy's default, as the CLI takes it
    grid = preflight.resolve_settings({"dataset": "digits", "strategy": "grid"})
    assert grid.space == SearchSpace.from_dict(default_space("grid")).to_dict()


def test_reading_a_missing_study_names_the_storage(runs_dir, tmp_path):
    runs_dir.mkdir()
    url = f"sqlite:///{runs_dir / 'studies.db'}"
    with pytest.raises(StorageError, match="no study database at"):
        automl_core.results("nope", storage=url)
    store.study_names(url)  # an empty storage
    for call in (automl_core.results, automl_core.load_model):
        with pytest.raises(StorageError, match="no study named 'nope' in storage"):
            call("nope", storage=url)
    with pytest.raises(StorageError, match="no study named 'nope'"):
        automl_core.export("nope", tmp_path / "out", storage=url)
    with pytest.raises(ConfigError, match="trial must be a non-negative integer, got trial=-1"):
        automl_core.load_model("nope", trial=-1, storage=url)


@pytest.mark.slow
def test_results_load_model_and_export_read_a_finished_study(tiny_study, tmp_path):
    name, url = tiny_study
    table = automl_core.results(name, storage=url)
    assert list(table.columns[:4]) == ["study", "trial", "state", "val_mse"]
    assert len(table) == 4 and set(table["state"]) == {"COMPLETE"}
    assert table["val_mse"].is_monotonic_increasing  # best first
    best = int(table["trial"].iloc[0])
    model = automl_core.load_model(name, storage=url)
    assert model.name == "autoencoder" and model.output_shape == model.input_shape
    other = int(table["trial"].iloc[-1])
    assert automl_core.load_model(name, trial=other, storage=url).count_params() == int(
        table["param_count"].iloc[-1]
    )
    with pytest.raises(ConfigError, match="has no trial 99"):
        automl_core.load_model(name, trial=99, storage=url)
    bundle, report = automl_core.export(name, tmp_path / "out", storage=url)
    assert bundle == tmp_path / "out" / f"{name}-trial-{best}.zip"
    assert report == tmp_path / "out" / f"{name}-report.html"
    assert "model.keras" in zipfile.ZipFile(bundle).namelist()
    assert report.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_a_study_with_no_finished_trial_has_no_model(runs_dir):
    from automl_core.search.runner import prepare_study
    from automl_core.storage.settings import SearchSettings

    study = prepare_study(SearchSettings(study="empty", dataset="digits", space={}))
    assert automl_core.results(study).empty
    with pytest.raises(ArtifactMissing, match="has no finished trial with a model yet"):
        automl_core.load_model(study)


# the installed copy, run from outside the repository: a two-trial grid on 120 digits
INSTALLED_SCRIPT = """
import sys
from pathlib import Path

import keras

import automl_core

target = Path(sys.argv[1]).resolve()
assert Path(automl_core.__file__).resolve().parent == target / "automl_core", automl_core.__file__
storage = f"sqlite:///{Path.cwd() / 'studies.db'}"
study = automl_core.search(
    dataset="digits",
    space={"num_conv_layers": [1], "filters": [4], "latent_dim": [4, 8], "batch_size": [32]},
    strategy="grid",
    trials=2,
    max_epochs=1,
    max_images=120,
    study="installed",
    storage=storage,
    workers=1,
    precision="float32",
    seed=0,
)
table = automl_core.results("installed", storage=storage)
model = automl_core.load_model(study)
print("STATES", ",".join(table["state"]))
print("VAL_MSE", ",".join(repr(float(v)) for v in table["val_mse"]))
print("DTYPE", table["val_mse"].dtype)
print("SHAPES", model.input_shape, model.output_shape)
print("MODEL", isinstance(model, keras.Model), model.name)
"""

RECORD_IMPORT = """
import atexit
import os
import sys


def _record():
    module = sys.modules.get("automl_core")
    if module is not None:
        path = os.path.join(os.environ["AUTOML_TEST_IMPORTS"], f"{os.getpid()}.txt")
        with open(path, "w") as out:
            out.write(" ".join(sys.argv) + "\\n" + module.__file__ + "\\n")


atexit.register(_record)
"""


@pytest.mark.slow
def test_installed_package_runs_a_search_from_outside_the_repository(process_workers, tmp_path):
    # a copy of the tree, so the build's own folders (build/, *.egg-info) stay out of the
    # repository and no stale build/ of an earlier layout gets into the wheel
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "venv", "runs", "build", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    target = tmp_path / "target"
    work = tmp_path / "work"
    work.mkdir()
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],  # fmt: skip
        cwd=work,
        env=_environment(PIP_DISABLE_PIP_VERSION_CHECK="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    assert (target / "automl_core" / "api.py").is_file()
    # every Python process started below (the script, its workers) writes down which
    # automl_core it imported: a sitecustomize on the path records it as the process ends
    hooks, imports = tmp_path / "hooks", tmp_path / "imports"
    hooks.mkdir()
    imports.mkdir()
    (hooks / "sitecustomize.py").write_text(textwrap.dedent(RECORD_IMPORT), encoding="utf-8")
    env = _environment(
        PYTHONPATH=os.pathsep.join([str(target), str(hooks)]),
        AUTOML_HOME=str(work / "runs"),
        AUTOML_PRECISION="float32",
        AUTOML_TEST_IMPORTS=str(imports),
    )
    helped = subprocess.run(
        [str(target / "bin" / "automl"), "--help"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert helped.returncode == 0, helped.stderr
    assert "search" in helped.stdout and "leaderboard" in helped.stdout

    (work / "run.py").write_text(textwrap.dedent(INSTALLED_SCRIPT), encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "run.py", str(target)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    logs = "\n".join(p.read_text() for p in (work / "runs" / "logs").glob("*.log"))
    assert run.returncode == 0, run.stdout + run.stderr + logs
    lines = dict(line.split(" ", 1) for line in run.stdout.splitlines() if " " in line)
    assert lines["STATES"] == "COMPLETE,COMPLETE"  # both trials, trained by the workers
    val_mse = [float(v) for v in lines["VAL_MSE"].split(",")]
    assert all(0.0 < v < 1.0 for v in val_mse) and val_mse == sorted(val_mse)
    assert lines["DTYPE"] == "float64"
    assert lines["SHAPES"] == "(None, 8, 8, 1) (None, 8, 8, 1)"
    assert lines["MODEL"] == "True autoencoder"
    records = [p.read_text().splitlines() for p in imports.glob("*.txt")]
    assert any("worker" in argv for argv, _ in records), records  # the workers' own
    assert {Path(module).parent for _, module in records} == {target / "automl_core"}, records
