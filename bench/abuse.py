"""Bombs and broken files against the dataset loaders (issue 10): outcome, peak memory, time.

Every file is made in a temporary folder (nothing is kept). Each case runs in a fresh Python
process that imports everything first, then calls the loader once; "extra MiB" is that
process's peak resident memory during the call above its resident memory just before
(``/proc/self/clear_refs`` resets the peak; ``ru_maxrss`` where that is unavailable). For
uploads, "check MiB" is the peak of the checking child that ``uploads.save_upload`` starts.
Target: every refusal under 200 MiB extra and 2 s.

Usage: python bench/abuse.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import resource
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

GIB = 2**30
MIB = 2**20


# --- making the files ------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def png_of_zeros(width: int, height: int) -> bytes:
    """A valid 8-bit grayscale PNG of zeros, compressed row by row (little memory)."""
    out = io.BytesIO()
    out.write(b"\x89PNG\r\n\x1a\n")
    out.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)))
    compressor = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte + pixels
    for _ in range(height):
        data = compressor.compress(row)
        if data:
            out.write(_chunk(b"IDAT", data))
    out.write(_chunk(b"IDAT", compressor.flush()))
    out.write(_chunk(b"IEND", b""))
    return out.getvalue()


def npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    np.lib.format.write_array_header_2_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue()


def npz_of_zeros(path: Path, shape: tuple[int, ...], dtype: str = "|u1") -> None:
    """An .npz whose 'x' is real zeros of ``shape``, deflated while streaming."""
    import numpy as np

    total = int(np.prod(shape)) * np.dtype(dtype).itemsize
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            member.write(npy_header(shape, dtype))
            block = b"\0" * (16 * MIB)
            while total > 0:
                member.write(block[: min(total, len(block))])
                total -= len(block)


def zip_of(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def patch_zip(path: Path, *, flags: int = 0, method: int | None = None) -> None:
    """Sets flag bits (1 = encrypted) or the compression method of every member."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        offsets = [info.header_offset for info in archive.infolist()]
    for local in offsets:
        struct.pack_into(
            "<H", data, local + 6, struct.unpack_from("<H", data, local + 6)[0] | flags
        )
        if method is not None:
            struct.pack_into("<H", data, local + 8, method)
    central = data.find(b"PK\x01\x02")
    while central != -1:
        bits = struct.unpack_from("<H", data, central + 8)[0]
        struct.pack_into("<H", data, central + 8, bits | flags)
        if method is not None:
            struct.pack_into("<H", data, central + 10, method)
        central = data.find(b"PK\x01\x02", central + 4)
    path.write_bytes(bytes(data))


