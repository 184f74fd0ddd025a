"""minilora.io: bit-exact round trips, atomic writes, and a clear ArrayFileError for every kind of
damaged or foreign file (never a crash, never a partial load)."""

import io as bytes_io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from minilora import io


def sample_arrays(rng):
    return {
        "weights.f32": rng.standard_normal((3, 5)).astype(np.float32),
        "weights.f64": rng.standard_normal((4,)),
        "ids": rng.integers(-2**62, 2**62, size=(2, 3), dtype=np.int64),
        "scalar": np.float64(rng.standard_normal()).reshape(()),
        "mask": rng.random(7) > 0.5,
        "empty": np.zeros((0, 3), dtype=np.float32),
    }


def test_round_trip_is_bit_exact_and_keeps_order_and_metadata(rng, tmp_path):
    arrays = sample_arrays(rng)
    arrays["weights.f32"][0, 0] = np.nan
    arrays["weights.f64"][0] = -0.0
    metadata = {"config": {"n_layer": 2, "lr": 3e-4}, "chars": "ab\n=é", "note": None, "list": [1, 2.5]}
    path = io.save_arrays(tmp_path / "model", arrays, metadata)
    assert path == str(tmp_path / "model.npz")
    loaded, meta = io.load_arrays(path)
    assert list(loaded) == list(arrays)
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape
        assert loaded[name].tobytes() == array.tobytes()
    assert meta == metadata


def test_file_is_a_plain_npz_that_numpy_reads_without_pickle(rng, tmp_path):
    arrays = sample_arrays(rng)
    path = io.save_arrays(tmp_path / "plain.npz", arrays, {"k": 1})
    with np.load(path, allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["weights.f32"], arrays["weights.f32"])
        header = json.loads(npz[io.METADATA_ENTRY].tobytes())
    assert header["metadata"] == {"k": 1} and header["format"] == io.FORMAT
    assert header["arrays"]["ids"] == {"dtype": "<i8", "shape": [2, 3]}


def test_noncontiguous_input_is_saved_as_its_values(tmp_path):
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    arrays, _ = io.load_arrays(io.save_arrays(tmp_path / "t", {"t": base.T, "s": base[:, ::2]}))
    np.testing.assert_array_equal(arrays["t"], base.T)
    np.testing.assert_array_equal(arrays["s"], base[:, ::2])


def test_checksum_covers_names_dtypes_shapes_and_bytes():
    a = {"x": np.arange(6, dtype=np.float32)}
    reference = io.checksum(a)
    assert io.checksum({"y": a["x"]}) != reference
    assert io.checksum({"x": a["x"].view(np.int32)}) != reference
    assert io.checksum({"x": a["x"].reshape(2, 3)}) != reference
    changed = a["x"].copy()
    changed[3] = np.nextafter(changed[3], np.float32(10))
    assert io.checksum({"x": changed}) != reference
    assert io.checksum({"x": a["x"].copy()}) == reference


