"""Training throughput: our training loop against a plain ``model.fit`` on the same model.

Both train the same autoencoder (2 conv layers, 16 filters, latent 32: ~60k parameters on
28x28 images) on the 4,000 training images of ``mnist-5k``, batch 64, for the same epochs.
Images/second is measured per epoch after the first (which includes graph tracing), and the
two runs alternate, so both see the same machine load. Prints one table with the ratio,
then our per-trial overhead, part by part: build, compile, first-call tracing, scoring the
test split, saving the artifacts (the matmul speed of the machine first). A third arm, the
same model's optimizer steps alone in one traced loop (no shuffling, validation or
callbacks), is the floor no loop can beat with TensorFlow's kernels: the best ratio any loop
could reach over ``model.fit`` on this machine is the floor's.

Two arms are about number formats: ``plain model.fit, bfloat16`` (Keras' ``mixed_bfloat16``
policy, output layer in float32) shows what the format gives on this CPU by itself, and
``ours, default precision`` trains as a search does by default: ``precision=auto``, resolved
by the probe (run once here, in a fresh runs folder, its seconds reported as overhead). Each
repeat uses its own seed, and the validation MSE after the same epochs is printed per arm.

    python bench/train_throughput.py [--epochs 6] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from machine import machine_speed  # noqa: E402  (bench/ is the script's folder)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras  # noqa: E402

from automl_core.model.datasets import load_dataset  # noqa: E402
from automl_core.model.fit_loop import fit_autoencoder  # noqa: E402
from automl_core.model.metrics import reconstruction_scores  # noqa: E402
from automl_core.model.models import build_autoencoder  # noqa: E402
from automl_core.model.precision import policy_scope  # noqa: E402
from automl_core.model.precision_probe import resolve_precision  # noqa: E402
from automl_core.model.space import ModelConfig  # noqa: E402
from automl_core.model.training import (  # noqa: E402
    compile_autoencoder,
    reconstruct,
    train_autoencoder,
)
from automl_core.storage import store  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    """Records the wall-clock seconds of every epoch."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def plain_fit(config, data, epochs, seed=0, policy="float32"):
    """The baseline: default compile and fit, validation data as ours has."""
    keras.utils.set_random_seed(seed)
    with policy_scope(policy):
        models = build_autoencoder(config, data.input_shape)
        models.autoencoder.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate), loss="mse"
        )
    timer = EpochTimer()
    start = time.perf_counter()
    history = models.autoencoder.fit(
        data.x_train,
        data.x_train,
        validation_data=(data.x_val, data.x_val),
        epochs=epochs,
        batch_size=config.batch_size,
        verbose=0,
        callbacks=[timer],
    )
    total = time.perf_counter() - start
    keras.backend.clear_session()
    return timer.seconds, total, history.history["val_loss"][-1]


def plain_fit_bfloat16(config, data, epochs, seed=0):
    """The baseline under Keras' ``mixed_bfloat16`` policy (output layer float32)."""
    return plain_fit(config, data, epochs, seed, "mixed_bfloat16")


def ours(config, data, epochs, seed=0, policy="float32"):
    """Our loop: ``train_autoencoder`` with early stopping, scoring and reporting callbacks."""
    timer = EpochTimer()
    start = time.perf_counter()
    trained = train_autoencoder(
        config, data, max_epochs=epochs, seed=seed, callbacks=[timer], precision=policy
    )
    total = time.perf_counter() - start
    keras.backend.clear_session()
    return timer.seconds, total, trained.metrics.val_mse


def bare_steps(config, data, epochs, seed=0):
    """The floor: the same model's optimizer steps alone, in one traced loop per epoch.

    No shuffling, no validation, no callbacks, no early stopping: what any training loop
    must spend on this model's arithmetic with TensorFlow's kernels on this machine. A loop
    can be faster than ``model.fit`` only by what ``model.fit`` spends above this.
    """
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    models = build_autoencoder(config, data.input_shape)
    compile_autoencoder(models, config)
    model = models.autoencoder
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    steps = len(data.x_train) // config.batch_size
    batches = tf.constant(
        data.x_train[: steps * config.batch_size].reshape(
            steps, config.batch_size, *data.input_shape
        )
    )

    @tf.function
    def epoch(batches):
        total = tf.constant(0.0)
        for step in tf.range(tf.shape(batches)[0]):
            x = batches[step]
            with tf.GradientTape() as tape:
                loss = model.compute_loss(x=x, y=x, y_pred=model(x, training=True))
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(gradients, model.trainable_variables)
            total += loss
        return total

    seconds = []
    start = time.perf_counter()
    for _ in range(epochs):
        begin = time.perf_counter()
        float(epoch(batches))
        seconds.append(
            (time.perf_counter() - begin) * len(data.x_train) / (steps * config.batch_size)
        )
    total = time.perf_counter() - start
    keras.backend.clear_session()
    return seconds, total, float("nan")


