"""Damaged and hostile adapter and checkpoint files: each is a clear error naming the file, or (a
byte of zip bookkeeping such as a timestamp) loads exactly what was saved. Never a crash, never
a model half-loaded, never a silently different model.

The files are real ones (save_adapter and save_checkpoint of a tiny GPT). Each kind of damage is
applied several times; conftest.py prints, at the end of the run, how many files of each kind of
damage were refused and how many loaded unchanged.
"""

import io as bytes_io
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from minilora import io
from minilora.checkpoint import load_checkpoint, save_checkpoint
from minilora.lora import LoRAConfig, apply_lora, load_adapter, save_adapter
from fuzz_support import TAMPERING
from test_lora_support import logits, randomise_adapter, tiny_gpt, tokens

FLIPS = 150     # single-byte flips per file, at random positions
CUTS = 12       # truncations per file

CONFIG = LoRAConfig(r=2, alpha=4, target_modules=("q_proj", "v_proj"), alpha_pattern={"v_proj": 8})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """{"adapter": path, "checkpoint": path} of good files, and the logits each gives."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("good")
    model = apply_lora(tiny_gpt(0), CONFIG)
    randomise_adapter(model, "default", rng)
    idx = tokens(rng)
    return {"adapter": save_adapter(model, folder / "adapter"), "checkpoint": save_checkpoint(tiny_gpt(3), folder / "ckpt"),
            "idx": idx, "adapter_logits": logits(model, idx), "checkpoint_logits": logits(tiny_gpt(3), idx)}


def load_and_classify(kind, damage, path, files):
    """Load `path` as a file of `kind`; it must be refused with an error naming the path, leaving
    the model untouched, or load the very model that was saved."""
    base = tiny_gpt(0) if kind == "adapter" else tiny_gpt(5)
    before = {n: p.numpy().copy() for n, p in base.named_parameters()}
    try:
        if kind == "adapter":
            load_adapter(base, path)
        else:
            load_checkpoint(path, model=base)
    except (ValueError, TypeError, OSError) as exc:
        assert os.path.basename(str(path)) in str(exc), f"{damage}: the error does not name the file: {exc!r}"
        after = dict(base.named_parameters())
        assert set(after) == set(before), f"{damage}: the model changed shape although loading failed"
        for name, p in after.items():
            assert np.array_equal(p.numpy(), before[name]), f"{damage}: {name} changed although loading failed"
        TAMPERING[kind, damage, "refused"] += 1
        return "refused"
    expected = files[f"{kind}_logits"]
    assert np.array_equal(logits(base, files["idx"]), expected), f"{damage}: loaded a different model"
    TAMPERING[kind, damage, "loaded unchanged"] += 1
    return "loaded"


def entries_of(path):
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def npz_bytes(entries, compressed=False):
    buffer = bytes_io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **entries)
    return buffer.getvalue()


def with_header(path, change):
    """The file's bytes with its header JSON edited by change(header); the recorded checksum kept."""
    entries = entries_of(path)
    header = json.loads(entries[io.METADATA_ENTRY].tobytes())
    change(header)
    entries[io.METADATA_ENTRY] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    return npz_bytes(entries)


def metadata_edits(kind):
    """(name, change) pairs that edit what the file says about the model, not the arrays."""
    if kind == "adapter":
        def config(key, value):
            return lambda h: h["metadata"]["config"].update({key: value})
        return [("alpha", config("alpha", 5)), ("use_rslora", config("use_rslora", True)),
                ("alpha_pattern", config("alpha_pattern", {"v_proj": 1})), ("r", config("r", 3)),
                ("target_modules", config("target_modules", ["q_proj"])),
                ("base_shapes", lambda h: h["metadata"]["base_shapes"].popitem())]

    def config(key, value):
        return lambda h: h["metadata"]["config"].update({key: value})
    return [("n_head", config("n_head", 1)), ("n_embd", config("n_embd", 8)), ("bias", config("bias", False)),
            ("extra", lambda h: h["metadata"]["extra"].update(step=1)), ("format", lambda h: h["metadata"].update(
                format="minilora-adapter"))]


