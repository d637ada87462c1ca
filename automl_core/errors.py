"""The project's exceptions: one base class, subclasses that also inherit a builtin."""

from __future__ import annotations


class AutoMLError(Exception):
    """Base class of every error the core raises on purpose."""


class ConfigError(AutoMLError, ValueError):
    """A search space, configuration or command-line value is invalid."""


class DatasetError(AutoMLError, ValueError):
    """A dataset name, file or folder cannot be turned into a dataset."""


class StorageError(AutoMLError, RuntimeError):
    """A study storage or artifact location is malformed, unreachable or inconsistent."""


class TrialFailure(AutoMLError, RuntimeError):
    """One trial failed (diverged, ran out of memory, impossible shape); the search goes on."""


class ArtifactMissing(AutoMLError, FileNotFoundError):
    """A trial's stored model or history cannot be found."""


class PermissionDenied(AutoMLError, PermissionError):
    """The acting user's role or ownership does not allow an action (or a quota is spent)."""
