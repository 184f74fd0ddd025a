"""`minilora bench --sweep` without a GPU: the methods it times, the pinning of a tile configuration
around each call, and the table it writes (minilora.tile_sweep). The timing needs a GPU."""

import argparse
import os

import pytest

from minilora import bench, tile_sweep
from minilora.kernels import cuda as cuda_kernels

VARIABLE = "MINILORA_WARP_TILES"


def record(method, device_ms, pass_="forward", M=128):
    return {"M": M, "N": 1024, "K": 512, "r": 16, "method": method, "pass": pass_,
            "device_ms": device_ms, "host_ms": 1.0}


def test_the_sweep_times_every_configuration_beside_the_rungs_own_choice():
    assert tile_sweep.sweep_methods(("a", "b")) == ("fused", "warp", "warp:a", "warp:b", "base")
    assert tile_sweep.pinned_tiles("warp:64x64x8/32x32/8x4") == "64x64x8/32x32/8x4"
    assert tile_sweep.pinned_tiles("warp") is None and tile_sweep.pinned_tiles("fused") is None
    assert cuda_kernels.WARP_TILES_VARIABLE == VARIABLE


@pytest.mark.parametrize("before", [None, "128x64x8/32x64/8x8"])
def test_a_pinned_call_sees_its_tiles_and_leaves_the_variable_as_it_was(monkeypatch, before):
    if before is None:
        monkeypatch.delenv(VARIABLE, raising=False)
    else:
        monkeypatch.setenv(VARIABLE, before)
    seen = []
    call = tile_sweep.with_tiles("64x64x8/32x32/8x4", lambda i: seen.append((i, os.environ.get(VARIABLE))))
    call(3)
    assert seen == [(3, "64x64x8/32x32/8x4")]
    assert os.environ.get(VARIABLE) == before

    def fails(i):
        raise RuntimeError("launch failed")
    with pytest.raises(RuntimeError):
        tile_sweep.with_tiles("x", fails)(0)
    assert os.environ.get(VARIABLE) == before


def test_the_sweep_table_names_the_fastest_configuration_per_shape_and_pass():
    both = "forward+backward"
    rows = bench.summarize([
        record("warp", 2.0), record("warp:big", 2.5), record("warp:small", 1.6), record("base", 1.5),
        record("warp", 5.0, both), record("warp:big", 4.0, both), record("warp:small", 4.4, both),
        record("fused", 9.0, M=256),  # no configuration timed there: no line
    ])
    lines = tile_sweep.sweep_table(rows).splitlines()
    assert lines[2] == "| M | N | K | r | pass | fastest tiles | ms | own choice ms | own ÷ fastest |"
    assert lines[4:] == ["| 128 | 1024 | 512 | 16 | forward | small | 1.600 | 2.000 | 1.25x |",
                         "| 128 | 1024 | 512 | 16 | forward+backward | big | 4.000 | 5.000 | 1.25x |"]
    report = bench.markdown_report(rows, {"device": "test", "dtype": "float32"})
    assert "Tile sweep of the warp rung" in report
    plain = bench.markdown_report(bench.summarize([record("warp", 2.0)]), {"device": "test", "dtype": "float32"})
    assert "Tile sweep" not in plain


def test_sweep_option_parses():
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert parser.parse_args(["--sweep"]).sweep is True
    assert parser.parse_args([]).sweep is False
