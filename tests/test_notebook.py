"""minilora.notebook: the fast switch and the figure saver every tutorial uses."""

import os
import subprocess
import sys
import types

import pytest
from matplotlib.figure import Figure

from minilora import notebook


def test_show_writes_a_png_where_minilora_figures_points(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINILORA_FIGURES", str(tmp_path / "figs"))
    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    path = notebook.show(fig, "01_line")
    assert path == str(tmp_path / "figs" / "01_line.png")
    assert (tmp_path / "figs" / "01_line.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"figure: {path}" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["", "a/b", 3])
def test_show_rejects_names_that_are_not_plain_file_names(name, tmp_path, monkeypatch):
    monkeypatch.setenv("MINILORA_FIGURES", str(tmp_path))
    with pytest.raises(ValueError, match="name must be a file name without folders"):
        notebook.show(Figure(), name)


@pytest.mark.parametrize("argv, env, expected", [
    ([], {}, False), (["--fast"], {}, True), ([], {"MINILORA_FAST": "1"}, True), ([], {"MINILORA_FAST": "0"}, False)])
def test_fast_comes_from_the_command_line_or_the_environment(argv, env, expected):
    code = "from minilora.notebook import FAST; print(FAST)"
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True,
                            env={**_clean_env(), **env})
    assert result.stdout.strip() == str(expected)


def _clean_env():
    return {k: v for k, v in os.environ.items() if k != "MINILORA_FAST"}


def test_in_a_notebook_show_displays_the_saved_png_instead_of_printing_its_path(tmp_path, monkeypatch, capsys):
    shown = []
    fake = types.ModuleType("IPython.display")
    fake.Image = lambda filename: ("image", filename)
    fake.display = shown.append
    monkeypatch.setitem(sys.modules, "IPython", types.ModuleType("IPython"))
    monkeypatch.setitem(sys.modules, "IPython.display", fake)
    monkeypatch.setattr(notebook, "in_notebook", lambda: True)
    monkeypatch.setenv("MINILORA_FIGURES", str(tmp_path))
    path = notebook.show(Figure(), "02_graph")
    assert shown == [("image", path)]
    assert capsys.readouterr().out == ""  # the picture is the one output: no path printed beside it


def test_outside_a_kernel_it_is_no_notebook_even_with_ipykernel_imported(monkeypatch):
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: None          # plain Python: no shell at all
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    assert not notebook.in_notebook()
    ipython.get_ipython = lambda: type("ZMQInteractiveShell", (), {})()   # a Jupyter kernel's shell
    assert notebook.in_notebook()


@pytest.mark.parametrize("fast", [True, False])
def test_a_fast_mode_note_is_printed_in_fast_mode_only(fast, monkeypatch, capsys):
    monkeypatch.setattr(notebook, "FAST", fast)
    notebook.fast_mode_note("the accuracy is not meaningful")
    out = capsys.readouterr().out
    assert out == ("[fast mode] the accuracy is not meaningful; run without --fast (or MINILORA_FAST=1) for the "
                   "real numbers\n" if fast else "")
