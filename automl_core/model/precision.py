"""Number formats of training: the ``precision`` run setting and the Keras policies behind it.

A search trains in one Keras dtype policy: ``float32``, ``mixed_bfloat16`` or
``mixed_float16`` (variables, the output layer, losses and metrics stay float32 in every
one). The run setting ``precision`` names it: ``float32``, ``bfloat16``, ``float16`` or
``auto``. ``auto`` is decided per machine by measurement (:mod:`automl_core.model.precision_probe`):
a mixed policy is chosen only when the probe found it at least :data:`SPEEDUP_THRESHOLD`
times faster than float32, because where a CPU has no bfloat16 units the format is emulated
and slower.

This module imports no TensorFlow: the choice and its records are plain data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from automl_core.errors import ConfigError

# the run setting's values, and the Keras policy each names (auto: decided by the probe)
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
PRECISIONS = ("auto", *POLICIES)
DEFAULT_PRECISION = "auto"
PRECISION_ENV = "AUTOML_PRECISION"
# a mixed policy is chosen by ``auto`` only when it is at least this much faster
SPEEDUP_THRESHOLD = 1.3
# CPU flags that mean bfloat16 arithmetic in hardware (reported in the probe's record)
BFLOAT16_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16")


def default_precision() -> str:
    """The ``precision`` a run uses when none is given: ``AUTOML_PRECISION`` or ``auto``."""
    return os.environ.get(PRECISION_ENV, "").strip() or DEFAULT_PRECISION


def check_precision(value: Any) -> str:
    """Returns ``value`` when it is a valid ``precision`` setting.

    Raises:
        ConfigError: It is not one of :data:`PRECISIONS`.
    """
    if value not in PRECISIONS:
        shown = str(value)[:40]
        raise ConfigError(f"unknown precision {shown!r}; expected one of {', '.join(PRECISIONS)}")
    return value


def check_precision_available(precision: str) -> None:
    """Refuses a setting this machine cannot train in (``float16`` needs a GPU).

    Raises:
        ConfigError: An unknown setting, or ``float16`` where no GPU is visible.
    """
    check_precision(precision)
    if precision == "float16" and not gpu_names():
        raise ConfigError(
            "precision=float16 needs a GPU and none is visible here (a CPU emulates "
            "float16 slowly); use auto, float32 or bfloat16"
        )


def policy_of(precision: str) -> str:
    """The Keras policy of an explicit setting (``bfloat16`` -> ``mixed_bfloat16``)."""
    return POLICIES[check_precision(precision)] if precision != "auto" else "float32"


@contextlib.contextmanager
def policy_scope(policy: str) -> Iterator[None]:
    """Within the block, Keras layers are created under ``policy``; the old one comes back."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def loss_scaled(optimizer, policy: str):
    """The optimizer wrapped for dynamic loss scaling under ``mixed_float16``, else itself.

    ``model.compile`` does this by itself; loops that train without compiling (DARTS) call
    it. float16 gradients of small losses underflow to zero without a scale.
    """
    if policy != "mixed_float16":
        return optimizer
    import keras

    return keras.optimizers.LossScaleOptimizer(optimizer)


@dataclass(frozen=True)
class ProbeResult:
    """What the precision probe measured on one machine.

    Attributes:
        machine: :func:`machine_fingerprint` of the machine it ran on.
        device: ``cpu`` or the GPU's name.
        images_per_second: Training speed per Keras policy, images per second.
        seconds: Wall-clock seconds the probe took.
        measured_at: Unix time of the measurement.
        errors: Per policy that could not train here, why.
    """

    machine: dict[str, Any]
    device: str
    images_per_second: dict[str, float]
    seconds: float
    measured_at: float = field(default_factory=time.time)
    errors: dict[str, str] = field(default_factory=dict)

    def speedup(self, policy: str) -> float | None:
        """How many times faster ``policy`` trained than float32, or None if not measured."""
        base = self.images_per_second.get("float32")
        fast = self.images_per_second.get(policy)
        if not base or fast is None:
            return None
        return fast / base

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ProbeResult:
        """Reads :meth:`to_dict` output back."""
        return cls(
            machine=dict(values["machine"]),
            device=str(values["device"]),
            images_per_second={str(k): float(v) for k, v in values["images_per_second"].items()},
            seconds=float(values["seconds"]),
            measured_at=float(values.get("measured_at", 0.0)),
            errors={str(k): str(v) for k, v in (values.get("errors") or {}).items()},
        )


