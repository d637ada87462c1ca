"""Peers: our default search against KerasTuner's RandomSearch and Hyperband, same budget.

Every arm searches the same space (1-3 conv layers, 8/16/32/64 filters, relu/elu/sigmoid/
tanh, latent 8/16/32/64, learning rate 1e-4..1e-2 log; batch 64, Adam, at most 20 epochs)
on the same arrays (``mnist-5k`` split 3,900 train / 1,000 validation / 100 test, seed 0),
builds its models with the same builder (:func:`automl_core.model.models.build_autoencoder`) and
is ranked by the same number: the best validation MSE it found. Each arm is its own Python
process and its wall-clock budget is counted from that process's start (imports, data
loading and start-up are the arm's own cost); arms run one after another, so they share
the machine's state as fairly as a shared machine allows. The machine's matmul speed is
printed first: machines of one kind differ 3x from day to day.

Ours trains at its default precision (``auto``): the machine's precision probe runs once
before the arms (its seconds are printed) and each of our arms finds it cached, as every
search after a machine's first does; KerasTuner keeps its default float32, as its users
would.

KerasTuner arms stop at the budget: a callback ends the running trial's fit at the first
epoch end past it (its best epoch so far counts), and no trial starts after it. Ours gets
the same budget as ``--timeout`` (minus its own start-up) and stops the same way.

    pip install -r bench/requirements.txt
    python bench/peers.py [--budgets 120,300] [--seeds 0,1,2] [--arms ours,random,hyperband]
        [--strategy tpe-cost-asha]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import machine_speed  # bench/ is the script's folder

ROOT = Path(__file__).resolve().parent.parent
SPACE = {
    "num_conv_layers": [1, 2, 3],
    "filters": [8, 16, 32, 64],
    "activation": ["relu", "elu", "sigmoid", "tanh"],
    "latent_dim": [8, 16, 32, 64],
    "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
}
SPLIT = {"val_fraction": 0.2, "test_fraction": 0.02}
MAX_EPOCHS = 20
TARGET_RATIO = 0.85

# one arm, run as `python bench/peers.py --child ARM BUDGET SEED STRATEGY HOME`
_CHILD_OURS = """
settings = SearchSettings(study="peers", dataset="mnist-5k", space=SPACE, strategy=strategy,
    timeout=max(1.0, budget - (time.time() - T0)), max_epochs=MAX_EPOCHS, seed=seed, **SPLIT)
study = run_search(settings)
records = read_trials(study)
done = [r for r in records if "val_mse" in r.metrics]
firsts = [r.finished_at - r.seconds + r.cost["first_report_seconds"] for r in records if r.cost]
epochs = sum(float(r.live.get("epochs", 0)) for r in records)
result = {"best": min(r.metrics["val_mse"] for r in done), "trials": len(records),
          "epochs": epochs, "first_epoch_s": min(firsts) - T0 if firsts else None}
"""


def child(arm: str, budget: float, seed: int, strategy: str, home: str) -> dict:
    """Runs one arm in this process (started fresh) and returns its figures."""
    t0 = float(os.environ["PEERS_T0"])
    os.environ["AUTOML_HOME"] = home
    sys.path.insert(0, str(ROOT))
    if arm == "ours":
        from automl_core.search.runner import run_search
        from automl_core.storage.settings import SearchSettings
        from automl_core.storage.trials import read_trials

        scope = {
            "T0": t0,
            "SPACE": SPACE,
            "SPLIT": SPLIT,
            "MAX_EPOCHS": MAX_EPOCHS,
            "strategy": strategy,
            "budget": budget,
            "seed": seed,
            "time": time,
            "SearchSettings": SearchSettings,
            "run_search": run_search,
            "read_trials": read_trials,
        }
        exec(_CHILD_OURS, scope)
        return scope["result"]
    return _keras_tuner_arm(arm, budget, seed, t0, home)


def _keras_tuner_arm(arm: str, budget: float, seed: int, t0: float, home: str) -> dict:
    """KerasTuner's RandomSearch or Hyperband on the same arrays, space and builder."""
    import keras
    import keras_tuner as kt

    from automl_core.model.datasets import load_dataset
    from automl_core.model.models import build_autoencoder
    from automl_core.model.space import ModelConfig

    data = load_dataset("mnist-5k", seed=0, **SPLIT)
    deadline = t0 + budget
    epoch_ends: list[float] = []

    def build(hp):
        config = ModelConfig(
            num_conv_layers=hp.Int("num_conv_layers", 1, 3),
            filters=hp.Choice("filters", SPACE["filters"]),
            activation=hp.Choice("activation", SPACE["activation"]),
            latent_dim=hp.Choice("latent_dim", SPACE["latent_dim"]),
            learning_rate=hp.Float("learning_rate", 1e-4, 1e-2, sampling="log"),
            batch_size=64,
        )
        model = build_autoencoder(config, data.input_shape).autoencoder
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="mse")
        return model

    class StopAtDeadline(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            epoch_ends.append(time.time())
            if time.time() >= deadline:
                self.model.stop_training = True

    class OutOfTime(Exception):
        pass

    class Deadline:
        def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
            pass  # no TensorBoard callback here; KerasTuner would import tensorboard anyway

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            if time.time() >= deadline:
                raise OutOfTime

    common = {
        "objective": "val_loss",
        "seed": seed,
        "directory": home,
        "project_name": arm,
        "overwrite": True,
    }
    if arm == "random":
        tuner = type("Random", (Deadline, kt.RandomSearch), {})(build, max_trials=10_000, **common)
        stopping = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=3)]
    else:
        tuner = type("Band", (Deadline, kt.Hyperband), {})(
            build, max_epochs=MAX_EPOCHS, factor=3, **common
        )
        stopping = []
    keras.utils.set_random_seed(seed)
    try:
        tuner.search(
            data.x_train,
            data.x_train,
            validation_data=(data.x_val, data.x_val),
            epochs=MAX_EPOCHS,
            batch_size=64,
            verbose=0,
            callbacks=[StopAtDeadline(), *stopping],
        )
    except OutOfTime:
        pass
    trials = list(tuner.oracle.trials.values())
    scores = [t.score for t in trials if t.score is not None]
    return {
        "best": min(scores),
        "trials": len(trials),
        "epochs": len(epoch_ends),
        "first_epoch_s": epoch_ends[0] - t0 if epoch_ends else None,
    }


