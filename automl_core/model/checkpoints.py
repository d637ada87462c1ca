"""Checkpoints inside a trial: the last whole epoch's weights and optimizer state.

A worker killed in the middle of a 30-epoch trial would otherwise leave its retry to start
from epoch 0. After every whole epoch the training loop hands its state to an
:class:`EpochCheckpoint`, which writes it (model weights, optimizer variables, the best
weights so far and the history) to one ``.npz`` file, atomically: a temporary file renamed
over the old one, so a kill mid-write leaves the previous checkpoint whole. A retry of the
trial reads it back and continues from the next epoch.

Plain arrays only: the file is read back with ``allow_pickle=False``. A checkpoint is used
only for the configuration and precision that wrote it (both stored inside it).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class FitState:
    """Where a training stood after a whole epoch.

    Attributes:
        epochs: Whole epochs done.
        weights: The model's weights (``model.get_weights()``).
        optimizer: The optimizer's variables, in ``optimizer.variables`` order.
        best_weights: The weights of the best report point so far.
        best_index: Index of that report point in the history.
        history: The loop's history so far (``loss``, ``val_loss``, ``val_mse``, ``epochs``).
    """

    epochs: int
    weights: list[np.ndarray]
    optimizer: list[np.ndarray]
    best_weights: list[np.ndarray]
    best_index: int
    history: dict[str, list[float]] = field(default_factory=dict)


class EpochCheckpoint:
    """Saves a trial's training state after each epoch and offers an earlier one to resume.

    Args:
        path: Where this trial's checkpoint is written.
        identity: What the state is valid for (the configuration and the precision): a
            checkpoint written for another identity is not resumed.
        resume_from: A checkpoint of an interrupted trial this one retries, or None.
    """

    def __init__(self, path: Path, identity: dict[str, Any], resume_from: Path | None = None):
        self.path = Path(path)
        self.identity = json.dumps(identity, sort_keys=True, default=str)
        self.resume_from = Path(resume_from) if resume_from is not None else None
        self.resumed_at_epoch: int | None = None

    def load(self) -> FitState | None:
        """The state to continue from, or None (no checkpoint, another identity, unreadable)."""
        if self.resume_from is None:
            return None
        try:
            with np.load(self.resume_from, allow_pickle=False) as arrays:
                if str(arrays["identity"]) != self.identity:
                    return None
                counts = [int(n) for n in arrays["counts"]]
                parts = _split([arrays[f"a{i}"] for i in range(sum(counts))], counts)
                state = FitState(
                    epochs=int(arrays["epochs"]),
                    weights=parts[0],
                    optimizer=parts[1],
                    best_weights=parts[2],
                    best_index=int(arrays["best_index"]),
                    history=json.loads(str(arrays["history"])),
                )
        except (OSError, ValueError, KeyError):
            return None
        self.resumed_at_epoch = state.epochs
        return state

    def save(self, state: FitState) -> None:
        """Writes ``state`` over this trial's checkpoint, all or nothing (best effort: a
        failed write keeps the previous checkpoint and training goes on)."""
        arrays = state.weights + state.optimizer + state.best_weights
        counts = [len(state.weights), len(state.optimizer), len(state.best_weights)]
        partial = self.path.with_name(f".{self.path.stem}.{os.getpid()}.partial.npz")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(
                partial,
                identity=np.array(self.identity),
                epochs=np.array(state.epochs),
                best_index=np.array(state.best_index),
                history=np.array(json.dumps(state.history)),
                counts=np.array(counts),
                **{f"a{i}": np.asarray(a) for i, a in enumerate(arrays)},
            )
            os.replace(partial, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                partial.unlink()
            return
        if self.resume_from is not None and self.resume_from != self.path:
            # this trial's own checkpoint now holds more: the one it resumed from is done
            with contextlib.suppress(OSError):
                self.resume_from.unlink()

    def discard(self) -> None:
        """Removes this trial's checkpoint and the one it resumed from (the trial is over)."""
        for path in (self.path, self.resume_from):
            if path is not None:
                with contextlib.suppress(OSError):
                    path.unlink()


def _split(arrays: list[np.ndarray], counts: list[int]) -> list[list[np.ndarray]]:
    """``arrays`` cut into consecutive groups of ``counts``."""
    parts, start = [], 0
    for count in counts:
        parts.append(list(arrays[start : start + count]))
        start += count
    return parts
