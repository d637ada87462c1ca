"""Mixed precision: the run setting, the probe's choice, training under mixed policies, records."""

from __future__ import annotations

import json
import math

import numpy as np
import optuna
import pytest

from automl_core.errors import ConfigError
from automl_core.model import precision, precision_probe
from automl_core.model.precision import PrecisionChoice, ProbeResult, choose_policy
from automl_core.storage.settings import SearchSettings, settings_conflict


def _probe(device="cpu", **speeds) -> ProbeResult:
    return ProbeResult(
        machine=precision.machine_fingerprint(),
        device=device,
        images_per_second=speeds,
        seconds=1.0,
    )


class TestChoice:
    def test_a_clearly_faster_mixed_policy_is_chosen(self):
        policy, reason = choose_policy(_probe(float32=250.0, mixed_bfloat16=1250.0))
        assert policy == "mixed_bfloat16" and "5.00x" in reason

    def test_a_mixed_policy_under_the_threshold_is_not_chosen(self):
        policy, reason = choose_policy(_probe(float32=1000.0, mixed_bfloat16=1200.0))
        assert policy == "float32" and "1.20x" in reason and "1.3x" in reason

    def test_a_cpu_without_bfloat16_units_stays_float32(self):
        # emulated bfloat16 is slower than float32
        policy, _ = choose_policy(_probe(float32=2300.0, mixed_bfloat16=1500.0))
        assert policy == "float32"

    def test_on_a_gpu_the_fastest_mixed_policy_wins(self):
        probe = _probe(
            "NVIDIA H200", float32=10_000.0, mixed_float16=26_000.0, mixed_bfloat16=24_000.0
        )
        assert choose_policy(probe)[0] == "mixed_float16"
        probe = _probe(
            "NVIDIA H200", float32=10_000.0, mixed_float16=21_000.0, mixed_bfloat16=24_000.0
        )
        assert choose_policy(probe)[0] == "mixed_bfloat16"

    def test_policies_that_failed_or_no_float32_figure_keep_float32(self):
        assert choose_policy(_probe(float32=1000.0))[0] == "float32"
        assert choose_policy(_probe(mixed_bfloat16=1000.0))[0] == "float32"

    def test_the_threshold_is_inclusive(self):
        assert choose_policy(_probe(float32=100.0, mixed_bfloat16=130.0))[0] == "mixed_bfloat16"

    def test_choice_round_trips_and_reads_as_one_line(self):
        choice = PrecisionChoice("auto", "mixed_bfloat16", "fast", _probe(float32=1.0))
        assert PrecisionChoice.from_dict(json.loads(json.dumps(choice.to_dict()))) == choice
        assert "\n" not in choice.summary() and "float32 1 img/s" in choice.summary()


class TestSetting:
    def test_default_is_auto_or_the_environment(self, monkeypatch):
        monkeypatch.delenv("AUTOML_PRECISION", raising=False)
        assert SearchSettings(study="s").precision == "auto"
        monkeypatch.setenv("AUTOML_PRECISION", "bfloat16")
        assert SearchSettings(study="s").precision == "bfloat16"

    @pytest.mark.parametrize("value", ["bf16", "FLOAT32", "", "x" * 500])
    def test_an_unknown_value_is_refused_with_the_valid_ones(self, value):
        with pytest.raises(ConfigError, match="unknown precision .*auto, float32, bfloat16"):
            SearchSettings(study="s", precision=value)

    def test_an_unknown_environment_value_is_refused(self, monkeypatch):
        monkeypatch.setenv("AUTOML_PRECISION", "half")
        with pytest.raises(ConfigError, match="unknown precision 'half'"):
            SearchSettings(study="s")

    def test_round_trip_and_a_resume_may_change_it(self):
        settings = SearchSettings(study="s", precision="bfloat16")
        assert SearchSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
        stored = SearchSettings(study="s", precision="float32").to_dict()
        assert settings_conflict(settings, stored) is None

    def test_a_study_stored_before_the_setting_resumes(self):
        stored = SearchSettings(study="s").to_dict()
        del stored["precision"]
        assert settings_conflict(SearchSettings(study="s", precision="auto"), stored) is None


