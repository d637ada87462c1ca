"""A search space in which nothing can be built is refused before anything trains."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from automl_core.errors import ConfigError
from automl_core.model.shapes import check_space_fits
from automl_core.model.space import SearchSpace
from automl_core.search import preflight
from automl_core.storage.settings import SearchSettings

ROOT = Path(__file__).resolve().parent.parent


def test_a_space_of_only_impossible_combinations_is_refused_naming_why():
    space = SearchSpace.from_dict({"bottleneck": ["conv"], "objective": ["variational"]})
    with pytest.raises(ConfigError, match="no configuration of this search space.*variational"):
        check_space_fits(space, (28, 28, 1))


def test_attention_on_a_bottleneck_of_one_position_is_refused_for_the_whole_space():
    space = SearchSpace.from_dict({"num_conv_layers": [3], "attention": [True]})
    with pytest.raises(ConfigError, match="attention=true needs a bottleneck"):
        check_space_fits(space, (8, 8, 1))


def test_a_space_with_some_possible_configurations_is_kept_and_reports_their_share():
    space = SearchSpace.from_dict({"num_conv_layers": [1, 3], "attention": [True]})
    assert check_space_fits(space, (8, 8, 1)) == pytest.approx(0.5)


def test_ranges_are_probed_including_the_multiples_a_conv_bottleneck_needs():
    # 16x16 with 2 layers: a 4x4 bottleneck, so only latent sizes that are multiples of 16 fit
    space = SearchSpace.from_dict(
        {"num_conv_layers": [2], "bottleneck": ["conv"], "latent_dim": {"low": 10, "high": 40}}
    )
    assert 0 < check_space_fits(space, (16, 16, 1)) < 1
    narrow = SearchSpace.from_dict(
        {"num_conv_layers": [2], "bottleneck": ["conv"], "latent_dim": {"low": 17, "high": 31}}
    )
    with pytest.raises(ConfigError, match="multiple of the 4x4 bottleneck"):
        check_space_fits(narrow, (16, 16, 1))


def test_a_model_too_large_everywhere_is_refused(monkeypatch):
    monkeypatch.setenv("AUTOML_MAX_MODEL_PARAMETERS", "100")
    with pytest.raises(ConfigError, match="AUTOML_MAX_MODEL_PARAMETERS"):
        check_space_fits(SearchSpace.from_dict({}), (28, 28, 1))


def test_the_pre_flight_check_refuses_an_impossible_space(runs_dir):
    settings = SearchSettings(
        dataset="digits",
        space={"bottleneck": ["conv"], "objective": ["variational"]},
        study="impossible",
    )
    with pytest.raises(ConfigError, match="no configuration of this search space"):
        preflight.check_search(settings)


def test_the_cli_refuses_it_before_any_trial_and_without_tensorflow(tmp_path):
    space = tmp_path / "space.json"
    space.write_text('{"bottleneck": ["conv"], "objective": ["variational"]}')
    code = (
        "import sys; from automl_core.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print('tensorflow' in sys.modules, code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "search", "--dataset", "digits", "--space", str(space)],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "AUTOML_HOME": str(tmp_path / "runs")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stderr.startswith("error: no configuration of this search space")
    assert done.stdout.split() == ["False", "2"]  # nothing printed before the refusal
    assert not list((tmp_path / "runs").glob("**/trial_*"))
