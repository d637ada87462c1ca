"""The training loop of one trial: shuffled batches gathered in graph, whole segments per call.

Keras' ``model.fit`` pays, on the small models a CPU search trains, as much for its
machinery as for the arithmetic: tracing its train and test functions costs 1.5-2.5 s per
model, every epoch builds a new iterator, and validation goes through ``evaluate`` with its
own per-call overhead. This loop keeps what a trial needs and nothing else:

- one traced function that runs ``k`` optimizer steps in a single call (``k`` is a tensor,
  so the first third of an epoch and a whole epoch share one trace: the equivalent of
  ``steps_per_execution`` = steps per segment);
- batches drawn from a fresh permutation per pass and gathered from the images inside the
  traced step (no shuffle buffer copying the data set, no iterator thread);
- one traced forward pass for validation, giving the compiled loss and the MSE at once;
- Keras callbacks still called (``on_epoch_begin`` / ``on_epoch_end`` with ``logs``,
  ``model.stop_training``), so progress reporting and pruning stay Keras callbacks.

Its results are read at *report points*: the first epoch may be cut into equal parts (the
low fidelities of a multi-fidelity search: a third of the training images, two thirds, all),
then one report per epoch. The model is compiled by :func:`training.compile_autoencoder`:
the loop uses its optimizer (with any schedule) and its loss (``model.compute_loss``, which
adds the model's own losses such as a KL term).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np

from automl_core.model.checkpoints import EpochCheckpoint, FitState

VALIDATION_BATCH = 512


@dataclass
class FitResult:
    """What the loop measured.

    Attributes:
        history: Per report point: ``loss`` (training), ``val_loss`` (compiled loss on the
            validation images), ``val_mse``, ``val_psnr`` (the mean of each validation
            image's PSNR, as test PSNR is scored) and ``epochs`` (epochs done, a float).
        best_index: Index of the report point whose weights were kept.
        epochs_run: Epochs trained (a float: a stop in the first epoch leaves a fraction).
        setup_seconds: Seconds from the start of the loop to the first optimizer step's end
            (pipeline, tracing), measured once.
        epoch_seconds: Seconds of one epoch of training after tracing, measured.
        start_val_mse: Validation MSE of the untrained model, when it was scored
            (``keep_start``); NaN otherwise.
        start_val_psnr: Its mean validation PSNR; NaN when not scored.
        kept_start: Whether no report point beat the untrained model, so its weights
            were kept.
    """

    history: dict[str, list[float]] = field(default_factory=dict)
    best_index: int = 0
    epochs_run: float = 0.0
    setup_seconds: float = math.nan
    epoch_seconds: float = math.nan
    start_val_mse: float = math.nan
    start_val_psnr: float = math.nan
    kept_start: bool = False

    @property
    def val_mse(self) -> float:
        """Validation MSE of the kept weights."""
        if self.kept_start:
            return self.start_val_mse
        return self.history["val_mse"][self.best_index]


class Diverged(Exception):
    """The training loss became NaN or infinite."""


class BatchOrder:
    """Which images make each batch: a fresh permutation per pass, batches wrap around.

    Indices are drawn in NumPy and the images gathered inside the traced step, so no
    ``tf.data`` iterator (and its prefetch thread) lives on after the trial.

    Args:
        count: Training images.
        batch_size: Images per batch.
        seed: Seed of the permutations.
    """

    def __init__(self, count: int, batch_size: int, seed: int) -> None:
        self.count = count
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.pending = np.empty(0, dtype=np.int32)

    def next(self, steps: int) -> np.ndarray:
        """Indices of the next ``steps`` batches, shape (steps, batch_size)."""
        needed = steps * self.batch_size
        while len(self.pending) < needed:
            order = self.rng.permutation(self.count).astype(np.int32)
            self.pending = np.concatenate([self.pending, order])
        batch, self.pending = self.pending[:needed], self.pending[needed:]
        return batch.reshape(steps, self.batch_size)


def fit_autoencoder(
    model: keras.Model,
    x_train: np.ndarray,
    x_val: np.ndarray,
    batch_size: int,
    max_epochs: int,
    seed: int = 0,
    patience: int = 3,
    first_epoch_reports: int = 1,
    callbacks: list[keras.callbacks.Callback] | None = None,
    augment: Callable | None = None,
    checkpoint: EpochCheckpoint | None = None,
    keep_start: bool = False,
    select_by: str = "val_mse",
) -> FitResult:
    """Trains a compiled autoencoder on ``(x, x)`` with early stopping and best weights kept.

    Args:
        model: The compiled autoencoder.
        x_train: Training images.
        x_val: Validation images.
        batch_size: Images per optimizer step.
        max_epochs: Most epochs.
        seed: Seed of the shuffling. Defaults to 0.
        patience: Epochs without a better validation MSE before stopping. Defaults to 3.
        first_epoch_reports: Report points in the first epoch (1: once per epoch; 3: after
            a third, two thirds and all of the training images). Defaults to 1.
        callbacks: Keras callbacks, called at each report point; ``logs`` hold ``loss``,
            ``val_loss``, ``val_mse`` and ``epochs`` (epochs done, a float).
        augment: Optional batch transform, applied to input and target alike.
        checkpoint: Saves the state after every whole epoch, and offers the state of an
            interrupted training of the same configuration to continue from (its next
            epoch first). Defaults to None.
        keep_start: Also score the untrained model and keep its weights unless a report
            point beats it on ``select_by`` without a lower mean validation PSNR: a model
            that starts at a known error (a PCA path) never ends worse than it started,
            by the measure it is selected on nor by the one it is judged on. Defaults to
            False.
        select_by: What picks the kept weights and drives early stopping: ``val_mse``
            (lowest) or ``val_psnr`` (highest, for a model trained on PSNR). Defaults to
            ``val_mse``.

    Returns:
        The history and timings; the model holds the best weights.

    Raises:
        Diverged: The training loss became NaN or infinite.
    """
    import tensorflow as tf

    if select_by not in ("val_mse", "val_psnr"):
        raise ValueError(f"select_by must be val_mse or val_psnr, got {select_by!r}")
    started = time.perf_counter()
    steps_per_epoch = max(1, math.ceil(len(x_train) / batch_size))
    pixels = tf.constant(x_train)
    order = BatchOrder(len(x_train), batch_size, seed)
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    start_weights = model.get_weights() if keep_start else None
    resumed = _resume(model, optimizer, checkpoint)
    if resumed is not None:  # a fresh order: the interrupted run's batches are not replayed
        order = BatchOrder(len(x_train), batch_size, seed + resumed.epochs)

    @tf.function(input_signature=[tf.TensorSpec((None, batch_size), tf.int32)])
    def train_segment(batches):
        total = tf.constant(0.0, tf.float32)
        steps = tf.shape(batches)[0]
        for step in tf.range(steps):
            x, y = _pair(tf.gather(pixels, batches[step]), augment)
            with tf.GradientTape() as tape:
                reconstruction = model(x, training=True)
                loss = model.compute_loss(x=x, y=y, y_pred=reconstruction, training=True)
                scaled = optimizer.scale_loss(loss)
            gradients = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply(gradients, model.trainable_variables)
            total += tf.cast(loss, tf.float32)
        return total / tf.cast(steps, tf.float32)

    shape = (None, *x_val.shape[1:])

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)])
    def validate(x):
        reconstruction = model(x, training=False)
        loss = model.compute_loss(x=x, y=x, y_pred=reconstruction, training=False)
        # clipped as every score is (a no-op for a sigmoid output; a PCA path's is unbounded)
        clipped = tf.clip_by_value(tf.cast(reconstruction, tf.float32), 0.0, 1.0)
        per_image = tf.reduce_mean(tf.square(clipped - x), axis=[1, 2, 3])
        # each image's PSNR, capped at 100 dB as the reported scores are
        psnr = -10.0 * tf.math.log(tf.maximum(per_image, 1e-10)) / tf.math.log(10.0)
        count = tf.cast(tf.shape(x)[0], tf.float32)
        squared = tf.reduce_sum(per_image) * tf.cast(tf.reduce_prod(tf.shape(x)[1:]), tf.float32)
        return tf.cast(loss, tf.float32) * count, squared, tf.reduce_sum(psnr)

    def validation() -> tuple[float, float, float]:
        loss_sum = squared_sum = psnr_sum = 0.0
        for start in range(0, len(x_val), VALIDATION_BATCH):
            batch = x_val[start : start + VALIDATION_BATCH]
            loss, squared, psnr = validate(batch)
            loss_sum += float(loss)
            squared_sum += float(squared)
            psnr_sum += float(psnr)
        return loss_sum / len(x_val), squared_sum / x_val.size, psnr_sum / len(x_val)

    def score(val_mse: float, val_psnr: float) -> float:
        """Lower is better."""
        return val_mse if select_by == "val_mse" else -val_psnr

    # report points as step counts: the first epoch cut into parts, then whole epochs
    parts = max(1, min(first_epoch_reports, steps_per_epoch))
    points = [round(steps_per_epoch * (i + 1) / parts) for i in range(parts)]
    points += [steps_per_epoch * e for e in range(2, max_epochs + 1)]

    history: dict[str, list[float]] = {
        "loss": [],
        "val_loss": [],
        "val_mse": [],
        "val_psnr": [],
        "epochs": [],
    }
    if resumed is not None:
        history = {key: list(resumed.history.get(key, [])) for key in history}
    result = FitResult(history)
    callback_list = keras.callbacks.CallbackList(
        callbacks or [], add_history=False, add_progbar=False, model=model
    )
    model.stop_training = False
    best = math.inf
    best_weights = None
    done = 0
    if resumed is not None:
        done = resumed.epochs * steps_per_epoch
        result.best_index = resumed.best_index
        if len(history["val_psnr"]) != len(history["val_mse"]):  # saved before val_psnr
            history["val_psnr"] = [math.nan] * len(history["val_mse"])
        best = score(
            history["val_mse"][resumed.best_index], history["val_psnr"][resumed.best_index]
        )
        best_weights = resumed.best_weights
        result.epochs_run = float(resumed.epochs)
    timed_steps = 0
    timed_seconds = 0.0
    if start_weights is not None:
        # scored with the trained weights set aside: a resumed run starts from a checkpoint
        trained = model.get_weights()
        model.set_weights(start_weights)
        _, result.start_val_mse, result.start_val_psnr = validation()
        model.set_weights(trained)
        # a report point must beat the start to be kept (see keep_start)
        start_score = score(result.start_val_mse, result.start_val_psnr)
        if best_weights is not None and not (
            best < start_score
            and not history["val_psnr"][result.best_index] < result.start_val_psnr
        ):
            best_weights = None  # the interrupted run had not beaten the start either
        best = min(best, start_score)
    callback_list.on_train_begin()
    first = True
    for index, point in enumerate(points):
        if point <= done:
            continue  # trained before the interruption this run resumes
        callback_list.on_epoch_begin(index)
        steps = point - done
        segment_start = time.perf_counter()
        loss = float(train_segment(order.next(steps)))
        now = time.perf_counter()
        if first:
            first = False
            result.setup_seconds = now - started
        else:
            timed_steps += steps
            timed_seconds += now - segment_start
        done = point
        if not math.isfinite(loss):
            raise Diverged(f"diverged: loss became {loss} at epoch {done / steps_per_epoch:.2f}")
        val_loss, val_mse, val_psnr = validation()
        epochs = done / steps_per_epoch
        for key, value in (
            ("loss", loss),
            ("val_loss", val_loss),
            ("val_mse", val_mse),
            ("val_psnr", val_psnr),
            ("epochs", epochs),
        ):
            history[key].append(value)
        result.epochs_run = epochs
        # with keep_start, never below the start's PSNR either (what PCA is judged on)
        judged = not val_psnr < result.start_val_psnr
        if score(val_mse, val_psnr) < best and judged:
            best = score(val_mse, val_psnr)
            result.best_index = index
            best_weights = model.get_weights()
        if checkpoint is not None and point % steps_per_epoch == 0:
            checkpoint.save(
                FitState(
                    epochs=point // steps_per_epoch,
                    weights=model.get_weights(),
                    optimizer=[keras.ops.convert_to_numpy(v) for v in optimizer.variables],
                    best_weights=best_weights if best_weights is not None else [],
                    best_index=result.best_index,
                    history=history,
                )
            )
        logs = {
            "loss": loss,
            "val_loss": val_loss,
            "val_mse": val_mse,
            "val_psnr": val_psnr,
            "epochs": epochs,
        }
        callback_list.on_epoch_end(index, logs)
        if model.stop_training:
            break
        if epochs - history["epochs"][result.best_index] >= patience:
            break
    if timed_steps:
        result.epoch_seconds = timed_seconds / timed_steps * steps_per_epoch
    elif result.setup_seconds == result.setup_seconds:
        result.epoch_seconds = result.setup_seconds / max(done / steps_per_epoch, 1e-9)
    if start_weights is not None and best_weights is None:  # nothing beat the start
        result.kept_start = True
        model.set_weights(start_weights)
    elif best_weights is not None and result.best_index != len(history["loss"]) - 1:
        model.set_weights(best_weights)
    callback_list.on_train_end()
    return result


def _resume(model, optimizer, checkpoint: EpochCheckpoint | None) -> FitState | None:
    """Loads a checkpoint's weights and optimizer state into the model, or returns None when
    there is none that fits (its arrays must match the model's and optimizer's shapes)."""
    state = checkpoint.load() if checkpoint is not None else None
    if state is None or not state.history.get("val_mse"):
        return None
    weights = model.get_weights()
    variables = list(optimizer.variables)
    fits = (
        len(state.weights) == len(weights)
        and len(state.optimizer) == len(variables)
        and len(state.best_weights) in (0, len(weights))
        and all(a.shape == b.shape for a, b in zip(state.weights, weights, strict=True))
        and all(
            tuple(a.shape) == tuple(v.shape)
            for a, v in zip(state.optimizer, variables, strict=True)
        )
    )
    if not fits:
        checkpoint.resumed_at_epoch = None
        return None
    model.set_weights(state.weights)
    for variable, value in zip(variables, state.optimizer, strict=True):
        variable.assign(value)
    if not state.best_weights:
        state.best_weights = state.weights
    return state


def _pair(batch, augment: Callable | None):
    """``(x, y)`` of a batch: augmented alike (an augmenter may return one tensor or a pair)."""
    if augment is not None:
        batch = augment(batch)
    if isinstance(batch, tuple):
        return batch
    return batch, batch
