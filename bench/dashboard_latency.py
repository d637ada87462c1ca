"""Server-side render time of the dashboard's pages (Streamlit AppTest), cold and warm.

Builds (or reuses, in bench/out/latency_home) a study of N trials without training:
trials are added with ``study.add_trials`` and the user attributes the search writes
(``config``, ``metrics``, ``live``). Then each page is run in one AppTest: cold = first run,
warm = the median of the next three runs. The machine's speed is printed first; the table is
printed and written to bench/RESULTS.md under "## Dashboard latency" (500 trials) or
"## Dashboard latency, N trials".

The dashboard's UMAP warm-up thread is off here (``AUTOML_WARM_UP=0``): it compiles numba
kernels for a minute in the same process, which would be measured as page time;
``bench/first_umap.py`` measures it.

Usage: python bench/dashboard_latency.py [--trials 500]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

from machine import machine_speed  # bench/ is the script's folder

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "latency_home"
sys.path.insert(0, str(ROOT))
os.environ["AUTOML_HOME"] = str(OUT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["AUTOML_WARM_UP"] = "0"
WARM_RUNS = 3


def study_name(n_trials: int) -> str:
    """The synthetic study of ``n_trials`` trials."""
    return f"bench-{n_trials}"


def build_study(n_trials: int) -> bool:
    """A study of ``n_trials`` synthetic finished trials; False when reused from bench/out/."""
    import numpy as np
    import optuna

    from automl_core.model.space import DEFAULT_SPACE, SearchSpace
    from automl_core.storage import store
    from automl_core.storage.settings import SearchSettings

    url = store.default_storage_url()
    demo = ROOT / "assets" / "demo"  # the demo rows measure the bundled 8-trial study
    store.install_study(
        f"sqlite:///{demo / 'studies.db'}", demo / "artifacts", "demo-mnist-5k", url
    )
    name = study_name(n_trials)
    if name in store.study_names(url):
        study = store.load_study(name, url)
        if len(study.trials) >= n_trials:
            return False
        optuna.delete_study(study_name=name, storage=store.open_storage(url))
    space = SearchSpace.from_dict(DEFAULT_SPACE)
    settings = SearchSettings(
        study=name,
        dataset="mnist-5k",
        space=space.to_dict(),
        strategy="random",
        trials=n_trials,
        max_epochs=10,
    )
    study = optuna.create_study(study_name=name, storage=store.open_storage(url))
    study.set_user_attr(store.SETTINGS_ATTR, settings.to_dict())
    study.set_user_attr(store.ARTIFACT_ROOT_ATTR, str(store.artifact_root()))
    grid = space.grid()
    distributions = {
        name: optuna.distributions.CategoricalDistribution(values) for name, values in grid.items()
    }
    rng = np.random.default_rng(0)
    trials = []
    for number in range(n_trials):
        params = {name: values[rng.integers(len(values))] for name, values in grid.items()}
        val = float(0.01 + 0.03 * rng.random() / params["latent_dim"] * 8)
        epochs = 10
        loss = [float(val * (1 + 2.0 / (e + 1))) for e in range(epochs)]
        metrics = {
            "val_mse": val,
            "test_psnr": float(-10 * np.log10(val)),
            "test_ssim": float(0.6 + 0.3 * rng.random()),
            "test_mse": val * 1.02,
            "param_count": int(2000 * params["filters"] * params["num_conv_layers"]),
            "compression_ratio": 784 / params["latent_dim"],
            "train_seconds": float(5 + 20 * rng.random()),
            "epochs": epochs,
            "best_epoch": epochs,
        }
        state = optuna.trial.TrialState.COMPLETE if number % 10 else optuna.trial.TrialState.PRUNED
        trials.append(
            optuna.trial.create_trial(
                params=params,
                distributions=distributions,
                state=state,
                value=val if state == optuna.trial.TrialState.COMPLETE else None,
                user_attrs={
                    "config": {**params},
                    "metrics": metrics,
                    "live": {"epoch": epochs, "loss": loss, "val_loss": loss},
                },
            )
        )
    study.add_trials(trials)
    return True


def measure(page: str, study: str | None) -> tuple[float, float]:
    """(cold, warm) seconds of one page's script run; warm is the median of WARM_RUNS."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / page), default_timeout=300)
    if study:
        at.query_params["study"] = study
    start = time.perf_counter()
    at.run()
    cold = time.perf_counter() - start
    if at.exception:
        raise RuntimeError(f"{page}: {at.exception[0].message}")
    warm = []
    for _ in range(WARM_RUNS):
        start = time.perf_counter()
        at.run()
        warm.append(time.perf_counter() - start)
    return cold, statistics.median(warm)


