"""The precision probe: measure each Keras policy on this machine once, and resolve ``auto``.

The probe trains a small convolutional autoencoder (2 blocks of 32 filters, 28x28 images,
batch 64) for a few epochs with the search's own training loop, once in float32 and once in
each mixed policy the device may run (``mixed_bfloat16`` on a CPU; ``mixed_float16`` and
``mixed_bfloat16`` on a GPU), and keeps the images per second after tracing. Its result is
cached in ``<runs>/precision/probe-<machine>.json``, keyed by the machine and the library
versions, so it runs once per machine. A search launcher runs it in a child process
(:func:`probe_in_child`): that keeps TensorFlow, and on a GPU its memory, out of the
launcher.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from automl_core.errors import AutoMLError
from automl_core.model.precision import (
    POLICIES,
    PrecisionChoice,
    ProbeResult,
    check_precision_available,
    choose_policy,
    fingerprint_key,
    machine_fingerprint,
    policy_scope,
)
from automl_core.model.space import ModelConfig

PROBE_IMAGES = 1024
# the probe's model and image shape (a ModelConfig's fields; its other fields are defaults)
PROBE_MODEL = {"num_conv_layers": 2, "filters": 32, "latent_dim": 32, "batch_size": 64}
PROBE_SHAPE = (28, 28, 1)
PROBE_EPOCHS = 3  # the first epoch traces; the other two are timed
# policies are measured in turn this many times and each keeps its best: a machine's load
# changes within seconds, and a speed-up near the threshold must not be a chance reading
PROBE_ROUNDS = 2
# a cache file larger than this is not a probe's record: it is ignored and measured anew
MAX_PROBE_FILE_BYTES = 64 * 1024
# the child process that measures is given this long before the search goes on in float32
PROBE_TIMEOUT_SECONDS = 600


def probe_cache_path(home: Path, fingerprint: dict | None = None) -> Path:
    """Where this machine's probe result is cached under the runs folder ``home``."""
    key = fingerprint_key(fingerprint or machine_fingerprint())
    return Path(home) / "precision" / f"probe-{key}.json"


def cached_probe(home: Path) -> ProbeResult | None:
    """This machine's cached probe result, or None (none yet, unreadable, or another machine's)."""
    fingerprint = machine_fingerprint()
    path = probe_cache_path(home, fingerprint)
    try:
        if path.stat().st_size > MAX_PROBE_FILE_BYTES:
            return None
        result = ProbeResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return result if result.machine == fingerprint else None


def _policies_to_measure(device: str) -> list[str]:
    """float32 first, then the mixed policies the device may run."""
    if device == "cpu":
        return ["float32", "mixed_bfloat16"]
    return ["float32", "mixed_float16", "mixed_bfloat16"]


def measure_policies(
    policies: list[str] | None = None,
    images: int = PROBE_IMAGES,
    epochs: int = PROBE_EPOCHS,
    rounds: int = PROBE_ROUNDS,
) -> ProbeResult:
    """Trains the probe model under each policy and measures its images per second.

    Args:
        policies: Keras policies to measure. Defaults to those of this device.
        images: Training images (random, 28x28x1). Defaults to :data:`PROBE_IMAGES`.
        epochs: Epochs per policy; the first (tracing) is not timed. Defaults to
            :data:`PROBE_EPOCHS`.
        rounds: Times each policy is measured, in turn; its best speed is kept. Defaults
            to :data:`PROBE_ROUNDS`.

    Returns:
        The measurements (a policy that fails to train is listed in ``errors``).
    """
    import keras
    import tensorflow as tf

    # TensorFlow only for a new measure: reading the cached result must stay light
    from automl_core.model.fit_loop import fit_autoencoder
    from automl_core.model.models import build_autoencoder
    from automl_core.model.training import compile_autoencoder

    started = time.perf_counter()
    gpus = tf.config.list_physical_devices("GPU")
    device = "cpu"
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        device = str(details.get("device_name") or "gpu")
    config = ModelConfig(**PROBE_MODEL)
    x = np.random.default_rng(0).random((images, *PROBE_SHAPE), dtype=np.float32)
    speeds: dict[str, float] = {}
    errors: dict[str, str] = {}
    measured = policies or _policies_to_measure("cpu" if not gpus else "gpu")
    for policy in [p for _ in range(max(1, rounds)) for p in measured]:
        if policy in errors:
            continue
        keras.utils.set_random_seed(0)
        try:
            with policy_scope(policy):
                models = build_autoencoder(config, PROBE_SHAPE)
                compile_autoencoder(models, config)
                fitted = fit_autoencoder(
                    models.autoencoder,
                    x,
                    x[:64],
                    config.batch_size,
                    max_epochs=epochs,
                    patience=epochs,
                )
            speeds[policy] = max(speeds.get(policy, 0.0), images / fitted.epoch_seconds)
        except Exception as exc:  # noqa: BLE001  (a policy this device cannot run)
            errors[policy] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        finally:
            keras.backend.clear_session()
    return ProbeResult(
        machine=machine_fingerprint(),
        device=device,
        images_per_second=speeds,
        seconds=time.perf_counter() - started,
        errors=errors,
    )


def run_probe(home: Path) -> ProbeResult:
    """Measures this machine now and caches the result under ``home`` (atomically)."""
    result = measure_policies()
    path = probe_cache_path(home, result.machine)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    partial.write_text(json.dumps(result.to_dict(), indent=1), encoding="utf-8")
    partial.replace(path)
    return result


def probe_in_child(home: Path) -> ProbeResult | None:
    """Runs the probe in ``python -m automl_core precision --measure`` and reads its cache.

    Returns:
        The result, or None when the child failed or ran past
        :data:`PROBE_TIMEOUT_SECONDS`.
    """
    env = {**os.environ, "AUTOML_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3"}
    # the package is importable in the child wherever this process was started from
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "automl_core", "precision", "--measure", "--quiet"]
    try:
        subprocess.run(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=PROBE_TIMEOUT_SECONDS,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return cached_probe(home)


def resolve_precision(
    setting: str,
    home: Path,
    probe: Callable[[Path], ProbeResult | None] = probe_in_child,
) -> PrecisionChoice:
    """The policy a search with this ``precision`` setting trains with on this machine.

    Args:
        setting: ``auto``, ``float32``, ``bfloat16`` or ``float16``.
        home: The runs folder (where the probe is cached).
        probe: Measures the machine when no cached result exists. Defaults to
            :func:`probe_in_child`.

    Returns:
        The choice, with the probe behind an ``auto`` decision.

    Raises:
        ConfigError: An unknown setting, or ``float16`` where no GPU is visible.
    """
    check_precision_available(setting)
    if setting != "auto":
        return PrecisionChoice(setting, POLICIES[setting], f"set by precision={setting}")
    result = cached_probe(home)
    if result is None:
        try:
            result = probe(home)
        except AutoMLError:
            result = None
    if result is None:
        return PrecisionChoice(
            setting, "float32", "the precision probe could not run here, so float32 is used"
        )
    policy, reason = choose_policy(result)
    return PrecisionChoice(setting, policy, reason, result)
