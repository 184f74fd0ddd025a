"""The `minilora` command: subcommands, --help, and `minilora info`'s report."""

import subprocess
import sys

import pytest

from minilora import backend, cli
from minilora.kernels import BACKENDS, backend_status


def test_info_prints_one_line_per_backend_with_reasons(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for name in BACKENDS:
        usable, reason = backend_status(name)
        expected = f"  {name:<6} {'yes' if usable else 'no ':<4} {reason}"
        assert expected in lines, f"no line for backend {name!r} in:\n{out}"
        assert reason.strip()
    assert lines[0].startswith("minilora   ") and "NumPy      " in out and "CuPy       " in out
    ext, _ = backend.extension_status()
    if ext is not None:
        assert f"minilora._C built {'with' if ext.with_cuda else 'without'} CUDA" in out


def test_info_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "minilora.cli", "info"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    backend_lines = [line for line in result.stdout.splitlines()
                     if line.startswith(("  numpy ", "  cpp ", "  cuda ", "  cupy "))]
    assert len(backend_lines) == 4, result.stdout


def test_help_lists_every_command_with_its_description(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps long lines
    for name, (_, description) in cli.COMMANDS.items():
        assert f"{name} {description}" in out


@pytest.mark.parametrize("argv", [[], ["frobnicate"]], ids=["no command", "unknown command"])
def test_a_missing_or_unknown_command_is_a_usage_error(capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert "usage: minilora" in capsys.readouterr().err


def test_only_the_chosen_command_is_imported(monkeypatch):
    # A command whose module cannot be imported must not break the others.
    monkeypatch.setitem(cli.COMMANDS, "broken", ("minilora.no_such_module", "a command that cannot load"))
    assert cli.main(["info"]) == 0
    with pytest.raises(ModuleNotFoundError):
        cli.main(["broken"])
