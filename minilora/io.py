"""Saving and loading named arrays safely: one `.npz` file, written atomically, checked on load.

Checkpoints (minilora.checkpoint) and LoRA adapter files (minilora.lora) are both written here:

    save_arrays(path, {"wte.weight": array, ...}, {"config": {...}})   -> the path written
    arrays, metadata = load_arrays(path)

The file is an ordinary NumPy `.npz` (a zip of `.npy` files, readable by `numpy.load` with
allow_pickle=False) plus one extra entry, `__minilora__`, that holds UTF-8 JSON:

    {"format": "minilora-arrays", "version": 2,
     "arrays": {name: {"dtype": "<f4", "shape": [...]}},    in the order they were saved
     "sha256": "...",                                       over every name, dtype, shape and byte,
                                                            and over the metadata
     "metadata": {...}}                                     the caller's dict, as given

Why each piece:
- Atomic: the file is written to a temporary file in the same directory and then renamed over the
  target with os.replace, so a crash or a full disk mid-write leaves the previous file intact and
  never a half-written one under the real name. A process killed mid-write leaves its temporary
  file behind; the next save of the same target removes it.
- No pickle: loading a file never runs code from it.
- The checksum catches what the zip format does not: arrays edited and re-zipped, entries renamed,
  added or dropped, and metadata edited (an adapter's alpha, a checkpoint's n_head: they change
  what the arrays compute). Any failure to read a file is an ArrayFileError (a ValueError) that
  names the path and what is wrong; nothing is returned from a file that fails a check.
- Bounded: load_arrays reads only regular files (not a directory, a device such as /dev/zero or
  a pipe, even through a symlink) of at most max_bytes, with every entry stored uncompressed (so
  no entry can unpack to more than the file holds) and metadata nested at most MAX_DEPTH deep.
"""

import contextlib
import hashlib
import io as _bytes_io
import json
import os
import re
import stat
import tempfile
import time
import zipfile

import numpy as np

from minilora import backend
from minilora.tensor import Tensor

FORMAT = "minilora-arrays"
VERSION = 2  # version 1 did not cover the metadata with the checksum
METADATA_ENTRY = "__minilora__"
MAX_FILE_BYTES = 16 * 2**30  # load_arrays' default limit: far above any model minilora trains
MAX_DEPTH = 32               # how deeply metadata may nest lists and dicts


class ArrayFileError(ValueError):
    """A file that is not a readable minilora array file: truncated, corrupted, tampered with,
    not an .npz at all, or missing its metadata."""


# ---- saving ------------------------------------------------------------------------------------
def save_arrays(path, arrays, metadata=None):
    """Write `arrays` and `metadata` to `path` atomically; return the path written (a str).

    path: a file name; ".npz" is appended when it does not already end with it (as numpy.savez does).
    arrays: {name: array} with non-empty str names that a zip entry holds as given (not ending in
            ".npy"; no NUL, no backslash); NumPy or CuPy arrays or minilora Tensors of a numeric or
            bool dtype (CuPy arrays are copied to the CPU). The order of the dict is kept.
    metadata: a dict that json.dumps accepts (numbers, strings, lists, dicts, None; str keys),
              nested at most MAX_DEPTH deep, or None for {}.
    """
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    arrays = _checked_arrays(arrays)
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    if _depth(metadata) > MAX_DEPTH:
        raise ValueError(f"metadata nests lists and dicts more than MAX_DEPTH = {MAX_DEPTH} deep")
    try:
        # The metadata as load_arrays will see it: JSON turns tuples into lists, for one.
        metadata = json.loads(json.dumps(metadata, allow_nan=False))
        header = {
            "format": FORMAT,
            "version": VERSION,
            "arrays": {name: {"dtype": a.dtype.str, "shape": list(a.shape)} for name, a in arrays.items()},
            "sha256": checksum(arrays, metadata),
            "metadata": metadata,
        }
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
    started = time.time()
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
    _remove_stale_temporaries(path, started)