def npy_bytes(array) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def build(folder: Path) -> list[dict]:
    """Makes every file; returns the cases: name, file, how it is loaded, extra environment."""
    import numpy as np

    cases = []

    def case(name, path, how="load", env=None, note=""):
        cases.append({"name": name, "path": str(path), "how": how, "env": env or {}, "note": note})

    path = folder / "header-6tib.npz"
    zip_of(path, {"x.npy": npy_header((100000, 4096, 4096), "|u1") + b"\0" * 64})
    case(".npz header declaring (100000, 4096, 4096) uint8", path)

    path = folder / "zeros-1gib.npz"
    npz_of_zeros(path, (1024, 1024, 1024))
    case(".npz of 1 GiB of real zeros (4 GiB as float32)", path)
    case("same, uploaded (checked in the child)", path, how="upload")
    for cap in (1, 2):
        case(
            "same, uploaded, header budget raised so it slips past",
            path,
            how="upload",
            env={
                "AUTOML_MAX_DATASET_BYTES": str(64 * GIB),
                "AUTOML_MAX_CHECK_MEMORY_BYTES": str(cap * GIB),
            },
            note=f"budget 64 GiB, child capped at {cap} GiB",
        )

    big = png_of_zeros(9000, 9000)
    path = folder / "twenty-9000.zip"
    zip_of(path, {f"img/{i:02d}.png": big for i in range(20)})
    case(".zip of twenty 9000x9000 PNGs", path)
    case(
        "same, pixel limit raised: decoded and shrunk one by one",
        path,
        env={"AUTOML_MAX_IMAGE_PIXELS": "100000000"},
        note="max_image_pixels 100 M: a load, not a refusal",
    )

    huge = png_of_zeros(20000, 20000)
    path = folder / "pillow-bomb.zip"
    zip_of(path, {"a.png": huge, "b.png": png_of_zeros(8, 8)})
    case(".zip with a 20000x20000 PNG (Pillow's bomb error)", path)
    path = folder / "activation-20000.png"
    path.write_bytes(huge)
    case("Activations upload: 20000x20000 PNG", path, how="activation")

    path = folder / "zeros-member.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("a.png", png_of_zeros(8, 8))
        with archive.open("zeros.png", "w", force_zip64=True) as member:
            for _ in range(500 // 16 + 1):
                member.write(b"\0" * (16 * MIB))
    case(".zip with a 500 MB-of-zeros member", path)

    small = npy_bytes(np.full((5, 8, 8), 0.5))
    path = folder / "empty.npz"
    zip_of(path, {"x.npy": npy_bytes(np.zeros((0, 8, 8), np.float32))})
    case("empty 'x' (0 images)", path)
    path = folder / "renamed.npz"
    path.write_bytes(small)
    case(".npy renamed .npz", path)
    path = folder / "crc.npz"
    zip_of(path, {"x.npy": small})
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF  # inside the array's data
    path.write_bytes(bytes(data))
    case(".npz with a bad CRC", path)
    path = folder / "short.npz"
    zip_of(path, {"x.npy": small[:-100]})
    case(".npz whose data is cut short", path)
    path = folder / "complex.npz"
    zip_of(path, {"x.npy": npy_bytes(np.zeros((5, 8, 8), np.complex128))})
    case("complex numbers", path)
    for label, kwargs in (("encrypted", {"flags": 1}), ("Deflate64", {"method": 9})):
        path = folder / f"{label}.zip"
        zip_of(path, {f"{i}.png": png_of_zeros(8, 8) for i in range(3)})
        patch_zip(path, **kwargs)
        case(f"{label} .zip of images", path)
    return cases


# --- measuring one case in a fresh process ------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def run_one(spec: dict) -> dict:
    """Runs one case in this (fresh) process and measures it."""
    os.environ.update(spec["env"])
    from PIL import Image

    from automl_core.errors import AutoMLError
    from automl_core.hosting import uploads
    from automl_core.model import datasets

    Image.init()
    if spec["how"] == "activation":
        from automl_core.analysis import inspect
    data = Path(spec["path"]).read_bytes() if spec["how"] != "load" else b""
    resettable = True
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")  # resets VmHWM to the current resident size
    except OSError:
        resettable = False
    before = _status_kib("VmRSS") or 0
    start_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    try:
        if spec["how"] == "load":
            x, _, _ = datasets.load_arrays(spec["path"])
            outcome = f"loaded {x.shape}"
        elif spec["how"] == "upload":
            path = uploads.save_upload(Path(spec["path"]).name, data)
            outcome = f"saved as {path.name}"
        else:
            image = inspect.image_from_bytes(data, (28, 28, 1))
            outcome = f"read {image.shape}"
        refused = False
    except AutoMLError as exc:
        outcome, refused = str(exc), True
    except Exception as exc:  # a traceback is what the issue forbids: show it as a failure
        outcome, refused = f"UNCAUGHT {type(exc).__name__}: {exc}", False
    seconds = time.perf_counter() - started
    if resettable:
        peak = _status_kib("VmHWM") or 0
    else:
        peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, start_maxrss)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "outcome": outcome,
        "refused": refused,
        "extra_mib": max(0, peak - before) / 1024,
        "check_mib": children / 1024 if spec["how"] == "upload" else None,
        "seconds": seconds,
    }


def machine_speed() -> float:
    """GFLOP/s of a 2048x2048 float32 matmul, best of five."""
    import numpy as np

    a = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - started)
    return 2 * 2048**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help="run only cases whose name contains these")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one case as JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    speed = machine_speed()
    print(
        f"machine: {speed:.0f} GFLOP/s (2048x2048 float32 matmul), {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {datetime.date.today()}"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="abuse-") as folder:
        started = time.perf_counter()
        cases = build(Path(folder))
        print(f"made {len(cases)} cases in {time.perf_counter() - started:.1f} s")
        if args.only:
            cases = [c for c in cases if any(word in c["name"] for word in args.only)]
        env = dict(os.environ, AUTOML_HOME=str(Path(folder) / "runs"))
        for spec in cases:
            done = subprocess.run(
                [sys.executable, __file__, "--one", json.dumps(spec)],
                capture_output=True,
                text=True,
                env=env,
                timeout=600,
            )
            try:
                result = json.loads(done.stdout.strip().splitlines()[-1])
            except (IndexError, ValueError):
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                result = {"outcome": f"CRASHED: {tail}", "refused": False, "extra_mib": None}
                result.update(check_mib=None, seconds=None)
            rows.append((spec, result))
            print(f"  {spec['name']}: {result['outcome'][:100]}", flush=True)
    print()
    print("| case | outcome | extra MiB | check MiB | time (s) | target |")
    print("|---|---|---:|---:|---:|---|")
    for spec, result in rows:
        head = result["outcome"].replace(str(Path(spec["path"]).parent) + "/", "")
        head = head if len(head) <= 110 else head[:107] + "..."
        verdict = "refused" if result["refused"] else "**not refused**"
        if result["refused"] and result["seconds"] is not None:
            met = result["extra_mib"] < 200 and result["seconds"] < 2
            target = "met" if met else "**missed**"
        else:
            target = "-"
        name = spec["name"] + (f" ({spec['note']})" if spec["note"] else "")
        extra = "-" if result["extra_mib"] is None else f"{result['extra_mib']:.0f}"
        check = "-" if result["check_mib"] is None else f"{result['check_mib']:.0f}"
        seconds = "-" if result["seconds"] is None else f"{result['seconds']:.3f}"
        print(f"| {name} | {verdict}: {head} | {extra} | {check} | {seconds} | {target} |")


if __name__ == "__main__":
    main()
