"""Search efficiency: every strategy under the same wall-clock budget against the full grid.

On ``mnist-5k`` (3,900 train / 1,000 validation / 100 test images, shuffled with seed 0) and
one space, each strategy runs as its own process for the same budget (300 s by default):
``--space shared`` (1-3 conv layers, 8/16/32/64 filters, relu/elu/sigmoid/tanh, latent
8/16/32/64, learning rate 1e-4..1e-2 log) or ``--space rich`` (the shared space plus the
architecture and recipe options of ``bench/architectures.py``, which gives ``darts`` its
operation choices). Next to them, the exhaustive seed grid (1-2 layers, 16/32 filters,
relu/sigmoid, latent 8/16) runs to completion. Prints the machine's speed first, then, per
strategy, the best validation MSE and when it was first reached (a strategy that refuses the
space is listed with its message), then the peak memory of one process over 50 tiny trials.

    python bench/search_efficiency.py [--budget 300] [--space rich] [--strategies random,...]
    python bench/search_efficiency.py --memory-only

Two cores, two runs at once (each pinned, each from its own checkout): the grid and some
strategies on one core, other strategies on the other, reading the first run's grid:

    taskset -c 0 python bench/search_efficiency.py --strategies random --skip-memory
    taskset -c 1 python bench/search_efficiency.py --space rich --skip-memory \\
        --grid-from ../other-checkout/bench/out/search_grid.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import machine_speed  # bench/ is the script's folder

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SHARED_SPACE = {
    "num_conv_layers": [1, 2, 3],
    "filters": [8, 16, 32, 64],
    "activation": ["relu", "elu", "sigmoid", "tanh"],
    "latent_dim": [8, 16, 32, 64],
    "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
}
SEED_GRID = {
    "num_conv_layers": [1, 2],
    "filters": [16, 32],
    "activation": ["relu", "sigmoid"],
    "latent_dim": [8, 16],
}
SPACES = {"shared": SHARED_SPACE}  # "rich" is read from bench/architectures.py when asked for
SPLIT = {"val_fraction": 0.2, "test_fraction": 0.02}
MAX_EPOCHS = 20


def run_one(strategy: str, space: dict, budget: float | None, home: Path) -> dict:
    """Runs one search in a child process and reads its trials back from the storage."""
    code = f"""
import json, sys
sys.path.insert(0, {str(ROOT)!r})
from automl_core.search.runner import run_search
from automl_core.storage.settings import SearchSettings
settings = SearchSettings(study={strategy!r}, dataset="mnist-5k", space=json.loads({json.dumps(space)!r}),
    strategy={strategy!r}, trials={None if budget else None}, timeout={budget!r},
    max_epochs={MAX_EPOCHS}, seed=0, val_fraction={SPLIT["val_fraction"]},
    test_fraction={SPLIT["test_fraction"]})
run_search(settings)
"""
    env = {**os.environ, "AUTOML_HOME": str(home / strategy), "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = time.time()
    finished = subprocess.run(
        [sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    wall = time.time() - started
    if finished.returncode != 0:
        lines = finished.stderr.decode(errors="replace").strip().splitlines()
        return {"strategy": strategy, "refused": lines[-1] if lines else "no message"}
    import optuna

    from automl_core.storage import store

    storage = optuna.storages.RDBStorage(f"sqlite:///{home / strategy / 'studies.db'}")
    study = optuna.load_study(study_name=strategy, storage=storage)
    trials = study.get_trials(deepcopy=False)
    t0 = min((t.datetime_start for t in trials if t.datetime_start), default=None)
    t0 = t0.timestamp() if t0 else time.time()
    curve = sorted(
        (t.datetime_complete.timestamp() - t0, t.user_attrs["metrics"]["val_mse"])
        for t in trials
        if t.state == optuna.trial.TrialState.COMPLETE and store.ARTIFACT_ATTR in t.user_attrs
    )
    counts = {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
    if not curve:  # on a slow machine a strategy may finish no trial in the budget
        nan = float("nan")
        return {
            "strategy": strategy,
            "best": nan,
            "first_at": nan,
            "wall": wall,
            "curve": [],
            **counts,
        }
    best = min(v for _, v in curve)
    first = next(t for t, v in curve if v == best)
    return {
        "strategy": strategy,
        "best": best,
        "first_at": first,
        "wall": wall,
        "curve": curve,
        **counts,
    }


def runnable_strategies() -> list[str]:
    """Every registered strategy but the grid whose optional extra is installed."""
    import importlib.util

    from automl_core.search.strategies import STRATEGIES

    return [
        name
        for name, strategy in STRATEGIES.items()
        if not strategy.needs_grid
        and (strategy.requires is None or importlib.util.find_spec(strategy.requires))
    ]


def time_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    """Seconds until the first trial at or below ``target``, or None."""
    return next((t for t, v in curve if v <= target), None)


def memory_over_trials(n_trials: int = 50, trials_per_process: int | None = None) -> list[tuple]:
    """Worker memory over one tiny search (digits, 1 epoch each), read after every trial.

    Returns rows ``(trial, worker RSS MiB, worker peak RSS MiB so far)``; the workers are
    the search's child processes, replaced every ``trials_per_process`` trials.
    """
    code = f"""