def run_arm(arm: str, budget: float, seed: int, strategy: str, probe: Path | None = None) -> dict:
    """One arm in a fresh process; its budget starts with the process.

    ``probe``: a folder holding this machine's cached precision probe, copied into the arm's
    runs folder.
    """
    with tempfile.TemporaryDirectory(prefix=f"peers-{arm}-") as home:
        if probe is not None:
            shutil.copytree(probe, Path(home) / "precision")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PEERS_T0": repr(time.time())}
        command = [sys.executable, __file__, "--child", arm, str(budget), str(seed)]
        output = subprocess.run(
            [*command, strategy, home], env=env, capture_output=True, text=True, check=False
        )
        wall = time.time() - float(env["PEERS_T0"])
        lines = [line for line in output.stdout.splitlines() if line.startswith("RESULT ")]
        if not lines:
            raise RuntimeError(f"arm {arm} failed:\n{output.stderr[-3000:]}")
        return {**json.loads(lines[-1][len("RESULT ") :]), "wall": wall}


def main() -> None:
    """Runs every arm for every budget and seed and prints the tables."""
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        arm, budget, seed, strategy, home = sys.argv[2:7]
        print("RESULT " + json.dumps(child(arm, float(budget), int(seed), strategy, home)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="120,300")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--arms", default="ours,random,hyperband")
    parser.add_argument("--strategy", default=None, help="ours: defaults to DEFAULT_STRATEGY")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from automl_core.storage.settings import DEFAULT_STRATEGY

    strategy = args.strategy or DEFAULT_STRATEGY
    arms = args.arms.split(",")
    from automl_core.model.precision_probe import resolve_precision

    probe_home = Path(tempfile.mkdtemp(prefix="peers-probe-"))
    started = time.perf_counter()
    choice = resolve_precision("auto", probe_home)
    probe_seconds = time.perf_counter() - started
    print(
        f"machine: {machine_speed():.0f} GFLOP/s (2048x2048 float32 matmul), "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; ours = {strategy}",
        flush=True,
    )
    print(f"ours trains at: {choice.summary()} (probe: {probe_seconds:.1f} s, once)", flush=True)
    summary = {}
    for budget in [float(b) for b in args.budgets.split(",")]:
        for seed in [int(s) for s in args.seeds.split(",")]:
            for arm in arms:
                result = run_arm(arm, budget, seed, strategy, probe_home / "precision")
                summary.setdefault((budget, arm), []).append(result)
                print(
                    f"budget {budget:4.0f} s seed {seed} {arm:9s} best {result['best']:.5f} "
                    f"trials {result['trials']:3d} epochs {result['epochs']:6.1f} first epoch "
                    f"at {result['first_epoch_s'] or float('nan'):5.1f} s wall "
                    f"{result['wall']:5.1f} s (load {os.getloadavg()[0]:.2f})",
                    flush=True,
                )
    print()
    print(
        "| budget (s) | arm | seeds | median best val MSE | vs best peer | median trials | "
        "median epochs | median first epoch (s) |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for budget in sorted({b for b, _ in summary}):
        medians = {a: statistics.median(r["best"] for r in summary[(budget, a)]) for a in arms}
        peers = [m for a, m in medians.items() if a != "ours"]
        best_peer = min(peers) if peers else float("nan")
        for arm in arms:
            results = summary[(budget, arm)]
            firsts = [r["first_epoch_s"] for r in results if r["first_epoch_s"] is not None]
            print(
                f"| {budget:.0f} | {arm if arm != 'ours' else 'ours: ' + strategy} | "
                f"{len(results)} | {medians[arm]:.5f} | {medians[arm] / best_peer:.2f} | "
                f"{statistics.median(r['trials'] for r in results):.0f} | "
                f"{statistics.median(r['epochs'] for r in results):.1f} | "
                f"{statistics.median(firsts) if firsts else float('nan'):.1f} |"
            )
        if "ours" in medians and peers:
            ratio = medians["ours"] / best_peer
            verdict = "met" if ratio <= TARGET_RATIO else "missed"
            print(
                f"\nbudget {budget:.0f} s: ours / best peer = {ratio:.2f} "
                f"(target <= {TARGET_RATIO}): {verdict}\n"
            )


if __name__ == "__main__":
    main()