# ---- atomic writes ------------------------------------------------------------------------------
def test_a_failure_mid_write_keeps_the_previous_file_and_leaves_no_temporary(rng, tmp_path, monkeypatch):
    old = {"w": np.ones(3, dtype=np.float32)}
    path = io.save_arrays(tmp_path / "ckpt", old, {"version": "old"})
    before = Path(path).read_bytes()

    real_write_array = np.lib.format.write_array
    calls = []

    def fail_on_second_array(f, array, **kwargs):
        calls.append(array.shape)
        if len(calls) == 2:
            f.write(b"partial bytes")
            raise OSError("No space left on device")
        return real_write_array(f, array, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", fail_on_second_array)
    with pytest.raises(OSError, match="No space left"):
        io.save_arrays(path, {"w": np.zeros(3, dtype=np.float32), "v": np.zeros(2)}, {"version": "new"})
    assert len(calls) == 2
    assert Path(path).read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.npz"]
    assert io.load_arrays(path)[1] == {"version": "old"}


def test_an_interrupt_during_the_rename_leaves_no_temporary(tmp_path, monkeypatch):
    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        io.save_arrays(tmp_path / "x", {"a": np.zeros(2)})
    assert os.listdir(tmp_path) == []


def test_atomic_write_text_and_permissions(tmp_path):
    path = tmp_path / "sub" / "h.json"
    with io.atomic_write(path, mode="w") as f:
        f.write('{"é": 1}')
    assert json.loads(path.read_text(encoding="utf-8")) == {"é": 1}
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


# ---- damaged and foreign files --------------------------------------------------------------------
def saved(rng, tmp_path):
    return io.save_arrays(tmp_path / "good", sample_arrays(rng), {"step": 7})


def write(path, data):
    Path(path).write_bytes(data)
    return path


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_truncated_file_is_named_as_such(rng, tmp_path, keep):
    data = Path(saved(rng, tmp_path)).read_bytes()
    path = write(tmp_path / "cut.npz", data[: int(len(data) * keep)])
    with pytest.raises(io.ArrayFileError, match=r"cut.npz: the file is truncated or corrupted"):
        io.load_arrays(path)


def test_every_single_byte_flip_is_detected_or_harmless(rng, tmp_path):
    """Flipping any one byte either raises ArrayFileError or (in zip bookkeeping such as a
    timestamp) leaves the loaded arrays and metadata exactly as saved."""
    arrays = {"a": rng.standard_normal(4).astype(np.float32), "b": np.arange(3)}
    data = Path(io.save_arrays(tmp_path / "small", arrays, {"m": [1]})).read_bytes()
    detected = 0
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 0xFF
        path = write(tmp_path / "flip.npz", bytes(damaged))
        try:
            loaded, meta = io.load_arrays(path)
        except io.ArrayFileError as exc:
            assert "flip.npz" in str(exc)
            detected += 1
            continue
        assert meta == {"m": [1]} and list(loaded) == ["a", "b"]
        for name, array in arrays.items():
            assert loaded[name].tobytes() == array.tobytes()
    assert detected > 0.8 * len(data)


def test_arrays_changed_and_rezipped_fail_the_checksum(rng, tmp_path):
    path = saved(rng, tmp_path)
    with np.load(path, allow_pickle=False) as npz:
        entries = {name: npz[name] for name in npz.files}
    entries["weights.f32"] = entries["weights.f32"].copy()
    entries["weights.f32"][1, 2] += 1.0
    buffer = bytes_io.BytesIO()
    np.savez(buffer, **entries)   # a valid npz with consistent zip CRCs, but the data changed
    write(path, buffer.getvalue())
    with pytest.raises(io.ArrayFileError, match=r"good.npz: checksum mismatch, the arrays or the metadata were changed"):
        io.load_arrays(path)


def test_tampered_checksum_in_the_metadata(rng, tmp_path):
    path = saved(rng, tmp_path)
    with np.load(path, allow_pickle=False) as npz:
        entries = {name: npz[name] for name in npz.files}
    header = json.loads(entries[io.METADATA_ENTRY].tobytes())
    header["sha256"] = "0" * 64
    entries[io.METADATA_ENTRY] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    buffer = bytes_io.BytesIO()
    np.savez(buffer, **entries)
    write(path, buffer.getvalue())
    with pytest.raises(io.ArrayFileError, match="checksum mismatch"):
        io.load_arrays(path)


def rezip(path, entries):
    buffer = bytes_io.BytesIO()
    np.savez(buffer, **entries)
    return write(path, buffer.getvalue())


def test_an_added_or_dropped_array_is_named(rng, tmp_path):
    path = saved(rng, tmp_path)
    with np.load(path, allow_pickle=False) as npz:
        entries = {name: npz[name] for name in npz.files}
    rezip(path, {**entries, "extra": np.zeros(2)})
    with pytest.raises(io.ArrayFileError, match="unlisted array 'extra'"):
        io.load_arrays(path)
    del entries["ids"]
    rezip(path, entries)
    with pytest.raises(io.ArrayFileError, match="missing array 'ids'"):
        io.load_arrays(path)


def test_npz_without_metadata(tmp_path):
    path = rezip(tmp_path / "plain.npz", {"x": np.zeros(3)})
    with pytest.raises(io.ArrayFileError, match=r"plain.npz: the .npz has no '__minilora__' entry.*\['x'\]"):
        io.load_arrays(path)


@pytest.mark.parametrize("payload, fragment", [
    (b"\xff\xfe not utf-8", "not valid UTF-8 JSON"),
    (b"{not json", "not valid UTF-8 JSON"),
    (b"[1, 2]", "should be a JSON object"),
    (json.dumps({"format": "other", "version": 1, "arrays": {}, "sha256": "", "metadata": {}}).encode(),
     "format 'other', expected 'minilora-arrays'"),
    (json.dumps({"format": "minilora-arrays", "version": 99, "arrays": {}, "sha256": "", "metadata": {}}).encode(),
     "format version 99"),
])
def test_unreadable_metadata(tmp_path, payload, fragment):
    path = rezip(tmp_path / "m.npz", {io.METADATA_ENTRY: np.frombuffer(payload, dtype=np.uint8)})
    with pytest.raises(io.ArrayFileError, match=fragment):
        io.load_arrays(path)


@pytest.mark.parametrize("content", [b"", b"hello, not a zip", b"\x93NUMPY\x01\x00"])
def test_files_that_are_not_npz(tmp_path, content):
    path = write(tmp_path / "junk.npz", content)
    with pytest.raises(io.ArrayFileError, match="junk.npz: not an .npz file"):
        io.load_arrays(path)


def test_a_zip_that_is_not_an_npz(tmp_path):
    path = tmp_path / "notes.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(io.ArrayFileError, match="notes.npz"):
        io.load_arrays(path)


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        io.load_arrays(tmp_path / "nothing.npz")


def test_array_file_error_is_a_value_error():
    assert issubclass(io.ArrayFileError, ValueError)


def test_the_longest_name_a_zip_entry_holds_round_trips(tmp_path):
    name = "x" * 65531  # the entry "{name}.npy" is 65535 bytes, the most a zip name holds
    arrays, _ = io.load_arrays(io.save_arrays(tmp_path / "long", {name: np.zeros(1)}))
    assert list(arrays) == [name]


def test_tensors_are_saved_as_their_arrays(tmp_path):
    import minilora

    weight = minilora.tensor(np.arange(6, dtype=np.float32).reshape(2, 3), requires_grad=True)
    arrays, _ = io.load_arrays(io.save_arrays(tmp_path / "t", {"w": weight, "ids": minilora.tensor([1, 2])}))
    np.testing.assert_array_equal(arrays["w"], weight.numpy())
    assert arrays["w"].dtype == np.float32 and arrays["ids"].tolist() == [1, 2]


# ---- what cannot be saved ----------------------------------------------------------------------------
@pytest.mark.parametrize("arrays, metadata, error, fragment", [
    ([np.zeros(2)], None, TypeError, "arrays must be a dict"),
    ({1: np.zeros(2)}, None, TypeError, "array names must be non-empty str"),
    ({"x": [1, 2]}, None, TypeError, r"arrays\['x'\] must be a NumPy or CuPy array or a minilora Tensor, got list"),
    ({"x": np.array(["a"])}, None, TypeError, "only bool, integer and floating"),
    ({"x": np.array([None], dtype=object)}, None, TypeError, "no objects, no pickle"),
    ({io.METADATA_ENTRY: np.zeros(1)}, None, ValueError, "reserved"),
    ({"a": np.zeros(1), "a.npy": np.zeros(2)}, None, ValueError, r"must not end in '.npy', got 'a.npy'"),
    # names a zip entry cannot hold as given: they would load back as other names, or not at all
    ({"a\x00b": np.zeros(1)}, None, ValueError,
     r"must not contain a NUL character \(zip cuts the entry name there\), got 'a\\x00b'"),
    ({"a\\b": np.zeros(1)}, None, ValueError, r"must not contain a backslash \(zip on Windows reads it as '/'\)"),
    ({"\ud800": np.zeros(1)}, None, ValueError, r"must be valid Unicode text \(encodable as UTF-8\), got '\\ud800'"),
    ({"x" * 65532: np.zeros(1)}, None, ValueError, "must be at most 65531 bytes long in UTF-8, got one of 65532 bytes"),
    ({"x": np.zeros(1)}, {"deep": json.loads("[" * 32 + "]" * 32)}, ValueError, "more than MAX_DEPTH = 32 deep"),
    ({"x": np.zeros(1)}, [1], TypeError, "metadata must be a dict"),
    ({"x": np.zeros(1)}, {"a": np.zeros(1)}, TypeError, "JSON-serialisable"),
    ({"x": np.zeros(1)}, {"a": float("nan")}, TypeError, "no NaN"),
])
def test_bad_input_is_refused_before_any_file_is_made(tmp_path, arrays, metadata, error, fragment):
    with pytest.raises(error, match=fragment):
        io.save_arrays(tmp_path / "bad", arrays, metadata)
    assert os.listdir(tmp_path) == []


# ---- the metadata is covered by the checksum; what load_arrays refuses to read ---------------------
def edit_header(path, change):
    """Rewrite the file's header (the JSON of its __minilora__ entry) with change(header), keeping
    the recorded checksum and valid zip CRCs: what a hand edit of the file gives."""
    with np.load(path, allow_pickle=False) as npz:
        entries = {name: npz[name] for name in npz.files}
    header = json.loads(entries[io.METADATA_ENTRY].tobytes())
    change(header)
    entries[io.METADATA_ENTRY] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    return rezip(path, entries)


@pytest.mark.parametrize("change", [
    lambda h: h["metadata"].update(step=8),
    lambda h: h["metadata"].update(extra=None),
    lambda h: h["metadata"].pop("step"),
], ids=["value edited", "key added", "key removed"])
def test_edited_metadata_fails_the_checksum(rng, tmp_path, change):
    path = edit_header(saved(rng, tmp_path), change)
    with pytest.raises(io.ArrayFileError, match="checksum mismatch, the arrays or the metadata were changed"):
        io.load_arrays(path)


def test_the_checksum_does_not_depend_on_the_order_of_metadata_keys(rng, tmp_path):
    arrays = sample_arrays(rng)
    path = io.save_arrays(tmp_path / "m", arrays, {"b": 1, "a": {"y": 2, "x": [3]}})
    edit_header(path, lambda h: h.update(metadata={"a": {"x": [3], "y": 2}, "b": 1}))
    assert io.load_arrays(path)[1] == {"a": {"x": [3], "y": 2}, "b": 1}


def test_version_1_files_are_refused_with_the_reason(rng, tmp_path):
    path = edit_header(saved(rng, tmp_path), lambda h: h.update(version=1))
    with pytest.raises(io.ArrayFileError, match="version 1 files, from an older minilora, have no checksum over"):
        io.load_arrays(path)


@pytest.mark.parametrize("metadata, fragment", [
    ([1, 2], "the caller's metadata must be a JSON object, got list"),
    ("text", "the caller's metadata must be a JSON object, got str"),
])
def test_metadata_that_is_not_an_object_is_refused(rng, tmp_path, metadata, fragment):
    path = saved(rng, tmp_path)
    # Recompute the checksum over the replaced metadata, so only the type check can refuse it.
    arrays, _ = io.load_arrays(path)
    edit_header(path, lambda h: h.update(metadata=metadata, sha256=io.checksum(arrays, metadata)))
    with pytest.raises(io.ArrayFileError, match=fragment):
        io.load_arrays(path)


@pytest.mark.parametrize("depth", [40, 100_000])
def test_deeply_nested_metadata_is_refused(tmp_path, depth):
    header = {"format": io.FORMAT, "version": io.VERSION, "arrays": {}, "sha256": "",
              "metadata": {"x": "PLACEHOLDER"}}
    text = json.dumps(header).replace('"PLACEHOLDER"', "[" * depth + "]" * depth)
    path = rezip(tmp_path / "deep.npz", {io.METADATA_ENTRY: np.frombuffer(text.encode(), dtype=np.uint8)})
    with pytest.raises(io.ArrayFileError, match="deep.npz: the metadata nests lists and dicts more than"):
        io.load_arrays(path)


def test_directories_devices_and_symlinks_to_them_are_not_read(tmp_path):
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(io.ArrayFileError, match=r"dir.npz: not a regular file \(a directory\)"):
        io.load_arrays(tmp_path / "dir.npz")
    if os.path.exists("/dev/zero"):
        os.symlink("/dev/zero", tmp_path / "zero.npz")
        with pytest.raises(io.ArrayFileError, match=r"zero.npz: not a regular file \(a device, pipe or "
                                                    r"socket, through a symlink\)"):
            io.load_arrays(tmp_path / "zero.npz")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.npz")
        with pytest.raises(io.ArrayFileError, match="pipe.npz: not a regular file"):
            io.load_arrays(tmp_path / "pipe.npz")  # never opened: opening a pipe would block


def test_a_file_larger_than_max_bytes_is_not_read(rng, tmp_path):
    path = saved(rng, tmp_path)
    size = os.path.getsize(path)
    assert io.load_arrays(path, max_bytes=size)[1] == {"step": 7}
    with pytest.raises(io.ArrayFileError, match=f"good.npz: {size} bytes, more than max_bytes = {size - 1}"):
        io.load_arrays(path, max_bytes=size - 1)


def test_compressed_entries_are_refused(rng, tmp_path):
    path = saved(rng, tmp_path)
    with np.load(path, allow_pickle=False) as npz:
        entries = {name: npz[name] for name in npz.files}
    buffer = bytes_io.BytesIO()
    np.savez_compressed(buffer, **entries)  # a deflated entry could unpack to far more than the file
    write(path, buffer.getvalue())
    with pytest.raises(io.ArrayFileError, match="are compressed; save_arrays stores every entry uncompressed"):
        io.load_arrays(path)


def test_a_save_removes_the_stale_temporaries_of_its_own_target_only(tmp_path):
    stale = [".model.npz.k3j_x9q2.tmp", ".model.npz.00000000.tmp"]
    others = [".model.npz.bak.k3j_x9q2.tmp", ".other.npz.k3j_x9q2.tmp", ".model.npz.tmp", "model.npz.k3j_x9q2.tmp"]
    for name in stale + others:
        (tmp_path / name).write_bytes(b"half a file")
        os.utime(tmp_path / name, (1e9, 1e9))  # written long before the save below
    # A temporary written after the save began belongs to a save still running: it stays.
    fresh = tmp_path / ".model.npz.abcdefgh.tmp"
    fresh.write_bytes(b"being written")
    os.utime(fresh, (2e10, 2e10))
    io.save_arrays(tmp_path / "model", {"a": np.zeros(2)})
    assert sorted(os.listdir(tmp_path)) == sorted(others + ["model.npz", fresh.name])
