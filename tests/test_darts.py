"""DARTS: the super-network, its search, the derived architecture and the bad input it refuses."""

from __future__ import annotations

import itertools

import numpy as np
import optuna
import pytest

from automl_core.errors import ConfigError
from automl_core.model.space import SearchSpace
from automl_core.search import darts
from automl_core.search.darts import (
    DARTS_ATTR,
    DartsResult,
    DartsSampler,
    build_supernet,
    derive,
    search_architecture,
    supernet_parameters,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = SearchSpace.from_dict(
    {
        "kernel_size": [3, 5],
        "downsample": ["max-pool", "avg-pool", "stride"],
        "upsample": ["resize", "transpose"],
        "num_conv_layers": [1, 2],
        "filters": [4],
        "latent_dim": [8],
        "batch_size": [16],
    }
)


@pytest.fixture(scope="module")
def digits():
    from automl_core.model.datasets import load_dataset

    return load_dataset("digits", seed=0, max_images=120)


@pytest.mark.parametrize("shape", [(8, 8, 1), (7, 7, 3)])
def test_supernet_output_shape_equals_input_for_every_cell_choice(shape):
    model, mixed = build_supernet(SPACE, shape)
    images = np.random.default_rng(0).random((2, *shape)).astype("float32")
    assert tuple(model.output_shape[1:]) == shape
    for name, layer in mixed.items():
        for index in range(len(layer.candidates)):
            strong = np.zeros(len(layer.candidates), dtype="float32")
            strong[index] = 30.0  # softmax ~ one-hot: this cell runs that operation alone
            layer.alpha.assign(strong)
            out = np.asarray(model(images))
            assert out.shape == images.shape, (name, index)
            assert np.isfinite(out).all()
        layer.alpha.assign(np.zeros(len(layer.candidates), dtype="float32"))


@pytest.mark.parametrize("shape", [(8, 8, 1), (7, 7, 3)])
def test_every_derived_architecture_builds_with_the_input_shape(shape):
    from automl_core.model.models import build_autoencoder
    from automl_core.model.space import ModelConfig

    reference = darts.reference_values(SPACE)
    for kernel, down, up in itertools.product(
        [3, 5], ["max-pool", "avg-pool", "stride"], ["resize", "transpose"]
    ):
        _, params = derive(
            [
                {
                    "name": "encoder_1",
                    "parameter": "kernel_size",
                    "choices": [kernel, 0],
                    "weights": [[1, 0]],
                },
                {
                    "name": "encoder_down_1",
                    "parameter": "downsample",
                    "choices": [down, ""],
                    "weights": [[1, 0]],
                },
                {
                    "name": "decoder_up_1",
                    "parameter": "upsample",
                    "choices": [up, ""],
                    "weights": [[1, 0]],
                },
            ]
        )
        config = ModelConfig(**{**reference, **params})
        model = build_autoencoder(config, shape).autoencoder
        assert tuple(model.output_shape[1:]) == shape


def test_the_parameter_estimate_is_the_built_count():
    for shape in ((8, 8, 1), (7, 7, 3)):
        model, _ = build_supernet(SPACE, shape)
        assert supernet_parameters(SPACE, shape) == model.count_params()


def test_derived_architecture_is_the_argmax_of_the_learned_weights(digits):
    result = search_architecture(SPACE, digits, epochs=2, seed=0)
    assert result.done and len(result.val_mse) == 2
    searched = [c for c in result.cells if len(c["choices"]) > 1]
    assert len(searched) == 8  # two encoder and two decoder blocks, two cells each
    for cell in searched:
        weights = np.array(cell["weights"])
        assert weights.shape == (3, len(cell["choices"]))  # before training, after each epoch
        assert np.allclose(weights[0], 1 / len(cell["choices"]))
        assert np.allclose(weights.sum(axis=1), 1)
        assert not np.allclose(weights[-1], weights[0])  # the architecture weights learned
        assert result.derived[cell["name"]] == cell["choices"][int(np.argmax(weights[-1]))]
    for parameter in ("kernel_size", "downsample", "upsample"):
        mine = [c for c in searched if c["parameter"] == parameter]
        mean = np.mean([c["weights"][-1] for c in mine], axis=0)
        assert result.params[parameter] == mine[0]["choices"][int(np.argmax(mean))]
    again = search_architecture(SPACE, digits, epochs=2, seed=0)
    assert again.derived == result.derived
    np.testing.assert_allclose(again.cells[0]["weights"], result.cells[0]["weights"], rtol=1e-4)


def test_cells_that_disagree_give_the_parameter_of_their_mean_weights():
    cells = [
        {
            "name": "encoder_1",
            "parameter": "kernel_size",
            "choices": [3, 5],
            "weights": [[0.6, 0.4]],
        },
        {
            "name": "decoder_1",
            "parameter": "kernel_size",
            "choices": [3, 5],
            "weights": [[0.1, 0.9]],
        },
        {
            "name": "encoder_down_1",
            "parameter": "downsample",
            "choices": ["max-pool"],
            "weights": [[1]],
        },
    ]
    derived, params = derive(cells)
    assert derived == {"encoder_1": 3, "decoder_1": 5}
    assert params == {"kernel_size": 5}


def _stored(study: optuna.Study, params: dict, trial: int = 0) -> None:
    cells = [
        {
            "name": "encoder_1",
            "parameter": "kernel_size",
            "choices": [3, 5],
            "weights": [[0.5, 0.5], [0.2, 0.8]],
        }
    ]
    result = DartsResult(cells, {"encoder_1": 5}, params, [0.1], 1.0, True, trial)
    study.set_user_attr(DARTS_ATTR, result.to_dict())


def test_a_stored_result_is_read_not_searched_again_and_later_trials_keep_the_operations():
    space = SearchSpace.from_dict(
        {"kernel_size": [3, 5], "filters": [4, 8, 16], "latent_dim": [4, 8]}
    )

    def no_search():
        raise AssertionError("the stored result should be used")

    study = optuna.create_study(
        sampler=DartsSampler(space, (8, 8, 1), 1, seed=0, load_data=no_search)
    )
    _stored(study, {"kernel_size": 5})
    study.optimize(lambda t: space.suggest(t).filters * 0.01, n_trials=6)
    assert all(t.params["kernel_size"] == 5 for t in study.trials)
    # the first trial trains the derived architecture with the reference values
    assert study.trials[0].params["filters"] == 4 and study.trials[0].params["latent_dim"] == 4
    assert len({(t.params["filters"], t.params["latent_dim"]) for t in study.trials}) > 1


def test_the_sampler_searches_once_and_stores_the_result(digits):
    calls = []

    def load():
        calls.append(1)
        return digits

    space = SearchSpace.from_dict(
        {"kernel_size": [3, 5], "num_conv_layers": [1], "filters": [4], "latent_dim": [8]}
    )
    study = optuna.create_study(sampler=DartsSampler(space, (8, 8, 1), 1, seed=0, load_data=load))
    study.optimize(lambda t: space.suggest(t).latent_dim * 0.01, n_trials=2)
    restarted = DartsSampler(space, (8, 8, 1), 1, seed=0, load_data=load)
    assert (
        restarted.result(study).to_dict()
        == DartsSampler(space, (8, 8, 1), 1).result(study).to_dict()
    )
    assert len(calls) == 1
    frame = darts.darts_weights(study)
    assert set(frame.columns) == {"cell", "parameter", "choice", "epoch", "weight"}
    assert set(frame["cell"]) == {"encoder_1", "decoder_1"} and frame["epoch"].max() == 1
    derived = darts.derived_architecture(study)
    assert list(derived["cell"]) == ["encoder_1", "decoder_1"]
    assert study.trials[0].params["kernel_size"] == int(derived["trained"].iloc[0])


def test_a_space_with_no_operation_choices_is_refused_before_anything_trains(runs_dir):
    from automl_core.search.preflight import check_search
    from automl_core.storage.settings import SearchSettings

    space = SearchSpace.from_dict({"filters": [4, 8], "latent_dim": [4, 8]})
    with pytest.raises(ConfigError, match=r"no operation choices \(kernel_size=\[3\]"):
        DartsSampler(space, (8, 8, 1), 1).preflight()
    # block=strided overrides downsample and upsample, so their choices are no operations
    strided = SearchSpace.from_dict({"block": ["strided"], "downsample": ["max-pool", "avg-pool"]})
    with pytest.raises(ConfigError, match="give two or more values"):
        DartsSampler(strided, (8, 8, 1), 1).preflight()
    settings = SearchSettings(
        study="d", dataset="digits", space={"filters": [4, 8]}, strategy="darts"
    )
    with pytest.raises(ConfigError, match="darts searches operations"):
        check_search(settings, f"sqlite:///{runs_dir / 'studies.db'}")
    assert not (runs_dir / "studies.db").exists()


def test_a_super_network_too_large_for_memory_is_refused_with_its_size(runs_dir, monkeypatch):
    from automl_core.search.preflight import check_search
    from automl_core.storage.settings import SearchSettings

    monkeypatch.setenv("AUTOML_MAX_MODEL_PARAMETERS", "1000")
    size = supernet_parameters(SPACE, (8, 8, 1))
    with pytest.raises(ConfigError, match=f"{size:,} parameters .* more than the 1,000 allowed"):
        DartsSampler(SPACE, (8, 8, 1), 1).preflight()
    with pytest.raises(ConfigError, match="AUTOML_MAX_MODEL_PARAMETERS"):
        build_supernet(SPACE, (8, 8, 1))
    settings = SearchSettings(study="d", dataset="digits", space=SPACE.to_dict(), strategy="darts")
    with pytest.raises(ConfigError, match="super-network holds every candidate"):
        check_search(settings, f"sqlite:///{runs_dir / 'studies.db'}")


def test_epochs_must_be_positive(digits):
    with pytest.raises(ConfigError, match="epochs=0"):
        search_architecture(SPACE, digits, epochs=0)


def test_the_heatmap_has_a_row_per_cell_choice_and_a_column_per_epoch():
    from automl_core.analysis.charts import darts_weights_figure

    study = optuna.create_study()
    _stored(study, {"kernel_size": 5})
    figure = darts_weights_figure(darts.darts_weights(study))
    heatmap = figure.data[0]
    assert np.asarray(heatmap.z).shape == (2, 2)
    assert list(heatmap.y) == ["encoder_1: 3", "encoder_1: 5"]
    assert np.asarray(heatmap.z)[:, -1].tolist() == [0.2, 0.8]
    assert (
        "No architecture"
        in darts_weights_figure(darts.darts_weights(optuna.create_study())).layout.title.text
    )


@pytest.mark.slow
def test_the_derived_architecture_trains_as_a_normal_trial(tmp_path, search_in):
    from automl_core.storage import store
    from automl_core.storage.settings import SearchSettings
    from automl_core.storage.trials import read_trials

    home = tmp_path / "runs"
    settings = SearchSettings(
        study="nas",
        dataset="digits",
        space={
            "kernel_size": [3, 5],
            "downsample": ["max-pool", "avg-pool"],
            "num_conv_layers": [1],
            "filters": [4, 8],
            "latent_dim": [8],
            "batch_size": [32],
        },
        strategy="darts",
        trials=2,
        max_epochs=1,
        max_images=120,
    )
    search_in(home, settings)
    study = store.load_study("nas", f"sqlite:///{home / 'studies.db'}")
    result = darts.stored_result(study)
    assert result is not None and result.done and result.trial == 0
    records = read_trials(study)
    assert [r.state for r in records] == ["COMPLETE", "COMPLETE"]
    for record in records:
        assert record.config["kernel_size"] == result.params["kernel_size"]
        assert record.config["downsample"] == result.params["downsample"]
    assert records[0].has_model and records[0].config["filters"] == 4
    assert not darts.darts_weights(study).empty and len(darts.derived_architecture(study)) == 3


def test_a_worker_waits_for_a_search_in_progress_and_takes_over_a_stale_one(monkeypatch):
    import threading
    import time

    monkeypatch.setattr(darts, "WAIT_POLL_SECONDS", 0.05)
    space = SearchSpace.from_dict({"kernel_size": [3, 5]})
    study = optuna.create_study()
    running = DartsResult([], trial=0).to_dict()
    study.set_user_attr(DARTS_ATTR, {**running, "updated": time.time()})
    finisher = threading.Timer(0.3, lambda: _stored(study, {"kernel_size": 3}))
    finisher.start()

    def no_search():
        raise AssertionError("another worker is searching")

    waited = DartsSampler(space, (8, 8, 1), 1, load_data=no_search).result(study, 1)
    finisher.join()
    assert waited.done and waited.params == {"kernel_size": 3} and waited.trial == 0

    # the owner of a search that stopped writing long ago is presumed dead: search again
    study.set_user_attr(DARTS_ATTR, {**running, "updated": time.time() - darts.STALE_SECONDS - 1})

    class Searched(Exception):
        pass

    def load():
        raise Searched

    with pytest.raises(Searched):
        DartsSampler(space, (8, 8, 1), 1, load_data=load).result(study, 1)
    assert darts.stored_result(study) is None  # a failed search leaves no claim behind


@pytest.mark.slow
def test_the_super_network_learns_more_than_the_mean_image_with_many_candidates():
    # without a normalisation per candidate, eight mixed cells fade the signal until the
    # super-network predicts the mean image and its architecture weights learn nothing
    from automl_core.model.datasets import load_dataset

    space = SearchSpace.from_dict(
        {
            "kernel_size": [3, 5, 7],
            "downsample": ["max-pool", "avg-pool", "stride"],
            "upsample": ["resize", "transpose"],
            "num_conv_layers": [2],
            "filters": [8],
            "latent_dim": [16],
            "batch_size": [16],
        }
    )
    data = load_dataset("digits", seed=0, max_images=500)
    result = search_architecture(space, data, epochs=3, seed=0)
    mean_image_mse = float(np.mean((data.x_val - data.x_train.mean(axis=0)) ** 2))
    assert result.val_mse[-1] < mean_image_mse
    assert result.val_mse[-1] < result.val_mse[0]


def test_the_search_keeps_to_its_share_of_the_time_budget(digits):
    import time

    assert darts._search_deadline(None) is None
    now = time.time()
    share = darts._search_deadline(now + 100.0) - now
    assert 100 * darts.SEARCH_SHARE_OF_TIME - 1 <= share <= 100 * darts.SEARCH_SHARE_OF_TIME + 1
    assert darts._search_deadline(now - 5.0) <= time.time()
    # past its deadline no epoch starts: each cell keeps its first candidate
    result = search_architecture(SPACE, digits, epochs=3, seed=0, deadline=time.time() - 1)
    assert result.done and result.val_mse == []
    assert all(len(c["weights"]) == 1 for c in result.cells)
    assert result.params == {
        "kernel_size": 3,
        "downsample": "max-pool",
        "upsample": "resize",
        "block": "pool",
    }


PAIR_SPACE = SearchSpace.from_dict(
    {
        "kernel_size": [3, 5],
        "convolution": ["standard", "dilated", "separable"],
        "downsample": ["max-pool"],
        "num_conv_layers": [1],
        "filters": [4],
        "latent_dim": [8],
        "batch_size": [16],
    }
)


def test_convolution_cells_mix_every_kernel_and_kind_pair():
    cells = darts.supernet_cells(PAIR_SPACE)
    encoder = next(c for c in cells if c.name == "encoder_1")
    assert encoder.parameter == darts.PAIR_PARAMETER and len(encoder.choices) == 6
    assert "5x5 separable" in encoder.choices
    model, mixed = build_supernet(PAIR_SPACE, (8, 8, 1))
    assert supernet_parameters(PAIR_SPACE, (8, 8, 1)) == model.count_params()
    images = np.random.default_rng(0).random((2, 8, 8, 1)).astype("float32")
    layer = mixed["encoder_1"]
    for index in range(len(layer.candidates)):
        strong = np.zeros(len(layer.candidates), dtype="float32")
        strong[index] = 30.0
        layer.alpha.assign(strong)
        assert np.asarray(model(images)).shape == images.shape


def test_pairs_derive_each_parameter_from_its_summed_weights():
    labels = [darts.pair_label(k, c) for k in (3, 5) for c in ("standard", "separable")]
    # the single strongest pair is 3x3 standard, but 5x5 candidates weigh more in sum,
    # and separable more than standard
    weights = [0.4, 0.0, 0.3, 0.3]
    cells = [
        {"name": "encoder_1", "parameter": darts.PAIR_PARAMETER, "choices": labels,
         "weights": [weights]},
    ]  # fmt: skip
    derived, params = derive(cells)
    assert derived == {"encoder_1": "3x3 standard"}
    assert params["kernel_size"] == 5  # 0.6 against 0.4
    assert params["convolution"] == "standard"  # 0.7 against 0.3


def test_a_space_offering_only_kinds_of_convolution_is_searchable():
    space = SearchSpace.from_dict({"convolution": ["standard", "separable"], "filters": [4]})
    assert darts.operation_choices(space)["convolution"] == ("standard", "separable")