def _remove_stale_temporaries(path, started):
    """Remove the temporary files that earlier saves of `path` left when they were killed mid-write:
    those named as atomic_write names them (mkstemp's 8 random characters) and last written before
    this save began. Another target's temporaries never match (".model.npz.bak.x.tmp" is not one
    of "model.npz"'s)."""
    directory, name = os.path.split(os.path.abspath(path))
    pattern = re.compile(re.escape(f".{name}.") + r"[a-z0-9_]{8}\.tmp")
    for entry in os.scandir(directory):
        if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(OSError):  # gone already, or not ours to remove
                if entry.stat(follow_symlinks=False).st_mtime < started:
                    os.remove(entry.path)


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
        _check_entry_name(name)
        if isinstance(array, Tensor):
            # Taken as its array, as Module.load_state_dict takes one: a dict of Tensors such as
            # dict(model.named_parameters()) saves and loads back like the state_dict of arrays.
            array = array.data
        if not hasattr(array, "dtype") or not hasattr(array, "shape"):
            raise TypeError(f"arrays[{name!r}] must be a NumPy or CuPy array or a minilora Tensor, "
                            f"got {type(array).__name__}")
        array = np.asarray(backend.to_numpy(array))
        if not array.flags.c_contiguous:  # the .npy bytes and the checksum are in C order
            array = array.copy(order="C")
        if array.dtype.kind not in "biuf":
            raise TypeError(f"arrays[{name!r}] has dtype {array.dtype}; only bool, integer and floating "
                            "arrays can be saved (no objects, no pickle)")
        out[name] = array
    return out


def _check_entry_name(name):
    """Raise unless the array `name`, stored as the zip entry "{name}.npy", reads back as `name`."""
    if name.endswith(".npy"):
        # "a.npy" would be the entry "a.npy.npy", which numpy reads back as "a.npy" while the
        # array "a" is the entry "a.npy" too.
        raise ValueError(f"array names must not end in '.npy', got {name!r}")
    # Names that come back as other names: zipfile, writing and reading, cuts an entry name at its
    # first NUL and, on Windows, turns backslashes into "/".
    for char, why in (("\x00", "a NUL character (zip cuts the entry name there)"),
                      ("\\", "a backslash (zip on Windows reads it as '/')")):
        if char in name:
            raise ValueError(f"array names must not contain {why}, got {name!r}")
    try:
        size = len(f"{name}.npy".encode("utf-8"))  # how zipfile stores a name that is not ASCII
    except UnicodeEncodeError:
        raise ValueError(f"array names must be valid Unicode text (encodable as UTF-8), got {name!r}") from None
    if size > 0xFFFF:  # a zip entry name's length is a 16-bit field
        raise ValueError(f"array names must be at most {0xFFFF - 4} bytes long in UTF-8, got one of {size - 4} "
                         f"bytes ({name[:20]!r}...)")


