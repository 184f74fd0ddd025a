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


# ---- bad options are usage errors (exit code 2, the problem named), before any work starts ------
@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a folder")
    return str(path)


USAGE_ERRORS = [
    (["train", "--steps", "0"], "argument --steps: expected a positive int, got 0"),
    (["train", "--steps", "-5"], "argument --steps: expected a positive int, got -5"),
    (["train", "--steps", "many"], "argument --steps: expected a positive int, got 'many'"),
    (["train", "--lr", "-1"], "argument --lr: expected a finite number > 0, got -1"),
    (["train", "--lr", "nan"], "argument --lr: expected a finite number > 0, got nan"),
    (["train", "--batch-size", "0"], "argument --batch-size: expected a positive int, got 0"),
    (["train", "--seed", "-1"], "argument --seed: expected an int >= 0, got -1"),
    (["train", "--out", "FILE"], "argument --out: FILE is an existing file, not a folder"),
    (["demo", "--out", "FILE"], "argument --out: FILE is an existing file, not a folder"),
    (["finetune", "--seed", "x"], "argument --seed: expected an int >= 0, got 'x'"),
    (["finetune", "--backend", "cuda"], "--backend cuda runs on the GPU, so it needs --device cuda"),
    (["finetune", "--backend", "cupy"], "--backend cupy runs on the GPU, so it needs --device cuda"),
]
if not backend.cuda_status()[0]:
    USAGE_ERRORS += [(["train", "--device", "cuda"], "argument --device: cuda is not usable here"),
                     (["finetune", "--device", "cuda"], "argument --device: cuda is not usable here"),
                     (["demo", "--device", "cuda"], "argument --device: cuda is not usable here"),
                     (["demo", "--backend", "cuda"], "--backend cuda runs on the GPU, so it needs --device cuda")]
else:
    USAGE_ERRORS += [(["finetune", "--device", "cuda", "--backend", "cpp"],
                      "--backend cpp runs on the CPU, so it needs --device cpu")]


@pytest.mark.parametrize("argv, message", USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_bad_options_are_usage_errors(capsys, a_file, argv, message):
    argv = [a_file if word == "FILE" else word for word in argv]
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"usage: minilora {argv[0]}" in err
    assert f"minilora {argv[0]}: error: {message.replace('FILE', a_file)}" in err


def test_the_module_entry_points_give_the_same_usage_errors(capsys):
    from minilora import train
    from minilora.lora import finetune
    with pytest.raises(SystemExit) as exit_:
        train.main(["--steps", "0"])
    assert exit_.value.code == 2 and "argument --steps: expected a positive int, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        finetune.main(["--backend", "cupy", "--device", "cpu"])
    assert exit_.value.code == 2 and "--backend cupy runs on the GPU" in capsys.readouterr().err