class TestResolve:
    def test_explicit_settings_need_no_probe(self, tmp_path):
        def never(home):
            raise AssertionError("no probe for an explicit setting")

        assert precision_probe.resolve_precision("float32", tmp_path, never).policy == "float32"
        choice = precision_probe.resolve_precision("bfloat16", tmp_path, never)
        assert choice.policy == "mixed_bfloat16" and choice.probe is None

    def test_float16_without_a_gpu_is_refused(self, tmp_path, monkeypatch):
        monkeypatch.setattr(precision, "gpu_names", lambda: [])
        with pytest.raises(ConfigError, match="float16 needs a GPU"):
            precision_probe.resolve_precision("float16", tmp_path)

    def test_float16_with_a_gpu(self, tmp_path, monkeypatch):
        monkeypatch.setattr(precision, "gpu_names", lambda: ["NVIDIA H200"])
        assert precision_probe.resolve_precision("float16", tmp_path).policy == "mixed_float16"

    def test_auto_probes_once_and_then_reads_the_cache(self, tmp_path):
        calls = []

        def probe(home):
            calls.append(home)
            result = _probe(float32=100.0, mixed_bfloat16=400.0)
            path = precision_probe.probe_cache_path(home, result.machine)
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps(result.to_dict()))
            return result

        first = precision_probe.resolve_precision("auto", tmp_path, probe)
        second = precision_probe.resolve_precision("auto", tmp_path, probe)
        assert first.policy == second.policy == "mixed_bfloat16" and len(calls) == 1
        assert second.probe.images_per_second == {"float32": 100.0, "mixed_bfloat16": 400.0}

    def test_a_failed_probe_keeps_float32_and_says_so(self, tmp_path):
        choice = precision_probe.resolve_precision("auto", tmp_path, lambda home: None)
        assert choice.policy == "float32" and "could not run" in choice.reason

    def test_another_machines_or_a_damaged_cache_is_not_used(self, tmp_path):
        result = _probe(float32=1.0, mixed_bfloat16=9.0)
        path = precision_probe.probe_cache_path(tmp_path, result.machine)
        path.parent.mkdir(parents=True)
        other = {**result.to_dict(), "machine": {**result.machine, "host": "elsewhere"}}
        path.write_text(json.dumps(other))
        assert precision_probe.cached_probe(tmp_path) is None
        path.write_text("{not json")
        assert precision_probe.cached_probe(tmp_path) is None
        path.write_text(json.dumps(result.to_dict()))
        assert precision_probe.cached_probe(tmp_path) == result

    def test_a_cache_file_at_the_size_limit_is_read_and_above_it_ignored(self, tmp_path):
        result = _probe(float32=1.0, mixed_bfloat16=9.0)
        path = precision_probe.probe_cache_path(tmp_path, result.machine)
        path.parent.mkdir(parents=True)
        text = json.dumps(result.to_dict())
        limit = precision_probe.MAX_PROBE_FILE_BYTES
        path.write_text(text + " " * (limit - len(text)))
        assert precision_probe.cached_probe(tmp_path) == result
        path.write_text(text + " " * (limit + 1 - len(text)))
        assert precision_probe.cached_probe(tmp_path) is None

    def test_the_fingerprint_names_the_machine_and_the_libraries(self):
        fingerprint = precision.machine_fingerprint()
        assert {"host", "cpu", "cpu_bfloat16_flags", "gpus", "tensorflow", "keras"} <= set(
            fingerprint
        )
        assert precision.fingerprint_key(fingerprint) == precision.fingerprint_key(
            dict(fingerprint)
        )


@pytest.mark.slow
def test_the_probe_measures_float32_and_bfloat16_and_caches(tmp_path, monkeypatch):
    monkeypatch.setattr(precision_probe, "PROBE_IMAGES", 128)
    result = precision_probe.measure_policies(images=128, epochs=2, rounds=1)
    assert set(result.images_per_second) | set(result.errors) == {"float32", "mixed_bfloat16"}
    assert all(speed > 0 for speed in result.images_per_second.values())
    assert result.device == "cpu" and result.machine == precision.machine_fingerprint()