def overhead_parts(config, data) -> dict[str, float]:
    """Seconds of each fixed part of one trial of ours (one epoch of training between)."""
    parts = {}
    started = time.perf_counter()
    keras.utils.set_random_seed(0)
    models = build_autoencoder(config, data.input_shape)
    parts["build"] = time.perf_counter() - started
    started = time.perf_counter()
    compile_autoencoder(models, config)
    parts["compile"] = time.perf_counter() - started
    fitted = fit_autoencoder(models.autoencoder, data.x_train, data.x_val, 64, 1, 0, 3, 3)
    # the first report's segment holds the tracing; the rest of the epoch runs at full speed
    parts["tracing and first validation"] = fitted.setup_seconds - fitted.epoch_seconds / 3
    started = time.perf_counter()
    reconstruction_scores(data.x_test, reconstruct(models.autoencoder, data.x_test))
    parts["score (test PSNR / SSIM)"] = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        store.save_trial_artifacts(
            Path(root), "bench", 0, models.autoencoder, fitted.history, {}, {}
        )
        parts["save artifacts"] = time.perf_counter() - started
    keras.backend.clear_session()
    return parts


def main() -> None:
    """Runs both loops alternately and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--filters", type=int, default=16, help="filters of the first conv layer (16 or 32)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    probe_started = time.perf_counter()
    with tempfile.TemporaryDirectory() as home:
        choice = resolve_precision("auto", Path(home))
    probe_seconds = time.perf_counter() - probe_started
    data = load_dataset("mnist-5k", val_fraction=0.1, test_fraction=0.1)
    config = ModelConfig(
        num_conv_layers=2, filters=args.filters, latent_dim=32, batch_size=args.batch_size
    )
    params = build_autoencoder(config, data.input_shape).autoencoder.count_params()
    keras.backend.clear_session()
    arms = (
        ("plain model.fit", plain_fit),
        ("plain model.fit, bfloat16", plain_fit_bfloat16),
        ("ours, float32", ours),
        ("ours, bfloat16", lambda c, d, e, seed: ours(c, d, e, seed, "mixed_bfloat16")),
        (
            "ours, default precision",
            lambda c, d, e, seed: ours(c, d, e, seed, choice.policy),
        ),
        ("floor: bare optimizer steps", bare_steps),
    )
    results = {name: [] for name, _ in arms}
    totals = {name: [] for name in results}
    errors = {name: [] for name in results}
    for seed in range(args.repeats):
        for name, run in arms:
            seconds, total, val_mse = run(config, data, args.epochs, seed=seed)
            results[name].extend(len(data.x_train) / s for s in seconds[1:])
            totals[name].append(total)
            errors[name].append(val_mse)
    base = statistics.median(results["plain model.fit"])
    base_error = statistics.mean(errors["plain model.fit"])
    flags = ", ".join(choice.probe.machine["cpu_bfloat16_flags"]) if choice.probe else "?"
    print(
        f"machine: {machine_speed():.0f} GFLOP/s (2048x2048 float32 matmul), {os.cpu_count()} "
        f"CPUs, load average {os.getloadavg()[0]:.2f}, bfloat16 CPU flags: {flags or 'none'}"
    )
    print(f"default precision: {choice.summary()}")
    print(
        f"model: {params:,} parameters, {len(data.x_train)} training images 28x28, batch {config.batch_size}, "
        f"{args.epochs} epochs x {args.repeats} repeats (seeds 0..{args.repeats - 1})"
    )
    print(
        f"{'loop':32s} {'images/s (median)':>18s} {'ratio':>7s} {'whole run s':>12s} "
        f"{'val MSE (mean)':>15s} {'vs plain':>9s}"
    )
    for name, rates in results.items():
        rate = statistics.median(rates)
        error = statistics.mean(errors[name])
        relative = f"{error / base_error - 1:+8.1%}" if error == error else f"{'-':>8s}"
        shown = f"{error:15.5f}" if error == error else f"{'-':>15s}"
        print(
            f"{name:32s} {rate:18,.0f} {rate / base:7.2f} {statistics.median(totals[name]):12.1f}"
            f" {shown} {relative}"
        )
    print(
        f"\nprecision probe (once per machine, then cached): {probe_seconds:.1f} s; amortised "
        f"over a 20-trial search: {probe_seconds / 20:.2f} s per trial"
    )
    runs = [overhead_parts(config, data) for _ in range(args.repeats)]
    print("\nper-trial overhead of ours (median of repeats), seconds:")
    for part in runs[0]:
        print(f"  {part:30s} {statistics.median(r[part] for r in runs):6.3f}")
    fixed = [
        r["build"] + r["compile"] + r["score (test PSNR / SSIM)"] + r["save artifacts"]
        for r in runs
    ]
    print(f"  {'build + compile + score + save':30s} {statistics.median(fixed):6.3f}")
    total = [sum(r.values()) for r in runs]
    print(f"  {'all, tracing included':30s} {statistics.median(total):6.3f}")


if __name__ == "__main__":
    main()