import glob, sys
sys.path.insert(0, {str(ROOT)!r})
from automl_core.search.runner import run_search
from automl_core.storage.settings import SearchSettings
peak = 0.0
def field(pid, name):
    try:
        with open(f"/proc/{{pid}}/status") as status:
            return next(int(l.split()[1]) for l in status if l.startswith(name)) / 1024
    except (OSError, StopIteration):
        return 0.0
def report(study, trial):
    global peak
    pids = [p for f in glob.glob("/proc/self/task/*/children") for p in open(f).read().split()]
    rss = max([field(p, "VmRSS") for p in pids] or [0.0])
    peak = max([peak] + [field(p, "VmHWM") for p in pids])
    print(trial.number + 1, rss, peak, flush=True)
space = {{"num_conv_layers": [1, 2, 3], "filters": [4, 8, 16], "latent_dim": [4, 8, 16],
          "learning_rate": {{"low": 1e-4, "high": 1e-2, "log": True}}}}
run_search(SearchSettings(study="memory", dataset="digits", space=space, strategy="random",
           trials={n_trials}, max_epochs=1, seed=0), on_trial=report, poll_seconds=0.05)
"""
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "AUTOML_HOME": home, "TF_CPP_MIN_LOG_LEVEL": "3"}
        if trials_per_process:
            env["AUTOML_TRIALS_PER_PROCESS"] = str(trials_per_process)
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, check=True, text=True, capture_output=True
        ).stdout
    rows = [line.split() for line in out.splitlines() if line and line[0].isdigit()]
    return [(int(n), float(rss), float(peak)) for n, rss, peak in rows]


def main() -> None:
    """Runs the grid, then each strategy for the budget, then the memory check; prints tables."""
    from automl_core.storage.settings import DEFAULT_STRATEGY

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=300.0)
    parser.add_argument("--space", choices=["shared", "rich"], default="shared")
    parser.add_argument(
        "--strategies", default=None, help="comma-separated; default: every registered one"
    )
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument(
        "--reuse-grid",
        action="store_true",
        help="take the grid's result from bench/out/search_grid.json if present",
    )
    parser.add_argument(
        "--grid-from",
        default=None,
        help="read the grid's result from this JSON (another run's bench/out/search_grid.json, "
        "e.g. run at the same time on the other core), waiting for it after the strategies",
    )
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--out", default=None, help="also write the raw results as JSON here")
    args = parser.parse_args()
    if args.space == "rich":
        sys.path.insert(0, str(ROOT / "bench"))
        from architectures import RICH_SPACE

        SPACES["rich"] = RICH_SPACE
    space = SPACES[args.space]
    cores = len(os.sched_getaffinity(0))
    print(
        f"machine: {machine_speed():.0f} GFLOP/s (2048x2048 float32 matmul), {cores} of "
        f"{os.cpu_count()} cores usable, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"space {args.space}: {json.dumps(space)}",
        flush=True,
    )
    results = []
    if not args.memory_only:
        home = ROOT / "bench" / "out" / f"search_efficiency_{args.space}"
        if home.exists():
            import shutil

            shutil.rmtree(home)
        home.mkdir(parents=True)
        cached = ROOT / "bench" / "out" / "search_grid.json"
        grid = None
        if args.reuse_grid and cached.is_file():
            grid = json.loads(cached.read_text())
            print("seed grid: reused from bench/out/search_grid.json", flush=True)
        elif not args.grid_from:
            grid = run_one("grid", SEED_GRID, None, home)
            cached.write_text(json.dumps(grid))
        names = args.strategies.split(",") if args.strategies else runnable_strategies()
        for strategy in names:
            results.append(run_one(strategy, space, args.budget, home))
            print(f"  done: {strategy} {results[-1].get('refused', '')}", flush=True)
        if grid is None:
            source = Path(args.grid_from)
            while not source.is_file():  # the other run's grid may still be training
                time.sleep(10)
            time.sleep(1)
            grid = json.loads(source.read_text())
            print(f"seed grid: read from {source}", flush=True)
        print(
            f"seed grid: 16 configurations, {grid['COMPLETE']} finished in {grid['wall']:.0f} s, "
            f"best val MSE {grid['best']:.5f} (first reached at {grid['first_at']:.0f} s)",
            flush=True,
        )
        ran = [r for r in results if "refused" not in r]
        random_best = next((r["best"] for r in ran if r["strategy"] == "random"), None)
        print(
            f"\nbudget {args.budget:.0f} s per strategy, {cores} cores, max {MAX_EPOCHS} epochs, "
            f"space {args.space}"
        )
        print(
            "| strategy | best val MSE | first at (s) | beats grid at (s) | vs grid time | "
            "vs random | complete/pruned/failed |"
        )
        print("|---|---:|---:|---:|---:|---:|---|")
        rows = [
            {
                "strategy": "grid (full)",
                **{
                    k: grid[k] for k in ("best", "first_at", "curve", "COMPLETE", "PRUNED", "FAIL")
                },
            }
        ] + ran
        for r in rows:
            reach = (
                time_to_reach(r["curve"], grid["best"] * (1 - 1e-9)) if r is not rows[0] else None
            )
            ratio = f"{reach / grid['wall']:.2f}x" if reach is not None else "-"
            vs_random = f"{r['best'] / random_best:.2f}" if random_best else "-"
            name = r["strategy"] + (" *" if r["strategy"] == DEFAULT_STRATEGY else "")
            print(
                f"| {name} | {r['best']:.5f} | {r['first_at']:.0f} | "
                f"{(f'{reach:.0f}' if reach is not None else 'never')} | {ratio} | "
                f"{vs_random} | {r['COMPLETE']}/{r['PRUNED']}/{r['FAIL']} |"
            )
        for r in results:
            if "refused" in r:
                print(f"| {r['strategy']} | refused: {r['refused']} |||||")
        print(
            "* the default strategy; 'vs grid time' = time to beat the grid's best / grid's total time"
        )
    if args.skip_memory:
        if args.out:
            Path(args.out).write_text(json.dumps({"results": results}, indent=1))
        return
    ours = memory_over_trials()
    single = memory_over_trials(trials_per_process=10_000)
    print("\nworker memory over 50 tiny trials (digits, 1 epoch each), MiB:")
    print(
        f"{'after trial':>11s} {'ours RSS':>9s} {'ours peak':>10s} {'one process RSS':>16s} "
        f"{'one process peak':>17s}"
    )
    for (n, rss, peak), (_, rss1, peak1) in zip(ours, single, strict=False):
        if n in (1, 5, 10, 20, 30, 40, 50):
            print(f"{n:11d} {rss:9.0f} {peak:10.0f} {rss1:16.0f} {peak1:17.0f}")
    print(f"peak ratio ours / one long-lived process: {ours[-1][2] / single[-1][2]:.2f}")
    memory = {"ours": ours, "one_process": single}
    if args.out:
        Path(args.out).write_text(json.dumps({"results": results, "memory": memory}, indent=1))


if __name__ == "__main__":
    main()