def _tiny_data():
    from automl_core.model.datasets import load_dataset

    return load_dataset("digits", max_images=120)


def _config(**options):
    from automl_core.model.space import ModelConfig

    return ModelConfig(**{"num_conv_layers": 1, "filters": 4, "latent_dim": 8, **options})


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        {"objective": "plain", "loss": "mse"},
        {"objective": "plain", "loss": "bce"},
        {"objective": "plain", "loss": "l1"},
        {"objective": "plain", "loss": "mse_ssim", "augment": True},
        {"objective": "denoising", "noise": 0.2, "noise_type": "masking"},
        {"objective": "variational"},
        {"objective": "sparse", "bottleneck": "conv", "latent_dim": 16},
        {"batch_norm": True, "residual": True, "attention": True, "num_conv_layers": 2},
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)
def test_every_objective_and_loss_trains_under_bfloat16(options):
    from automl_core.model.training import train_autoencoder

    trained = train_autoencoder(_config(**options), _tiny_data(), 1, precision="mixed_bfloat16")
    assert trained.precision == "mixed_bfloat16" and not trained.precision_fallback
    assert math.isfinite(trained.metrics.val_mse) and math.isfinite(trained.history["loss"][0])
    # what is scored and saved is a float32 model
    assert trained.models.autoencoder.dtype_policy.name == "float32"


@pytest.mark.slow
def test_a_bfloat16_trial_saves_a_float32_model_that_reconstructs_and_exports(tmp_path):
    import keras

    from automl_core.analysis import export
    from automl_core.model.training import reconstruct, train_autoencoder
    from automl_core.storage import store

    data = _tiny_data()
    trained = train_autoencoder(_config(), data, 2, precision="mixed_bfloat16")
    relative = store.save_trial_artifacts(
        tmp_path,
        "study",
        0,
        trained.models.autoencoder,
        trained.history,
        trained.metrics.to_dict(),
        trained.config.to_dict(),
        trained.preview,
    )
    files = list((tmp_path / relative).glob("*.keras"))
    assert files
    loaded = keras.models.load_model(files[0], safe_mode=True)
    policies = {
        layer.dtype_policy.name
        for part in ("encoder", "decoder")
        for layer in loaded.get_layer(part).layers
    }
    assert policies == {"float32"}
    rebuilt = reconstruct(loaded, data.x_test)
    assert rebuilt.dtype == np.float32
    np.testing.assert_allclose(rebuilt, reconstruct(trained.models.autoencoder, data.x_test))
    mse = float(np.mean((rebuilt - data.x_test) ** 2))
    assert mse == pytest.approx(trained.metrics.test_mse, rel=1e-4)
    for part in ("encoder", "decoder"):
        flatbuffer, check = export.convert_and_check(loaded.get_layer(part), part)
        assert flatbuffer and check.max_abs_diff <= check.tolerance


@pytest.mark.slow
def test_bfloat16_and_float32_reach_the_same_error():
    from automl_core.model.training import train_autoencoder

    data = _tiny_data()
    errors = {
        policy: train_autoencoder(_config(), data, 3, precision=policy).metrics.val_mse
        for policy in ("float32", "mixed_bfloat16")
    }
    assert errors["mixed_bfloat16"] == pytest.approx(errors["float32"], rel=0.05)


@pytest.mark.slow
def test_a_non_finite_mixed_loss_is_retried_in_float32(monkeypatch):
    import keras

    from automl_core.model import fit_loop, training

    real = fit_loop.fit_autoencoder
    policies = []

    def diverging_in_mixed(model, *args, **kwargs):
        policies.append(keras.config.dtype_policy().name)
        if model.dtype_policy.name != "float32":
            raise fit_loop.Diverged("diverged: loss became nan at epoch 0.33")
        return real(model, *args, **kwargs)

    monkeypatch.setattr(training, "fit_autoencoder", diverging_in_mixed)  # the name training calls
    trained = training.train_autoencoder(_config(), _tiny_data(), 1, precision="mixed_bfloat16")
    assert policies == ["mixed_bfloat16", "float32"]
    assert trained.precision == "float32"
    assert "mixed_bfloat16" in trained.precision_fallback
    assert "retried in float32" in trained.precision_fallback