@pytest.mark.parametrize("kind", ["adapter", "checkpoint"])
def test_truncated_files(kind, files, tmp_path):
    data = Path(files[kind]).read_bytes()
    for cut in np.linspace(0, len(data) - 1, CUTS).astype(int):
        path = tmp_path / f"cut{cut}.npz"
        path.write_bytes(data[:cut])
        assert load_and_classify(kind, "truncated", path, files) == "refused"


@pytest.mark.parametrize("kind", ["adapter", "checkpoint"])
def test_flipped_bytes(kind, files, tmp_path):
    data = Path(files[kind]).read_bytes()
    rng = np.random.default_rng(1)
    refused = 0
    for position in rng.choice(len(data), size=FLIPS, replace=False):
        damaged = bytearray(data)
        damaged[position] ^= 1 << int(rng.integers(8))
        path = tmp_path / "flip.npz"
        path.write_bytes(bytes(damaged))
        refused += load_and_classify(kind, "one bit flipped", path, files) == "refused"
    assert refused > 0.8 * FLIPS  # the rest hit zip bookkeeping (timestamps, attributes)


@pytest.mark.parametrize("kind", ["adapter", "checkpoint"])
def test_edited_metadata(kind, files, tmp_path):
    for name, change in metadata_edits(kind):
        path = tmp_path / f"edited_{name}.npz"
        path.write_bytes(with_header(files[kind], change))
        with pytest.raises(ValueError, match="checksum mismatch, the arrays or the metadata were changed"):
            io.load_arrays(path)
        assert load_and_classify(kind, "metadata edited", path, files) == "refused"


@pytest.mark.parametrize("kind", ["adapter", "checkpoint"])
def test_hostile_and_foreign_files(kind, files, tmp_path):
    good = files[kind]
    entries = entries_of(good)
    first = next(name for name in entries if name != io.METADATA_ENTRY)

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pickled code ran",))

    pickled_entry = bytes_io.BytesIO()
    np.savez(pickled_entry, **{**entries, first: np.array([Payload()], dtype=object)})
    renamed = {("renamed" if k == first else k): v for k, v in entries.items()}
    variants = {
        "a pickle instead of the file": pickle.dumps({first: entries[first]}),
        "a pickled object array inside": pickled_entry.getvalue(),
        "zero bytes": b"",
        "an entry renamed": npz_bytes(renamed),
        "an entry added": npz_bytes({**entries, "extra": np.zeros(2)}),
        "entries compressed": npz_bytes(entries, compressed=True),
        "metadata a list": with_header(good, lambda h: h.update(metadata=[1, 2])),
        "metadata nested 10,000 deep": npz_bytes({**entries, io.METADATA_ENTRY: np.frombuffer(
            json.dumps({**json.loads(entries[io.METADATA_ENTRY].tobytes()), "metadata": "X"}).replace(
                '"X"', "[" * 10_000 + "]" * 10_000).encode(), dtype=np.uint8)}),
        "a zip of text": _zip_of_text(),
        "version 1 (no checksum over the metadata)": with_header(good, lambda h: h.update(version=1)),
    }
    for damage, data in variants.items():
        path = tmp_path / f"{damage.replace(' ', '_')}.npz"
        path.write_bytes(data)
        assert load_and_classify(kind, damage, path, files) == "refused"

    os.mkdir(tmp_path / "folder.npz")
    targets = {"a directory": tmp_path / "folder.npz", "a missing file": tmp_path / "nothing.npz"}
    os.symlink(tmp_path / "folder.npz", tmp_path / "to_folder.npz")
    targets["a symlink to a directory"] = tmp_path / "to_folder.npz"
    os.symlink(tmp_path / "gone", tmp_path / "dangling.npz")
    targets["a dangling symlink"] = tmp_path / "dangling.npz"
    if os.path.exists("/dev/zero"):
        os.symlink("/dev/zero", tmp_path / "zero.npz")
        targets["a symlink to /dev/zero"] = tmp_path / "zero.npz"
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.npz")
        targets["a named pipe"] = tmp_path / "pipe.npz"
    for damage, path in targets.items():
        assert load_and_classify(kind, damage, path, files) == "refused"


def _zip_of_text():
    buffer = bytes_io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("readme.txt", "hello")
    return buffer.getvalue()


def test_the_good_files_load_exactly(files):
    for kind in ("adapter", "checkpoint"):
        assert load_and_classify(kind, "none (the file as saved)", files[kind], files) == "loaded"
