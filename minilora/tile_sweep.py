"""`minilora bench --sweep`: the warp rung timed with each of its tile configurations, to choose the
one that suits the GPU at hand.

The warp rung (csrc/cuda/lora_warp.cu) picks a block/warp/thread tile configuration per product by
a rule that looks at the shape only; the sweep times the rung with every configuration pinned, next
to that choice ("warp"), the fused rung and the base layer, and `sweep_table` says, per shape, which
configuration was fastest and how far the rule's choice was from it. A method "warp:<tiles>" is
the warp rung with the environment variable MINILORA_WARP_TILES set to <tiles> during its calls
(the names come from minilora.kernels.cuda.warp_tiles()).
"""

import os

from minilora.kernels.cuda import WARP_TILES_VARIABLE

PREFIX = "warp:"


def sweep_methods(tiles):
    """The methods a sweep times, given the names of the configurations."""
    return ("fused", "warp") + tuple(PREFIX + name for name in tiles) + ("base",)


def pinned_tiles(method):
    """The configuration a "warp:<tiles>" method pins, or None for any other method."""
    return method[len(PREFIX):] if method.startswith(PREFIX) else None


def with_tiles(tiles, fn):
    """fn(i) run with MINILORA_WARP_TILES = tiles, the variable restored after every call."""
    def call(i):
        before = os.environ.get(WARP_TILES_VARIABLE)
        os.environ[WARP_TILES_VARIABLE] = tiles
        try:
            return fn(i)
        finally:
            if before is None:
                del os.environ[WARP_TILES_VARIABLE]
            else:
                os.environ[WARP_TILES_VARIABLE] = before
    return call


def sweep_table(rows):
    """Markdown: per shape and pass, the fastest pinned configuration (device time), the time of
    the rung's own choice per shape, and their ratio. Rows as minilora.bench.summarize returns."""
    lines = ["Tile sweep of the warp rung (device time, ms)", "",
             "| M | N | K | r | pass | fastest tiles | ms | own choice ms | own ÷ fastest |",
             "|" + "---:|" * 4 + "---|---|" + "---:|" * 3]
    table = {}
    for row in rows:
        table.setdefault((row["M"], row["N"], row["K"], row["r"], row["pass"]), {})[row["method"]] = row
    for (M, N, K, r, pass_), cells in table.items():
        pinned = {pinned_tiles(m): row["device_ms"] for m, row in cells.items() if pinned_tiles(m)}
        if not pinned:
            continue
        best = min(pinned, key=pinned.get)
        own = cells["warp"]["device_ms"] if "warp" in cells else None
        lines.append(f"| {M} | {N} | {K} | {r} | {pass_} | {best} | {pinned[best]:.3f} | " +
                     ("- | - |" if own is None else f"{own:.3f} | {own / pinned[best]:.2f}x |"))
    return "\n".join(lines)
