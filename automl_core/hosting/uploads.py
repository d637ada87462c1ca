"""Datasets uploaded from the dashboard: size and kind checked, then saved where searches read.

An upload is written to a hidden partial file and loaded once, in a child process whose
memory is capped (the ``max_check_memory_bytes`` limit) and whose time is bounded
(``max_check_seconds``), to prove it is a usable dataset. An ``.npz`` whose arrays' headers
declare far more than the file holds (compressed zeros) is refused there before anything is
decoded (the ``max_upload_declared_bytes`` and ``max_upload_expansion`` limits). A file that
slips past the loaders' own checks and needs too much memory kills that child, not the
dashboard. Only then is the file moved to its final name, so a bad file never replaces a
good one.

Each user's uploads live in their own folder (``<runs>/uploads/<user>/``) under a name made
from the file's content hash, so two users, or two tabs, uploading ``data.npz`` never touch
each other's file; only an operator or an admin may upload. On a shared dashboard each user
keeps at most ``max_uploads_per_user`` uploads and ``max_upload_total_bytes`` in all.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

from automl_core import limits
from automl_core.errors import DatasetError, PermissionDenied
from automl_core.hosting import access
from automl_core.model.datasets import (
    DATASETS,
    LoadNotes,
    load_arrays,
    load_notes,
    npz_declared_bytes,
    record_load_notes,
)
from automl_core.storage import store

UPLOAD_SUFFIXES = (".npz", ".zip")
# a saved upload's name: the user's file name's stem, "-", 16 hex digits of its content hash
_SAVED_NAME = re.compile(r"(?P<stem>.+)-[0-9a-f]{16}(?P<suffix>\.npz|\.zip)")

_CHILD_COMMAND = "import sys; from automl_core.hosting.uploads import _check_main; sys.exit(_check_main(sys.argv[1:]))"


def uploads_dir() -> Path:
    """The folder uploaded datasets are saved to: ``<runs>/uploads``."""
    return store.runs_home() / "uploads"


def user_uploads_dir(user: access.User) -> Path:
    """One user's upload folder: ``<runs>/uploads/<user name>``."""
    return uploads_dir() / access.user_folder_name(user)


def content_digest(data: bytes) -> str:
    """The SHA-256 of a whole upload in hex: what names a saved upload and tells two apart.

    Args:
        data: The file's bytes.

    Returns:
        64 hex digits.
    """
    return hashlib.sha256(data).hexdigest()


def display_name(dataset: str) -> str:
    """How a study's dataset is named on a page: never a path of the server.

    Args:
        dataset: A registry name, or the path a study was searched on.

    Returns:
        A registry name as it is; an upload's file name as the user's file had it (its
        ``<stem>.<suffix>``, without the content hash the saved name adds); for any other
        path, its last part (a backtick, which would end a code span, as a quote).
    """
    if dataset in DATASETS:
        return dataset
    path = Path(dataset)
    match = _SAVED_NAME.fullmatch(path.name)
    if match and path.parent.parent.name == "uploads":
        return match["stem"] + match["suffix"]
    return (path.name or dataset).replace("`", "'")


def _saved_uploads(folder: Path) -> list[Path]:
    """The uploads saved in one user's folder (no partial or hidden files)."""
    if not folder.is_dir():
        return []
    return [
        path
        for path in folder.iterdir()
        if path.suffix.lower() in UPLOAD_SUFFIXES
        and not path.name.startswith(".")
        and path.is_file()
    ]