# one page's first run in a Python process of its own: imports, storage, caches all cold
NEW_PROCESS_SCRIPT = """
import os, sys, time
start = time.perf_counter()
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[1], default_timeout=300)
at.query_params["study"] = sys.argv[2]
at.run()
if at.exception:
    raise SystemExit(at.exception[0].message)
print(time.perf_counter() - start)
"""


def measure_new_process(page: str, study: str, repeats: int = 3) -> float:
    """The median seconds of a page's first run in a new Python process (imports included:
    what a visitor of a restarted server waits for)."""
    import subprocess

    times = []
    for _ in range(repeats):
        done = subprocess.run(
            [sys.executable, "-c", NEW_PROCESS_SCRIPT, str(ROOT / page), study],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            check=True,
        )
        times.append(float(done.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def write_results(table: str, n_trials: int) -> None:
    """Replaces (or appends) this trial count's "## Dashboard latency" section of RESULTS.md."""
    path = ROOT / "bench" / "RESULTS.md"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    heading = "## Dashboard latency" + ("" if n_trials == 500 else f", {n_trials:,} trials")
    section = heading + "\n\n" + table + "\n"
    pattern = re.compile(re.escape(heading) + r"\n.*?(?=\n## |\Z)", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip("\n") + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument(
        "--pages",
        default="",
        help="only pages whose label contains one of these (comma-separated)",
    )
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    speed = (
        f"machine: {machine_speed():.0f} GFLOP/s (2048x2048 float32 matmul), "
        f"{len(os.sched_getaffinity(0))} of {os.cpu_count()} cores usable, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    print(speed, flush=True)
    start = time.perf_counter()
    fresh = build_study(args.trials)
    built = f"built in {time.perf_counter() - start:.1f} s" if fresh else "reused"
    pages = [
        ("app.py (Overview)", "app.py", None),
        ("Search", "pages/search.py", None),
        ("Leaderboard, demo study (8 trials)", "pages/leaderboard.py", "demo-mnist-5k"),
        (f"Leaderboard, {args.trials:,} trials", "pages/leaderboard.py", study_name(args.trials)),
    ]
    for extra in ("filters", "activations", "latent_space", "reconstructions"):
        if (ROOT / "pages" / f"{extra}.py").exists():
            pages.append(
                (extra.replace("_", " ").capitalize(), f"pages/{extra}.py", "demo-mnist-5k")
            )
    if args.pages:
        wanted = [w.strip().lower() for w in args.pages.split(",")]
        pages = [p for p in pages if any(w in p[0].lower() for w in wanted)]
    rows = []
    for label, page, study in pages:
        cold, warm = measure(page, study)
        rows.append(f"| {label} | {cold:.2f} | {warm:.2f} |")
        print(rows[-1], flush=True)
    if not args.pages or "leaderboard" in args.pages.lower():
        first = measure_new_process("pages/leaderboard.py", study_name(args.trials))
        rows.append(f"| Leaderboard, {args.trials:,} trials, in a new process | {first:.2f} | |")
        print(rows[-1], flush=True)
    table = "\n".join(
        [
            speed,
            "",
            (
                f"`python bench/dashboard_latency.py --trials {args.trials}` on {platform.node() or 'this machine'}, "
                f"{os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d')}; study of {args.trials} "
                f"synthetic trials {built} (cached in bench/out/). Server-side script "
                "time with Streamlit AppTest: cold = first run of a fresh session (caches empty in "
                f"this process), warm = the median of the same session's next {WARM_RUNS} runs; the "
                "UMAP warm-up off. The last row is the Leaderboard's first run in a Python "
                "process of its own, imports included (the median of 3): a restarted server's "
                "first visitor."
            ),
            "",
            "| page | cold (s) | warm (s) |",
            "|---|---:|---:|",
            *rows,
        ]
    )
    print(table)
    write_results(table, args.trials)


if __name__ == "__main__":
    main()
