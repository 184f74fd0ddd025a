"""Saving and loading named arrays safely: one `.npz` file, written atomically, checked on load.

Checkpoints (minilora.checkpoint) and LoRA adapter files (minilora.lora) are both written here:

    save_arrays(path, {"wte.weight": array, ...}, {"config": {...}})   -> the path written
    arrays, metadata = load_arrays(path)

The file is an ordinary NumPy `.npz` (a zip of `.npy` files, readable by `numpy.load` with
allow_pickle=False) plus one extra entry, `__minilora__`, that holds UTF-8 JSON:

    {"format": "minilora-arrays", "version": 1,
     "arrays": {name: {"dtype": "<f4", "shape": [...]}},    in the order they were saved
     "sha256": "...",                                       over every name, dtype, shape and byte
     "metadata": {...}}                                     the caller's dict, as given

Why each piece:
- Atomic: the file is written to a temporary file in the same directory and then renamed over the
  target with os.replace, so a crash or a full disk mid-write leaves the previous file intact and
  never a half-written one under the real name.
- No pickle: loading a file never runs code from it.
- The checksum catches what the zip format does not: arrays edited and re-zipped, entries renamed,
  added or dropped. Any failure to read a file is an ArrayFileError (a ValueError) that names the
  path and what is wrong; nothing is returned from a file that fails a check.
"""

import contextlib
import hashlib
import io as _bytes_io
import json
import os
import tempfile
import zipfile

import numpy as np

from minilora import backend

FORMAT = "minilora-arrays"
VERSION = 1
METADATA_ENTRY = "__minilora__"


class ArrayFileError(ValueError):
    """A file that is not a readable minilora array file: truncated, corrupted, tampered with,
    not an .npz at all, or missing its metadata."""


# ---- saving ------------------------------------------------------------------------------------
def save_arrays(path, arrays, metadata=None):
    """Write `arrays` and `metadata` to `path` atomically; return the path written (a str).

    path: a file name; ".npz" is appended when it does not already end with it (as numpy.savez does).
    arrays: {name: array} with str names; NumPy or CuPy arrays of a numeric or bool dtype
            (CuPy arrays are copied to the CPU). The order of the dict is kept.
    metadata: a dict that json.dumps accepts (numbers, strings, lists, dicts, None), or None for {}.
    """
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    arrays = _checked_arrays(arrays)
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    header = {
        "format": FORMAT,
        "version": VERSION,
        "arrays": {name: {"dtype": a.dtype.str, "shape": list(a.shape)} for name, a in arrays.items()},
        "sha256": checksum(arrays),
        "metadata": metadata,
    }
    try:
        header_bytes = json.dumps(header, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metadata must be JSON-serialisable (numbers, strings, lists, dicts, None; "
                        f"no NaN or inf): {exc}") from exc

    with atomic_write(path) as f:
        _write_npz(f, arrays, header_bytes)
    return path


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temporary file beside `path` for writing; when the block ends without an error, flush
    it to disk and rename it to `path` (os.replace, atomic on POSIX and Windows). On any error,
    Ctrl-C included, the temporary file is removed and whatever was at `path` before is untouched.

        with atomic_write("history.json", mode="w") as f:
            json.dump(history, f)
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            # mkstemp makes the file private (0600); give it the permissions a plain open() would.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)
            yield f
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def _checked_arrays(arrays):
    """{name: C-contiguous NumPy array (0-d arrays and NumPy scalars stay 0-d)}, after checking
    names and dtypes."""
    if not isinstance(arrays, dict):
        raise TypeError(f"arrays must be a dict of name -> array, got {type(arrays).__name__}")
    out = {}
    for name, array in arrays.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"array names must be non-empty str, got {name!r}")
        if name == METADATA_ENTRY:
            raise ValueError(f"the array name {METADATA_ENTRY!r} is reserved for the file's metadata")
        if not hasattr(array, "dtype") or not hasattr(array, "shape"):
            raise TypeError(f"arrays[{name!r}] must be a NumPy or CuPy array, got {type(array).__name__}")
        array = np.asarray(backend.to_numpy(array))
        if not array.flags.c_contiguous:  # the .npy bytes and the checksum are in C order
            array = array.copy(order="C")
        if array.dtype.kind not in "biuf":
            raise TypeError(f"arrays[{name!r}] has dtype {array.dtype}; only bool, integer and floating "
                            "arrays can be saved (no objects, no pickle)")
        out[name] = array
    return out


