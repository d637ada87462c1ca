"""Training throughput: our training loop against a plain ``model.fit`` on the same model.

Both train the same autoencoder (2 conv layers, 16 filters, latent 32: ~60k parameters on
28x28 images) on the 4,000 training images of ``mnist-5k``, batch 64, for the same epochs.
Images/second is measured per epoch after the first (which includes graph tracing), and the
two runs alternate, so both see the same machine load. Prints one table with the ratio.

    python bench/train_throughput.py [--epochs 6] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras  # noqa: E402

from automl_core.datasets import load_dataset  # noqa: E402
from automl_core.models import build_autoencoder  # noqa: E402
from automl_core.space import ModelConfig  # noqa: E402
from automl_core.training import train_autoencoder  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    """Records the wall-clock seconds of every epoch."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def plain_fit(config, data, epochs):
    """The baseline: default compile and fit, validation data as ours has."""
    keras.utils.set_random_seed(0)
    models = build_autoencoder(config, data.input_shape)
    models.autoencoder.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="mse")
    timer = EpochTimer()
    start = time.perf_counter()
    models.autoencoder.fit(
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
    return timer.seconds, total


def ours(config, data, epochs):
    """Our loop: ``train_autoencoder`` with early stopping, scoring and reporting callbacks."""
    timer = EpochTimer()
    start = time.perf_counter()
    train_autoencoder(config, data, max_epochs=epochs, seed=0, callbacks=[timer])
    total = time.perf_counter() - start
    keras.backend.clear_session()
    return timer.seconds, total


def main() -> None:
    """Runs both loops alternately and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    data = load_dataset("mnist-5k", val_fraction=0.1, test_fraction=0.1)
    config = ModelConfig(num_conv_layers=2, filters=16, latent_dim=32, batch_size=64)
    params = build_autoencoder(config, data.input_shape).autoencoder.count_params()
    keras.backend.clear_session()
    results = {"plain model.fit": [], "automl_core train_autoencoder": []}
    totals = {name: [] for name in results}
    for _ in range(args.repeats):
        for name, run in (("plain model.fit", plain_fit), ("automl_core train_autoencoder", ours)):
            seconds, total = run(config, data, args.epochs)
            results[name].extend(len(data.x_train) / s for s in seconds[1:])
            totals[name].append(total)
    base = statistics.median(results["plain model.fit"])
    print(
        f"model: {params:,} parameters, {len(data.x_train)} training images 28x28, batch 64, "
        f"{args.epochs} epochs x {args.repeats} repeats, {os.cpu_count()} CPUs"
    )
    print(f"{'loop':32s} {'images/s (median)':>18s} {'ratio':>7s} {'whole run s':>12s}")
    for name, rates in results.items():
        rate = statistics.median(rates)
        print(
            f"{name:32s} {rate:18,.0f} {rate / base:7.2f} {statistics.median(totals[name]):12.1f}"
        )


if __name__ == "__main__":
    main()