@pytest.mark.slow
def test_a_loss_that_diverges_in_float32_too_fails_the_trial(monkeypatch):
    from automl_core.errors import TrialFailure
    from automl_core.model import fit_loop, training

    def always(*args, **kwargs):
        raise fit_loop.Diverged("diverged: loss became inf at epoch 1.00")

    monkeypatch.setattr(training, "fit_autoencoder", always)  # the name training calls
    with pytest.raises(TrialFailure, match="also after mixed_bfloat16"):
        training.train_autoencoder(_config(), _tiny_data(), 1, precision="mixed_bfloat16")


@pytest.mark.slow
def test_darts_trains_its_super_network_under_bfloat16():
    from automl_core.model.space import SearchSpace
    from automl_core.search.darts import search_architecture

    space = SearchSpace.from_dict(
        {"num_conv_layers": [1], "filters": [4], "latent_dim": [8], "kernel_size": [3, 5]}
    )
    result = search_architecture(space, _tiny_data(), 1, precision="mixed_bfloat16")
    assert result.done and all(math.isfinite(v) for v in result.val_mse)


def _frozen(number: int, policy: str | None, seconds: float) -> optuna.trial.FrozenTrial:
    attrs = {"cost": {"first_report_seconds": seconds, "first_report_epochs": 1.0}}
    if policy is not None:
        attrs["precision"] = policy
    return optuna.trial.create_trial(params={}, distributions={}, value=0.1, user_attrs=attrs)


def test_the_cost_model_learns_from_timings_of_its_own_precision():
    from automl_core.search.samplers import same_precision

    old = _frozen(0, None, 8.0)  # stored before precision was recorded: float32
    fast = _frozen(1, "mixed_bfloat16", 2.0)
    slow = _frozen(2, "float32", 8.0)
    assert same_precision([old, fast, slow], "mixed_bfloat16") == [fast]
    assert same_precision([old, fast, slow], "float32") == [old, slow]
    # none timed under the policy yet: every timing is better than the prior
    assert same_precision([old, slow], "mixed_bfloat16") == [old, slow]


def test_the_leaderboard_shows_each_trials_precision():
    from automl_core.storage.results import records_frame
    from automl_core.storage.trials import TrialRecord

    records = [
        TrialRecord(0, "COMPLETE", artifact_dir="a", precision="mixed_bfloat16"),
        TrialRecord(1, "COMPLETE", artifact_dir="b"),  # before precision was recorded
        TrialRecord(2, "FAIL", fail_reason="impossible"),
        TrialRecord(
            3, "COMPLETE", artifact_dir="c", precision="float32", precision_fallback="why"
        ),
    ]
    frame = records_frame("s", records).set_index("trial")
    assert frame.loc[0, "precision"] == "mixed_bfloat16"
    assert frame.loc[1, "precision"] == "float32"
    assert frame.loc[2, "precision"] == ""
    assert frame.loc[3, "note"] == "why"


@pytest.mark.slow
def test_cli_search_trains_in_the_given_precision_and_says_so(runs_dir, capsys):
    from automl_core.cli import main
    from automl_core.storage import store

    common = ["search", "--dataset", "digits", "--max-images", "120", "--max-epochs", "1"]
    common += ["--strategy", "grid", "--num-conv-layers", "1", "--filters", "4"]
    common += ["--latent-dim", "4", "--batch-size", "32", "--activation", "relu"]
    assert main([*common, "--study", "bf", "--precision", "bfloat16"]) == 0
    out = capsys.readouterr().out
    assert "Precision bfloat16: training in mixed_bfloat16" in out.splitlines()[1]
    assert "[mixed_bfloat16]" in out
    study = store.load_study("bf", store.default_storage_url())
    (trial,) = study.trials
    assert trial.user_attrs["precision"] == "mixed_bfloat16"
    assert study.user_attrs["precision"]["policy"] == "mixed_bfloat16"

    assert main([*common, "--study", "f32", "--precision", "float32"]) == 0
    (trial,) = store.load_study("f32", store.default_storage_url()).trials
    assert trial.user_attrs["precision"] == "float32"