def check_upload_quota(actor: access.User, filename: str, size: int, target: Path) -> None:
    """Refuses an upload beyond the user's quotas on a shared dashboard (the local user has none).

    Quotas: ``max_uploads_per_user`` saved uploads and ``max_upload_total_bytes`` in all.
    A file already saved (the same content) adds nothing and always passes.

    Args:
        actor: Who uploads.
        filename: The name the user's file had, for the message.
        size: The upload's size in bytes.
        target: The path it would be saved to.

    Raises:
        PermissionDenied: A quota would be exceeded; the message names it and its value.
    """
    if actor.source == access.LOCAL_ADMIN.source:
        return
    saved = _saved_uploads(target.parent)
    if target in saved:
        return
    most = limits.get("max_uploads_per_user")
    if len(saved) >= most:
        raise PermissionDenied(
            f"upload '{filename}' refused: {actor.name} already has {len(saved)} uploads, the "
            f"most allowed (max_uploads_per_user = {most}, "
            f"{limits.LIMITS['max_uploads_per_user'].env}); ask an admin to remove old ones"
        )
    total = size + sum(path.stat().st_size for path in saved)
    cap = limits.get("max_upload_total_bytes")
    if total > cap:
        shown, allowed = _sizes(total, cap)
        raise PermissionDenied(
            f"upload '{filename}' refused: with it {actor.name}'s uploads would take {shown}, "
            f"more than the {allowed} allowed (max_upload_total_bytes, "
            f"{limits.LIMITS['max_upload_total_bytes'].env}); ask an admin to remove old ones"
        )


@contextlib.contextmanager
def _quota_lock(user: access.User) -> Iterator[None]:
    """Holds one user's upload lock, so two uploads at once cannot both pass the quotas."""
    folder = uploads_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".quota-{access.user_folder_name(user)}.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def save_upload(
    filename: str, data: bytes, limit: int | None = None, actor: access.User | None = None
) -> Path:
    """Saves an uploaded dataset under the actor's :func:`user_uploads_dir` after checking it.

    The check runs in a child process with capped memory and time; what it noticed
    (resized or converted images, skipped links) is then available from
    ``datasets.load_notes(path)`` with the returned path.

    Args:
        filename: The name the user's file had (only its last part and safe characters
            are kept).
        data: The file's bytes.
        limit: Largest accepted size in bytes. Defaults to the ``max_upload_bytes`` limit.
        actor: Who uploads (an operator or an admin). Defaults to the local admin in local
            mode; required in shared mode.

    Returns:
        The saved file's path, ``<stem>-<content hash>.<suffix>``, usable as ``--dataset``.

    Raises:
        PermissionDenied: The actor may not upload (a viewer), or the upload would pass
            one of the user's quotas (nothing saved before is touched).
        DatasetError: The file is too large, of another kind, not a usable dataset, or
            needs more memory or time to read than the check allows (nothing is kept then).
    """
    actor = access.check_allowed(access.resolve_actor(actor), "upload")
    limit = limits.get("max_upload_bytes") if limit is None else limit
    if len(data) > limit:
        raise DatasetError(
            f"upload '{filename}' is {len(data) / limits.MIB:.1f} MiB, more than the "
            f"{limit / limits.MIB:.0f} MiB allowed"
        )
    suffix = Path(filename).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise DatasetError(
            f"upload '{filename}': expected an .npz file or a .zip of images, "
            f"got '{suffix or filename}'"
        )
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(filename).stem).lstrip(".")[:60] or "upload"
    folder = uploads_dir()
    folder.mkdir(parents=True, exist_ok=True)
    digest = content_digest(data)[:16]
    target = user_uploads_dir(actor) / f"{stem}-{digest}{suffix}"
    check_upload_quota(actor, filename, len(data), target)  # before the costly check
    partial = folder / f".{stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part{suffix}"
    partial.write_bytes(data)
    try:
        result = _check_in_child(partial, filename)
        if result["num_images"] < 3:
            raise DatasetError(
                f"upload '{filename}' holds {result['num_images']} images; at least 3 are needed"
            )
        with _quota_lock(actor):  # checked again: another upload may have landed meanwhile
            check_upload_quota(actor, filename, len(data), target)
            target.parent.mkdir(parents=True, exist_ok=True)  # only now: a refusal leaves nothing
            partial.replace(target)  # same content, same name: a second upload changes nothing
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if result.get("notes"):
        record_load_notes(LoadNotes.from_dict({**result["notes"], "source": str(target)}))
    return target


def _sizes(*counts: int) -> list[str]:
    """Byte counts for a message (``64 MiB``), exact where two would read the same."""
    shown = []
    for count in counts:
        for unit, power in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
            if count >= 2**power:
                shown.append(f"{count / 2**power:.1f}".removesuffix(".0") + f" {unit}")
                break
        else:
            shown.append(f"{count:,} bytes")
    if len(set(shown)) < len(shown):
        return [f"{count:,} bytes" for count in counts]
    return shown