def _write_npz(f, arrays, header_bytes):
    """The layout numpy.savez writes: one `{name}.npy` per array, stored uncompressed."""
    with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            with zf.open(f"{name}.npy", mode="w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, array, allow_pickle=False)
        with zf.open(f"{METADATA_ENTRY}.npy", mode="w") as entry:
            np.lib.format.write_array(entry, np.frombuffer(header_bytes, dtype=np.uint8), allow_pickle=False)


def checksum(arrays, metadata=None):
    """sha256 (hex) over the names, dtypes, shapes and bytes of `arrays` ({name: NumPy array}),
    in the dict's order, then over `metadata` (a JSON-serialisable dict) when given: any change to
    any of them changes the checksum."""
    h = hashlib.sha256()
    for name, array in arrays.items():
        h.update(json.dumps([name, array.dtype.str, list(array.shape)]).encode("utf-8"))
        h.update(array.tobytes(order="C"))
    if metadata is not None:
        # Canonical JSON (sorted keys, no spaces): the same metadata always gives the same bytes.
        h.update(json.dumps(metadata, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8"))
    return h.hexdigest()


def _depth(value):
    """How deeply `value` nests lists and dicts (a number or a string is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else None
        if children is None:
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


# ---- loading -----------------------------------------------------------------------------------
def load_arrays(path, max_bytes=MAX_FILE_BYTES):
    """Read a file written by save_arrays; return (arrays, metadata).

    arrays: {name: NumPy array} in the saved order; metadata: the dict given to save_arrays.
    max_bytes: the largest file read (default MAX_FILE_BYTES, 16 GiB).
    Raises FileNotFoundError for a missing file and ArrayFileError (a ValueError) naming the path
    and the problem for a file that is truncated, corrupted, tampered with or of another format,
    that is not a regular file, or that is larger than max_bytes.
    """
    path = os.fspath(path)
    raw = _read_regular_file(path, max_bytes)
    entries = _read_npz(path, raw)
    if METADATA_ENTRY not in entries:
        raise ArrayFileError(f"{path}: the .npz has no {METADATA_ENTRY!r} entry, so it was not written by "
                             f"minilora.io.save_arrays (entries: {sorted(entries)})")
    header = _parse_header(path, entries.pop(METADATA_ENTRY))
    _check_contents(path, header, entries)
    arrays = {name: entries[name] for name in header["arrays"]}  # the saved order
    found = checksum(arrays, header["metadata"])
    if found != header["sha256"]:
        raise ArrayFileError(f"{path}: checksum mismatch, the arrays or the metadata were changed after "
                             f"saving (sha256 recorded {header['sha256'][:16]}..., computed {found[:16]}...)")
    return arrays, header["metadata"]


def _read_regular_file(path, max_bytes):
    """The bytes of `path`, once it is known to be a regular file of at most max_bytes."""
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")
    info = os.stat(path)  # before open(): opening a pipe would block. Missing: FileNotFoundError.
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a device, pipe or socket"
        raise ArrayFileError(f"{path}: not a regular file ({kind}{', through a symlink' if os.path.islink(path) else ''})")
    if info.st_size > max_bytes:
        raise ArrayFileError(f"{path}: {info.st_size} bytes, more than max_bytes = {max_bytes}")
    with open(path, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # replaced between stat() and open()
            raise ArrayFileError(f"{path}: not a regular file")
        raw = f.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ArrayFileError(f"{path}: more than max_bytes = {max_bytes} bytes")
    return raw


def _read_npz(path, raw):
    """{entry name: array} of every entry, read in full (so the zip's CRC of each is checked)."""
    if not raw.startswith(b"PK"):
        raise ArrayFileError(f"{path}: not an .npz file (it does not start with a zip signature; "
                             f"the first bytes are {raw[:8]!r})")
    try:
        with zipfile.ZipFile(_bytes_io.BytesIO(raw)) as zf:
            packed = [info.filename for info in zf.infolist() if info.compress_type != zipfile.ZIP_STORED]
    except Exception as exc:  # BadZipFile, a truncated directory, ...
        raise ArrayFileError(f"{path}: the file is truncated or corrupted and cannot be read as an .npz "
                             f"({type(exc).__name__}: {exc})") from exc
    if packed:
        raise ArrayFileError(f"{path}: entries {packed} are compressed; save_arrays stores every entry "
                             "uncompressed, so this file was made or changed by something else")
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
    except RecursionError:
        header = None
    if header is None or _depth(header) > MAX_DEPTH + 1:  # + 1: the header around the caller's metadata
        raise ArrayFileError(f"{path}: the metadata nests lists and dicts more than MAX_DEPTH = {MAX_DEPTH} deep")
    expected = {"format", "version", "arrays", "sha256", "metadata"}
    if not isinstance(header, dict) or not expected <= set(header):
        keys = sorted(header) if isinstance(header, dict) else type(header).__name__
        raise ArrayFileError(f"{path}: the metadata should be a JSON object with keys {sorted(expected)}, "
                             f"got {keys}")
    if header["format"] != FORMAT:
        raise ArrayFileError(f"{path}: format {header['format']!r}, expected {FORMAT!r}")
    if header["version"] != VERSION:
        older = (" (version 1 files, from an older minilora, have no checksum over their metadata; "
                 "save the model or adapter again)") if header["version"] == 1 else ""
        raise ArrayFileError(f"{path}: format version {header['version']!r}; this minilora reads version "
                             f"{VERSION}{older}")
    if not isinstance(header["arrays"], dict) or not isinstance(header["sha256"], str):
        raise ArrayFileError(f"{path}: the metadata's 'arrays' must be an object and 'sha256' a string")
    if not isinstance(header["metadata"], dict):
        raise ArrayFileError(f"{path}: the caller's metadata must be a JSON object, got "
                             f"{type(header['metadata']).__name__}")
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
