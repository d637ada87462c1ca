"""Every size and count limit of the product, in one place.

Each limit is a named setting with a default and an environment variable that overrides it
(for a bigger server or a smaller container). The README's "Limits" table lists them all; a
test checks that every one is documented there. Read a limit by calling :func:`get`, so
tests and operators can change it through the environment without a restart of Python.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from automl_core.errors import ConfigError

MIB = 2**20
# reconstructions of the first test images saved beside a trial's model (preview.npy)
PREVIEW_IMAGES = 10


@dataclass(frozen=True)
class Limit:
    """One named limit.

    Attributes:
        name: The setting's name (also the key of :data:`LIMITS`).
        default: The value used when the environment does not set one.
        env: The environment variable that overrides it.
        unit: What the number counts, for messages and the README.
        description: One line: what the limit protects.
    """

    name: str
    default: int
    env: str
    unit: str
    description: str


LIMITS: dict[str, Limit] = {}


def _limit(name: str, default: int, unit: str, description: str) -> None:
    LIMITS[name] = Limit(name, default, f"AUTOML_{name.upper()}", unit, description)


_limit("max_upload_bytes", 50 * MIB, "bytes", "largest dataset file a visitor may upload")
_limit("max_archive_bytes", 512 * MIB, "bytes", "largest total unpacked size of a .zip's images")
_limit("max_image_files", 200_000, "files", "most images in one folder or .zip")
_limit("max_image_side", 256, "pixels", "images are scaled so their longer side is at most this")
_limit(
    "max_activation_upload_bytes",
    10 * MIB,
    "bytes",
    "largest image uploaded on the Activations page",
)
_limit(
    "max_activation_upload_pixels",
    4096 * 4096,
    "pixels",
    "most pixels of an image uploaded on the Activations page",
)

_limit(
    "max_dataset_bytes",
    2 * 1024 * MIB,
    "bytes",
    "largest dataset from a file or folder, counted as float32 after conversion "
    "(checked from the .npz headers or the images' headers before decoding)",
)
_limit(
    "max_image_pixels",
    40_000_000,
    "pixels",
    "most pixels (width x height) of one image in a folder or .zip, checked before decoding",
)
_limit(
    "max_decoded_pixels",
    400_000_000,
    "pixels",
    "most pixels (width x height) of all images of a folder or .zip together, the decoding "
    "work of one load, checked from the images' headers before any is decoded",
)
_limit(
    "max_probe_images",
    10_000,
    "images",
    "training images a linear probe fits on (the first ones of the split), per finished trial",
)
_limit(
    "max_decoded_cache_bytes",
    4 * 1024 * MIB,
    "bytes",
    "disk the decoded folders and .zip archives kept under <runs>/cache/datasets may take; "
    "the least recently used entries are removed beyond it",
)
_limit(
    "max_image_file_bytes",
    64 * MIB,
    "bytes",
    "largest single image file in a folder or .zip (a .zip member's declared size)",
)
_limit(
    "max_check_memory_bytes",
    4 * 1024 * MIB,
    "bytes",
    "memory the child process that checks an upload may use beyond its start",
)
_limit(
    "max_check_seconds",
    120,
    "seconds",
    "time the child process that checks an upload may take",
)
_limit(
    "max_range_values",
    1_000_000,
    "values",
    "values of one stepped range in a search space (a tiny step cannot stall the search)",
)
_limit("max_space_file_bytes", 1 * MIB, "bytes", "largest search-space file (JSON or YAML)")
_limit(
    "max_grid_size",
    100_000,
    "configurations",
    "most configurations a search space's full grid may hold",
)
_limit(
    "max_model_parameters",
    50_000_000,
    "parameters",
    "largest autoencoder a trial may build; a bigger one fails with that reason",
)
_limit(
    "max_chart_trials",
    1_000,
    "trials",
    "most finished trials the Leaderboard's parallel coordinates and importances are drawn "
    "from (the best half and an even spread of the rest); the table keeps every trial",
)
_limit(
    "max_note_length",
    2_000,
    "characters",
    "longest note a user may write on a trial (kept as plain text with the study)",
)
_limit(
    "max_consecutive_failures",
    5,
    "trials",
    "failed trials in a row after which a search stops and says why",
)


def get(name: str) -> int:
    """The value of a limit: its environment variable if set, else its default.

    Args:
        name: A key of :data:`LIMITS`.

    Returns:
        The limit as an integer.

    Raises:
        ConfigError: The name is unknown, or the environment holds something other than a
            positive integer.
    """
    if name not in LIMITS:
        raise ConfigError(f"unknown limit {name!r}; expected one of {', '.join(LIMITS)}")
    limit = LIMITS[name]
    raw = os.environ.get(limit.env)
    if raw is None or raw.strip() == "":
        return limit.default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"{limit.env} must be a positive integer ({limit.unit}), got {raw!r}")
    return value


# sharing: quotas of a shared dashboard (local mode has none) and the login lockout
_limit(
    "max_concurrent_searches",
    4,
    "searches",
    "searches launched from a shared dashboard running at once, all users together",
)
_limit(
    "max_searches_per_operator",
    2,
    "searches",
    "searches one user of a shared dashboard may have running at once",
)
_limit(
    "max_workers_per_search", 2, "workers", "worker processes of one launch on a shared dashboard"
)
_limit(
    "max_workers",
    64,
    "workers",
    "worker processes of one search on one machine (also capped by its cores and memory)",
)
_limit("max_trials_per_launch", 200, "trials", "trial budget of one launch on a shared dashboard")
_limit(
    "max_launch_seconds",
    3600,
    "seconds",
    "wall time of one launch on a shared dashboard (a launch without a timeout gets this one)",
)
_limit("max_login_failures", 5, "attempts", "wrong passwords in a row before a user is locked out")
_limit("login_lockout_seconds", 300, "seconds", "how long a locked-out user name must wait")
_limit(
    "max_client_login_failures",
    3,
    "attempts",
    "wrong passwords in a row from one client (browser address or session) before that client "
    "waits login_lockout_seconds; below max_login_failures, so one client cannot lock a user out",
)
_limit(
    "max_email_length",
    254,
    "characters",
    "longest OpenID Connect e-mail address accepted as a user name (RFC 5321 allows 254)",
)
_limit(
    "max_upload_declared_bytes",
    1024 * MIB,
    "bytes",
    "largest size an uploaded .npz's arrays may declare, counted as float32 after conversion "
    "(read from the headers before decoding); below max_dataset_bytes",
)
_limit(
    "max_upload_expansion",
    100,
    "times",
    "most times its file's size an uploaded .npz's arrays may declare (counted as float32), "
    "so a small file of zeros cannot ask for gigabytes",
)
_limit(
    "max_uploads_per_user",
    20,
    "uploads",
    "most uploaded datasets one user of a shared dashboard may keep (the same file again "
    "does not count)",
)
_limit(
    "max_upload_total_bytes",
    500 * MIB,
    "bytes",
    "most bytes one user's uploaded datasets may take on a shared dashboard, all together",
)
_limit(
    "warm_start_seconds",
    30,
    "seconds",
    "longest a starting dashboard server runs its landing page once before it takes visitors",
)
