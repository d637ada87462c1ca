"""How much of the labels a model's latent codes carry: the linear probe.

A logistic regression is fitted on the training split's latent vectors and scored on the
test split's. A search records the score with every finished trial of a labelled dataset
(``probe_accuracy`` and ``probe_chance`` in its metrics, :func:`probe_metrics`); the
Latent space page shows the same number for any trial. Both fit on at most the first
``max_probe_images`` training images (a named limit), so they agree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from automl_core import limits
from automl_core.errors import ConfigError

if TYPE_CHECKING:
    from automl_core.model.datasets import Dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeResult:
    """A linear probe: how well a logistic regression reads labels off the latents.

    Attributes:
        accuracy: Test-split accuracy.
        chance: Accuracy of always predicting the most common training label.
        train_size: Training latents used.
        test_size: Test latents scored.
    """

    accuracy: float
    chance: float
    train_size: int
    test_size: int

    @property
    def over_chance_points(self) -> float:
        """Accuracy above chance, in percentage points."""
        return 100.0 * (self.accuracy - self.chance)

    def to_metrics(self) -> dict[str, float]:
        """The trial metrics this probe adds: ``probe_accuracy`` and ``probe_chance``."""
        return {"probe_accuracy": self.accuracy, "probe_chance": self.chance}


def probe_train_count(n_train: int) -> int:
    """How many of the first training images a probe fits on (``max_probe_images``)."""
    return min(n_train, limits.get("max_probe_images"))


def linear_probe(
    z_train: np.ndarray,
    y_train: np.ndarray | None,
    z_test: np.ndarray,
    y_test: np.ndarray | None,
    max_iter: int = 500,
) -> ProbeResult:
    """Fits a logistic regression on training latents and scores it on the test latents.

    Args:
        z_train: (N, latent_dim) training latents.
        y_train: Their labels, or None.
        z_test: (M, latent_dim) test latents.
        y_test: Their labels, or None.
        max_iter: Solver iterations. Defaults to 500.

    Returns:
        The probe's accuracy and the chance level.

    Raises:
        ConfigError: No labels, or fewer than two classes in the training split.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if y_train is None or y_test is None:
        raise ConfigError(
            "the dataset has no labels, so there is nothing for a linear probe to predict"
        )
    classes, counts = np.unique(y_train, return_counts=True)
    if len(classes) < 2:
        raise ConfigError(
            f"a linear probe needs at least 2 classes in the training split, got {len(classes)}"
        )
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    probe.fit(z_train, y_train)
    accuracy = float((probe.predict(z_test) == y_test).mean()) if len(z_test) else float("nan")
    chance = float((y_test == classes[np.argmax(counts)]).mean()) if len(z_test) else float("nan")
    return ProbeResult(accuracy, chance, len(z_train), len(z_test))


def probe_metrics(encoder, dataset: Dataset, batch_size: int = 512) -> dict[str, float]:
    """A trained encoder's linear probe as trial metrics, or ``{}`` where there is none.

    There is none for a dataset without labels or with one class; a probe that fails for
    another reason is logged and left out, never failing the trial.

    Args:
        encoder: The trained encoder (images to latent vectors).
        dataset: The study's data.
        batch_size: Images per encoder call. Defaults to 512.

    Returns:
        ``{"probe_accuracy", "probe_chance"}`` or ``{}``.
    """
    if dataset.y_train is None or dataset.y_test is None or len(dataset.x_test) == 0:
        return {}
    if len(np.unique(dataset.y_train)) < 2:
        return {}
    try:
        n = probe_train_count(len(dataset.x_train))
        z_train = np.asarray(encoder.predict(dataset.x_train[:n], batch_size, verbose=0))
        z_test = np.asarray(encoder.predict(dataset.x_test, batch_size, verbose=0))
        z_train, z_test = z_train.reshape(len(z_train), -1), z_test.reshape(len(z_test), -1)
        if not (np.isfinite(z_train).all() and np.isfinite(z_test).all()):
            return {}
        return linear_probe(z_train, dataset.y_train[:n], z_test, dataset.y_test).to_metrics()
    except (ConfigError, ValueError, MemoryError) as exc:
        log.warning("linear probe left out: %s", exc)
        return {}
