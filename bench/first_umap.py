"""The first UMAP of a fresh server: before and after caching its compiled kernels, and t-SNE.

Each arm is a fresh Python process, as a newly started dashboard is, with numba's disk cache
in a folder of its own (``NUMBA_CACHE_DIR``). It does what a visitor's path does: the server
starts (arms with a warm-up start ``latent.start_umap_warm_up`` there, as the dashboard does
after its first page), the visitor opens the Latent space page (a model is built, which
imports TensorFlow, and 5,000 ``mnist-5k`` images are encoded), waits ``--think`` seconds,
then asks for UMAP of the 5,000 codes, then for t-SNE of them. Arms:

- ``before``: UMAP as the dashboard called it before (its own pynndescent neighbour search,
  500 layout epochs), empty cache, no warm-up;
- ``new install without warm-up``: ours, empty cache, no warm-up;
- ``new install with warm-up``: ours, empty cache, the warm-up child started with the server;
- ``restarted server``: ours, the cache the previous arm left, the warm-up started.

Printed: what the visitor waits, per arm (medians over ``--repeats``), machine speed first.

    python bench/first_umap.py [--repeats 2] [--think 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import machine_speed  # bench/ is the script's folder

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 15.0

CHILD = """
import json, sys, time, warnings
t0 = time.perf_counter()
sys.path.insert(0, {root!r})
from automl_core.analysis import latent
child = latent.start_umap_warm_up() if {warm!r} else None
import numpy as np
from automl_core.analysis import inspect
from automl_core.model.datasets import load_dataset
from automl_core.model.models import build_autoencoder
from automl_core.model.space import ModelConfig
data = load_dataset("mnist-5k", seed=0)
images = np.concatenate([data.x_train, data.x_val, data.x_test])
model = build_autoencoder(ModelConfig(num_conv_layers=2, filters=16, latent_dim=16),
                          data.input_shape).autoencoder
codes = inspect.encode(model, images)
page_ready = time.perf_counter() - t0
time.sleep({think!r})
asked = time.perf_counter()
if {before!r}:
    sys.modules.setdefault("umap.parametric_umap", None)
    import umap
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        umap.UMAP(n_components=2, n_neighbors=15, min_dist=0.1, n_jobs=latent._threads(),
                  init="spectral").fit_transform(codes)
else:
    latent.latent_projection(codes, "umap", latent.projection_params("umap"))
umap_wait = time.perf_counter() - asked
asked = time.perf_counter()
latent.latent_projection(codes, "tsne", latent.projection_params("tsne"))
tsne_wait = time.perf_counter() - asked
warm_done = child is not None and child.poll() is not None
if child is not None:
    child.wait()
print("RESULT " + json.dumps({{"page_ready": page_ready, "umap": umap_wait, "tsne": tsne_wait,
                              "warm_up_done_by_then": warm_done}}))
"""

ARMS = {
    # name: (old call, warm-up, reuse the previous arm's cache)
    "before": (True, False, False),
    "new install without warm-up": (False, False, False),
    "new install with warm-up": (False, True, False),
    "restarted server": (False, True, True),
}


def run_arm(before: bool, warm: bool, cache: Path, think: float) -> dict:
    """One fresh process with numba's cache in ``cache``: the visitor's waits in seconds."""
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": "",
        "NUMBA_CACHE_DIR": str(cache),
    }
    code = CHILD.format(root=str(ROOT), warm=warm, think=think, before=before)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    """Runs the arms in order ``--repeats`` times and prints medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--think", type=float, default=5.0, help="seconds before asking")
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated subset")
    args = parser.parse_args()
    print(
        f"machine: {machine_speed():.0f} GFLOP/s (2048x2048 float32 matmul), "
        f"{len(os.sched_getaffinity(0))} of {os.cpu_count()} cores usable, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; visitor asks {args.think:g} s "
        "after the Latent space page is ready",
        flush=True,
    )
    names = args.arms.split(",")
    results: dict[str, list[dict]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            cache = None
            for name in names:
                before, warm, reuse = ARMS[name]
                if not (reuse and cache):
                    cache = Path(scratch) / f"{repeat}-{len(results[name])}-{names.index(name)}"
                results[name].append(run_arm(before, warm, cache, args.think))
                print(f"  {name}: {results[name][-1]}", flush=True)
    print("\n| arm | page ready (s) | first UMAP of 5,000 codes (s) | then t-SNE of 5,000 (s) |")
    print("|---|---:|---:|---:|")
    for name, runs in results.items():
        page, umap, tsne = (
            statistics.median(r[k] for r in runs) for k in ("page_ready", "umap", "tsne")
        )
        print(f"| {name} | {page:.1f} | {umap:.1f} | {tsne:.1f} |")
    print(f"\ntarget: a fresh server's first UMAP under {TARGET_SECONDS:g} s")


if __name__ == "__main__":
    main()
