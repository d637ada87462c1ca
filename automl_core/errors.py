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


def file_problem(exc: OSError, with_path: bool = True) -> str:
    """One line for a file operation that failed (a read-only or full disk, a missing folder).

    Args:
        exc: The error.
        with_path: Name the file (the command line's user owns the machine); a hosted
            page says only what went wrong, not where the server keeps its files.
    """
    reason = exc.strerror or type(exc).__name__
    where = f" '{exc.filename}'" if with_path and exc.filename else ""
    return (
        f"a file{where} could not be read or written ({reason}); nothing already saved was "
        "changed. Check that the runs folder (AUTOML_HOME) is writable and has free space"
    )


class PermissionDenied(AutoMLError, PermissionError):
    """The acting user's role or ownership does not allow an action (or a quota is spent)."""