def test_cli_refuses_an_unknown_precision(runs_dir, capsys):
    from automl_core.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["search", "--precision", "half"])
    assert stop.value.code == 2
    assert "invalid choice: 'half'" in capsys.readouterr().err


def test_cli_refuses_float16_without_a_gpu(runs_dir, capsys, monkeypatch):
    from automl_core.cli import main

    monkeypatch.setattr(precision, "gpu_names", lambda: [])
    code = main(["search", "--dataset", "digits", "--study", "h", "--precision", "float16"])
    assert code == 2
    assert "float16 needs a GPU" in capsys.readouterr().err


def test_cli_precision_prints_the_cached_probe(runs_dir, capsys):
    from automl_core.cli import main

    result = _probe(float32=1000.0, mixed_bfloat16=1500.0)
    path = precision_probe.probe_cache_path(runs_dir, result.machine)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(result.to_dict()))
    assert main(["precision"]) == 0
    out = capsys.readouterr().out
    assert "training in mixed_bfloat16" in out and "1.50x float32" in out


class TestPages:
    def test_search_page_offers_precision_under_advanced(self, runs_dir):
        from streamlit.testing.v1 import AppTest

        from automl_core.model.precision import PRECISIONS
        from tests.test_app_pages import ROOT, TIMEOUT

        at = AppTest.from_file(str(ROOT / "pages/search.py"), default_timeout=TIMEOUT).run()
        box = at.selectbox(key="precision")
        assert not at.exception and list(box.options) == list(PRECISIONS)
        assert box.value == "float32"  # AUTOML_PRECISION of the tests
        box.set_value("bfloat16").run()
        assert not at.exception and not at.button(key="launch").disabled

    def test_the_launched_settings_carry_the_precision(self):
        settings = SearchSettings(study="s", precision="bfloat16")
        assert SearchSettings.from_json(settings.to_json()).precision == "bfloat16"

    def test_overview_shows_the_studys_precision_and_the_probe(self, runs_dir):
        from streamlit.testing.v1 import AppTest

        from automl_core.storage import store
        from automl_core.storage.settings import STUDY_PRECISION_ATTR
        from tests.test_app_pages import ROOT, TIMEOUT

        at = AppTest.from_file(str(ROOT / "pages/overview.py"), default_timeout=TIMEOUT).run()
        captions = " | ".join(c.value for c in at.caption)
        assert "Precision float32: training in float32" in captions
        study = store.load_study(at.selectbox(key="study").value, store.default_storage_url())
        choice = PrecisionChoice(
            "auto",
            "mixed_bfloat16",
            "mixed_bfloat16 trained 4.00x faster than float32",
            _probe(float32=250.0, mixed_bfloat16=1000.0),
        )
        study.set_user_attr(STUDY_PRECISION_ATTR, choice.to_dict())
        at.run()
        captions = " | ".join(c.value for c in at.caption)
        assert not at.exception
        assert "Precision auto: training in mixed_bfloat16" in captions
        assert "float32 250 img/s, mixed_bfloat16 1,000 img/s" in captions


@pytest.mark.slow
def test_the_probe_child_runs_from_any_folder(tmp_path, monkeypatch):
    """The launcher may run anywhere (a bench folder, a notebook's): the child finds the
    package all the same."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(precision_probe, "PROBE_TIMEOUT_SECONDS", 300)
    result = precision_probe.probe_in_child(tmp_path / "runs")
    assert result is not None and result.images_per_second.get("float32", 0) > 0