def _write_npz(f, arrays, header_bytes):
    """The layout numpy.savez writes: one `{name}.npy` per array, stored uncompressed."""
    with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            with zf.open(f"{name}.npy", mode="w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, array, allow_pickle=False)
        with zf.open(f"{METADATA_ENTRY}.npy", mode="w") as entry:
            np.lib.format.write_array(entry, np.frombuffer(header_bytes, dtype=np.uint8), allow_pickle=False)


def checksum(arrays):
    """sha256 (hex) over the names, dtypes, shapes and bytes of `arrays` ({name: NumPy array}),
    in the dict's order: any change to any of them changes the checksum."""
    h = hashlib.sha256()
    for name, array in arrays.items():
        h.update(json.dumps([name, array.dtype.str, list(array.shape)]).encode("utf-8"))
        h.update(array.tobytes(order="C"))
    return h.hexdigest()


# ---- loading -----------------------------------------------------------------------------------
def load_arrays(path):
    """Read a file written by save_arrays; return (arrays, metadata).

    arrays: {name: NumPy array} in the saved order; metadata: the dict given to save_arrays.
    Raises FileNotFoundError for a missing file and ArrayFileError (a ValueError) naming the path
    and the problem for a file that is truncated, corrupted, tampered with or of another format.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:  # a missing or unreadable file raises the usual OSError here
        raw = f.read()
    entries = _read_npz(path, raw)
    if METADATA_ENTRY not in entries:
        raise ArrayFileError(f"{path}: the .npz has no {METADATA_ENTRY!r} entry, so it was not written by "
                             f"minilora.io.save_arrays (entries: {sorted(entries)})")
    header = _parse_header(path, entries.pop(METADATA_ENTRY))
    _check_contents(path, header, entries)
    arrays = {name: entries[name] for name in header["arrays"]}  # the saved order
    found = checksum(arrays)
    if found != header["sha256"]:
        raise ArrayFileError(f"{path}: checksum mismatch, the arrays were changed after saving "
                             f"(sha256 recorded {header['sha256'][:16]}..., computed {found[:16]}...)")
    return arrays, header["metadata"]


def _read_npz(path, raw):
    """{entry name: array} of every entry, read in full (so the zip's CRC of each is checked)."""
    if not raw.startswith(b"PK"):
        raise ArrayFileError(f"{path}: not an .npz file (it does not start with a zip signature; "
                             f"the first bytes are {raw[:8]!r})")
    try:
        with np.load(_bytes_io.BytesIO(raw), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except Exception as exc:  # BadZipFile, a bad CRC, a bad .npy header, a truncated entry, ...
        raise ArrayFileError(f"{path}: the file is truncated or corrupted and cannot be read as an .npz "
                             f"({type(exc).__name__}: {exc})") from exc


def _parse_header(path, entry):
    if entry.dtype != np.uint8 or entry.ndim != 1:
        raise ArrayFileError(f"{path}: the {METADATA_ENTRY!r} entry should hold UTF-8 JSON bytes (uint8, 1-D), "
                             f"got {entry.dtype} of shape {entry.shape}")
    try:
        header = json.loads(entry.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArrayFileError(f"{path}: the metadata is not valid UTF-8 JSON ({exc})") from exc
    expected = {"format", "version", "arrays", "sha256", "metadata"}
    if not isinstance(header, dict) or not expected <= set(header):
        keys = sorted(header) if isinstance(header, dict) else type(header).__name__
        raise ArrayFileError(f"{path}: the metadata should be a JSON object with keys {sorted(expected)}, "
                             f"got {keys}")
    if header["format"] != FORMAT:
        raise ArrayFileError(f"{path}: format {header['format']!r}, expected {FORMAT!r}")
    if header["version"] != VERSION:
        raise ArrayFileError(f"{path}: format version {header['version']!r}; this minilora reads version {VERSION}")
    if not isinstance(header["arrays"], dict) or not isinstance(header["sha256"], str):
        raise ArrayFileError(f"{path}: the metadata's 'arrays' must be an object and 'sha256' a string")
    return header


def _check_contents(path, header, entries):
    """The file's arrays are exactly the ones the metadata lists, with their dtypes and shapes."""
    listed, present = list(header["arrays"]), list(entries)
    problems = [f"missing array {name!r}" for name in listed if name not in entries]
    problems += [f"unlisted array {name!r}" for name in present if name not in header["arrays"]]
    for name in listed:
        if name in entries:
            info, array = header["arrays"][name], entries[name]
            if not isinstance(info, dict) or info.get("dtype") != array.dtype.str or info.get("shape") != list(array.shape):
                problems.append(f"array {name!r} is {array.dtype.str} {list(array.shape)}, the metadata says {info}")
    if problems:
        raise ArrayFileError(f"{path}: the arrays do not match the metadata: " + "; ".join(problems))
