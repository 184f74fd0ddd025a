"""What every tutorial needs to run both as a script and as a notebook.

    from minilora.notebook import FAST, fast_mode_note, show

    steps = 20 if FAST else 800          # fast mode: seconds, for CI and a first look
    show(fig, "01_params_over_rank")     # saves minilora_runs/figures/01_params_over_rank.png
    fast_mode_note("20 steps teach the model nothing: the accuracy above is not meaningful")

FAST is on when the script was started with `--fast` or the environment has MINILORA_FAST=1
(a notebook has no command line, so the variable is its switch too).

show(fig, name) writes the figure as a PNG (atomically) to MINILORA_FIGURES, by default
minilora_runs/figures under the current folder; a script prints where, a notebook draws the
figure in the page instead (one output per figure). fast_mode_note(text) prints text in fast
mode only: which numbers of the cell a quick run cannot make meaningful. Figures are made with matplotlib.figure.Figure, not pyplot: no screen is needed and no
global backend is switched under a notebook that has its own.
"""

import os
import sys

from minilora.plot import save_png

FAST = "--fast" in sys.argv[1:] or os.environ.get("MINILORA_FAST", "") == "1"


def figure_dir():
    """The folder the figures go to (made if missing)."""
    folder = os.environ.get("MINILORA_FIGURES") or os.path.join("minilora_runs", "figures")
    os.makedirs(folder, exist_ok=True)
    return folder


def in_notebook():
    """True inside a Jupyter (IPython kernel) session, where a figure can be drawn in the page: the
    running IPython shell is a kernel's (imported ipykernel alone, as in a test, is not enough)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def show(fig, name):
    """Save `fig` (a matplotlib Figure) as <figure_dir>/<name>.png; draw it in a notebook, say where
    otherwise. Returns the path."""
    if not isinstance(name, str) or not name or os.sep in name:
        raise ValueError(f"name must be a file name without folders, like '01_params', got {name!r}")
    path = save_png(fig, os.path.join(figure_dir(), name + ".png"))
    if in_notebook():
        # The saved PNG itself: a bare Figure (no pyplot) has no picture of its own for Jupyter.
        from IPython.display import Image, display
        display(Image(filename=path))
    else:
        print(f"figure: {path}")
    return path


def fast_mode_note(text):
    """In fast mode, print `text` (what a quick run leaves meaningless) marked as such; else nothing."""
    if FAST:
        print(f"[fast mode] {text}; run without --fast (or MINILORA_FAST=1) for the real numbers")