@dataclass(frozen=True)
class PrecisionChoice:
    """The policy a search trains with, and why.

    Attributes:
        setting: The run setting it came from (``auto``, ``float32``, ...).
        policy: The Keras policy: ``float32``, ``mixed_bfloat16`` or ``mixed_float16``.
        reason: One line for people: why this policy.
        probe: The probe behind an ``auto`` choice, or None.
    """

    setting: str
    policy: str
    reason: str
    probe: ProbeResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """The choice as a JSON-ready dict (stored on the study)."""
        return {
            "setting": self.setting,
            "policy": self.policy,
            "reason": self.reason,
            "probe": self.probe.to_dict() if self.probe else None,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PrecisionChoice:
        """Reads :meth:`to_dict` output back."""
        probe = values.get("probe")
        return cls(
            setting=str(values.get("setting", "float32")),
            policy=str(values.get("policy", "float32")),
            reason=str(values.get("reason", "")),
            probe=ProbeResult.from_dict(probe) if probe else None,
        )

    def summary(self) -> str:
        """One line: the policy, and the probe's figures when there was one."""
        text = f"Precision {self.setting}: training in {self.policy}"
        if self.probe is not None:
            figures = ", ".join(
                f"{policy} {speed:,.0f} img/s"
                for policy, speed in sorted(self.probe.images_per_second.items())
            )
            text += f" ({self.reason}; probe on {self.probe.device}: {figures})"
        elif self.reason:
            text += f" ({self.reason})"
        return text


def choose_policy(probe: ProbeResult, threshold: float = SPEEDUP_THRESHOLD) -> tuple[str, str]:
    """The policy ``auto`` picks from a probe's figures, and the reason in words.

    The fastest mixed policy wins when it is at least ``threshold`` times faster than
    float32; otherwise float32 (emulated or overhead-bound mixed formats are not worth
    their rounding).

    Args:
        probe: The measurements.
        threshold: The speed-up a mixed policy must reach. Defaults to
            :data:`SPEEDUP_THRESHOLD`.

    Returns:
        ``(policy, reason)``.
    """
    if not probe.images_per_second.get("float32"):
        return "float32", "the probe could not train in float32, so float32 is kept"
    speedups = {
        policy: probe.speedup(policy)
        for policy in probe.images_per_second
        if policy != "float32" and probe.speedup(policy) is not None
    }
    if not speedups:
        return "float32", f"no mixed policy could train on {probe.device}"
    best = max(speedups, key=lambda policy: speedups[policy])
    if speedups[best] >= threshold:
        return best, f"{best} trained {speedups[best]:.2f}x faster than float32"
    return "float32", (
        f"{best} was only {speedups[best]:.2f}x float32's speed "
        f"(needs {threshold:g}x), so float32 is kept"
    )


def gpu_names() -> list[str]:
    """Names of the NVIDIA GPUs this process may use, read without importing TensorFlow."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return []
    names = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        try:
            for line in info.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith("Model:"):
                    names.append(line.split(":", 1)[1].strip())
        except OSError:
            continue
    return names


def _cpu_model_and_flags() -> tuple[str, list[str]]:
    """The CPU's model name and its bfloat16-related flags (Linux; empty elsewhere)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return model, []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            model = value.strip()
        elif key.strip() == "flags":
            flags.update(value.split())
    return model, sorted(flag for flag in BFLOAT16_FLAGS if flag in flags)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"


def machine_fingerprint() -> dict[str, Any]:
    """What makes a probe's figures valid: the host, CPU, GPUs and library versions."""
    model, flags = _cpu_model_and_flags()
    return {
        "host": platform.node(),
        "cpu": model,
        "cpu_bfloat16_flags": flags,
        "cores": os.cpu_count() or 1,
        "gpus": gpu_names(),
        "tensorflow": _version("tensorflow"),
        "keras": _version("keras"),
    }


def fingerprint_key(fingerprint: dict[str, Any]) -> str:
    """A short stable name for a fingerprint (the probe cache's file name)."""
    text = json.dumps(fingerprint, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