def check_declared_size(path: Path, filename: str) -> None:
    """Refuses an uploaded ``.npz`` from its arrays' headers, before any data is decoded.

    The arrays may declare, counted as loading holds them (images as float32), at most the
    ``max_upload_declared_bytes`` limit and at most ``max_upload_expansion`` times the
    file's size: a small file of compressed zeros cannot ask for gigabytes of memory.

    Args:
        path: The uploaded ``.npz`` file.
        filename: The name the user's file had, for the message.

    Raises:
        DatasetError: The arrays declare more than either limit allows (the message names
            the file, the declared size and the limit), or the headers cannot be read.
    """
    declared = npz_declared_bytes(path)
    cap = limits.get("max_upload_declared_bytes")
    if declared > cap:
        shown, allowed = _sizes(declared, cap)
        raise DatasetError(
            f"upload '{filename}': its arrays declare {shown} once loaded, more than the "
            f"{allowed} allowed for an upload ({limits.LIMITS['max_upload_declared_bytes'].env})"
        )
    size = path.stat().st_size
    ratio = limits.get("max_upload_expansion")
    if declared > ratio * size:
        file_size, shown = _sizes(size, declared)
        raise DatasetError(
            f"upload '{filename}' is {file_size} but its arrays declare {shown} once loaded, "
            f"more than {ratio} times the file's size "
            f"({limits.LIMITS['max_upload_expansion'].env}); expected a file whose arrays are "
            "not mostly a repeated value"
        )


def _check_in_child(path: Path, filename: str) -> dict:
    """Loads ``path`` in a child process with capped memory and time; returns its report."""
    memory = limits.get("max_check_memory_bytes")
    seconds = limits.get("max_check_seconds")
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = "1"  # fewer threads, less address space: the check needs none
    too_big = (
        f"upload '{filename}': the file needed more than {memory / limits.MIB:,.0f} MiB to read "
        f"({limits.LIMITS['max_check_memory_bytes'].env}); expected a smaller dataset"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD_COMMAND, str(path), str(memory)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=seconds,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise DatasetError(
            f"upload '{filename}': reading the file took more than {seconds} s "
            f"({limits.LIMITS['max_check_seconds'].env}); expected a dataset that loads faster"
        ) from None
    result = _last_json_line(done.stdout)
    if result is None:
        if done.returncode < 0:
            name = signal.Signals(-done.returncode).name
            raise DatasetError(f"{too_big} (the reading process was stopped by {name})")
        if "MemoryError" in done.stderr:
            raise DatasetError(too_big)
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise DatasetError(f"upload '{filename}': the file could not be checked ({last})")
    if result["status"] == "memory":
        raise DatasetError(too_big)
    if result["status"] == "refused":
        raise DatasetError(result["message"].replace(str(path), filename))
    return result


def _last_json_line(text: str) -> dict | None:
    """The child's report: the last line of its output, if it is a JSON object."""
    lines = text.strip().splitlines()
    try:
        value = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    return value if isinstance(value, dict) and "status" in value else None


def _address_space() -> int | None:
    """This process's virtual memory size in bytes (Linux), or None where unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _limit_memory(extra: int) -> None:
    """Caps this process's address space at its current size plus ``extra`` bytes."""
    try:
        import resource
    except ImportError:  # not POSIX: the child still keeps a crash away from the dashboard
        return
    current = _address_space()
    if current is None:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = current + extra
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def _check_main(argv: list[str]) -> int:
    """The checking child: caps its memory, loads the file, prints one JSON line."""
    from PIL import Image

    path, extra = argv[0], int(argv[1])
    Image.init()  # load Pillow's format plugins before the cap is measured
    _limit_memory(extra)
    try:
        if path.lower().endswith(".npz"):
            # in the child: even the zip directory of a hostile file is read under the cap
            check_declared_size(Path(path), path)
        x, _, _ = load_arrays(path)
        notes = load_notes(path)
        result = {
            "status": "ok",
            "num_images": int(len(x)),
            "shape": [int(d) for d in x.shape],
            "notes": notes.to_dict() if notes is not None else None,
        }
        del x
    except DatasetError as exc:
        result = {"status": "refused", "message": str(exc)}
    except MemoryError:
        result = {"status": "memory"}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0
