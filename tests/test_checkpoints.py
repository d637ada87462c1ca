"""Checkpoints inside a trial: a killed training continues from its last whole epoch."""

from __future__ import annotations

import os
import signal

import keras
import numpy as np
import optuna
import pytest

from automl_core.model.checkpoints import EpochCheckpoint, FitState
from automl_core.search import runner as search
from automl_core.storage import store
from automl_core.storage.settings import SearchSettings
from automl_core.storage.trials import RESUMED_AT_ATTR, RETRY_ATTR

IDENTITY = {"config": {"filters": 4}, "precision": "float32"}


def _state(epochs=2) -> FitState:
    weights = [np.ones((2, 3), np.float32), np.zeros(3, np.float32)]
    return FitState(
        epochs=epochs,
        weights=weights,
        optimizer=[np.array(7, np.int64), np.full((2, 3), 0.5, np.float32)],
        best_weights=[w + 1 for w in weights],
        best_index=1,
        history={"loss": [0.3, 0.2], "val_loss": [0.3, 0.2], "val_mse": [0.3, 0.2]},
    )


class TestEpochCheckpoint:
    def test_a_saved_state_reads_back_whole(self, tmp_path):
        EpochCheckpoint(tmp_path / "a.npz", IDENTITY).save(_state())
        reader = EpochCheckpoint(tmp_path / "b.npz", IDENTITY, resume_from=tmp_path / "a.npz")
        state = reader.load()
        assert reader.resumed_at_epoch == 2 and state.best_index == 1
        assert state.history["val_mse"] == [0.3, 0.2]
        for got, want in zip(state.optimizer, _state().optimizer, strict=True):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(state.best_weights[0], np.full((2, 3), 2.0))

    def test_another_configuration_or_a_damaged_file_is_not_resumed(self, tmp_path):
        EpochCheckpoint(tmp_path / "a.npz", IDENTITY).save(_state())
        other = {**IDENTITY, "precision": "mixed_bfloat16"}
        assert EpochCheckpoint(tmp_path / "b.npz", other, tmp_path / "a.npz").load() is None
        (tmp_path / "a.npz").write_bytes(b"not a checkpoint")
        assert EpochCheckpoint(tmp_path / "b.npz", IDENTITY, tmp_path / "a.npz").load() is None
        assert EpochCheckpoint(tmp_path / "b.npz", IDENTITY, tmp_path / "gone.npz").load() is None

    def test_writes_are_atomic_and_replace_the_resumed_file(self, tmp_path):
        first = EpochCheckpoint(tmp_path / "a.npz", IDENTITY)
        first.save(_state(1))
        retry = EpochCheckpoint(tmp_path / "b.npz", IDENTITY, resume_from=tmp_path / "a.npz")
        retry.load()
        retry.save(_state(3))
        assert sorted(p.name for p in tmp_path.iterdir()) == ["b.npz"]  # no partial left
        retry.discard()
        assert list(tmp_path.iterdir()) == []

    def test_a_failed_write_keeps_the_previous_checkpoint(self, tmp_path, monkeypatch):
        checkpoint = EpochCheckpoint(tmp_path / "a.npz", IDENTITY)
        checkpoint.save(_state(1))

        def full_disk(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(np, "savez", full_disk)
        checkpoint.save(_state(2))
        monkeypatch.undo()
        reader = EpochCheckpoint(tmp_path / "b.npz", IDENTITY, tmp_path / "a.npz")
        assert reader.load().epochs == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]


class _StopAt(keras.callbacks.Callback):
    def __init__(self, epochs: float):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if logs["epochs"] >= self.epochs:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_an_interrupted_training_continues_from_its_last_epoch(tmp_path):
    from automl_core.model.datasets import load_dataset
    from automl_core.model.space import ModelConfig
    from automl_core.model.training import train_autoencoder

    data = load_dataset("digits", max_images=120)
    config = ModelConfig(num_conv_layers=1, filters=4, latent_dim=8, batch_size=32)
    first = EpochCheckpoint(tmp_path / "t0.npz", IDENTITY)
    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(config, data, 5, callbacks=[_StopAt(2)], checkpoint=first)
    retry = EpochCheckpoint(tmp_path / "t1.npz", IDENTITY, resume_from=tmp_path / "t0.npz")
    seen = []

    class Epochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(logs["epochs"])

    trained = train_autoencoder(config, data, 5, callbacks=[Epochs()], checkpoint=retry)
    assert retry.resumed_at_epoch == 2
    assert seen == [3.0, 4.0, 5.0]  # only the epochs the interruption cost
    assert trained.history["epochs"] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert trained.metrics.epochs == 5
    assert not (tmp_path / "t0.npz").exists()  # superseded by the retry's own


@pytest.mark.slow
def test_a_trial_killed_mid_training_is_retried_from_its_checkpoint(runs_dir, monkeypatch):
    settings = SearchSettings(
        study="ckpt",
        dataset="digits",
        space={"num_conv_layers": [1], "filters": [4], "latent_dim": [8], "batch_size": [32]},
        strategy="random",
        trials=1,
        max_epochs=4,
        max_images=120,
    )
    search.prepare_study(settings)
    real = search.trial_reporter

    def interrupting_reporter(trial, *args, **kwargs):
        reporter = real(trial, *args, **kwargs)
        if trial.user_attrs.get(RETRY_ATTR) is None:
            original = reporter.on_epoch_end

            def on_epoch_end(epoch, logs=None):
                original(epoch, logs)
                if logs["epochs"] >= 2:
                    os.kill(os.getpid(), signal.SIGINT)

            reporter.on_epoch_end = on_epoch_end
        return reporter

    monkeypatch.setattr(search, "trial_reporter", interrupting_reporter)
    with pytest.raises(KeyboardInterrupt):
        search.run_worker("ckpt")
    search.run_worker("ckpt")
    trials = store.load_study("ckpt").get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    retried = trials[1]
    assert retried.user_attrs[RETRY_ATTR] == 0
    assert retried.user_attrs[RESUMED_AT_ATTR] == 2
    assert retried.user_attrs["metrics"]["epochs"] == 4
    folder = store.artifact_root() / store.study_artifact_folder(store.load_study("ckpt"))
    assert list((folder / "checkpoints").glob("*.npz")) == []  # done: nothing left behind
    assert optuna.trial.TrialState.COMPLETE == retried.state
