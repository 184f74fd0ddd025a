"""The `minilora` command: `minilora <command> [options]` (also `python -m minilora.cli`).

Each command lives in its own module, which has two functions, and may have a third:

    add_arguments(parser)   add the command's options to its argparse parser
    run(args)               do the work; return an exit code (None means 0)
    check_arguments(args)   a usage problem that involves several options, as a message (or None)

To add a command, write such a module and add one line to COMMANDS. Only the module of the
command being run is imported, so `minilora --help` stays instant and one command's imports
(CuPy, say) never slow down or break another.

A bad option is a usage error (the usage line, the problem, exit code 2) before any work starts,
never a traceback: the option types below check single values, check_arguments the combinations.
"""

import argparse
import importlib
import math
import os
import sys

import minilora

# name -> (module, one-line description shown by `minilora --help`)
COMMANDS = {
    "demo": ("minilora.demo", "the whole story on embedded data: pretrain, fail a new task, LoRA next to full "
                              "fine-tuning, merge, save the adapter, plot"),
    "info": ("minilora.info", "versions, the compiled extension, and which backends work here (and why not)"),
    "train": ("minilora.train", "train a small GPT: two-digit addition/subtraction scored by exact match, "
                                "or a character model of Python's help texts"),
    "finetune": ("minilora.lora.finetune", "LoRA against full fine-tuning on a task the base model cannot do"),
    "bench": ("minilora.bench", "time the fused LoRA kernels on every backend against the matmul baselines"),
    "lab": ("minilora.labs.command", "gradient labs: list them, or check your backward against numerical gradients"),
    "fetch-gpt2": ("minilora.hub", "download GPT-2 (config, model.safetensors, tokenizer files) for GPT.from_pretrained"),
}


def build_parser(command=None):
    """The argument parser, with the options of `command` (a name in COMMANDS) filled in."""
    parser = argparse.ArgumentParser(
        prog="minilora", description="minilora: Low-Rank Adaptation from scratch, every line readable.")
    parser.add_argument("--version", action="version", version=f"minilora {minilora.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, (module_name, description) in COMMANDS.items():
        sub = commands.add_parser(name, help=description, description=description)
        if name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(sub)
            # usage_error: a problem found after parsing is reported with this command's usage line.
            sub.set_defaults(run=module.run, check=getattr(module, "check_arguments", None), usage_error=sub.error)
    return parser


def main(argv=None):
    """Run the command in `argv` (default: sys.argv[1:]); returns its exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # The top-level parser has no options that take a value, so the first word that is not an
    # option is the command.
    command = next((word for word in argv if not word.startswith("-")), None)
    parser = build_parser(command)
    args = parse_arguments(parser, argv, lambda args: args.check and args.check(args))
    return args.run(args) or 0


def parse_arguments(parser, argv, check=None):
    """parser.parse_args(argv), then check(args): a message it returns is a usage error (exit code
    2), as argparse gives for a bad single option."""
    args = parser.parse_args(argv)
    problem = check(args) if check is not None else None
    if problem:
        getattr(args, "usage_error", parser.error)(problem)
    return args


# ---- option types: each turns the text into a value or says what is wrong with it ---------------
def _int_at_least(low, expected):
    def option(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value
    return option


positive_int = _int_at_least(1, "a positive int")        # steps, batch size
non_negative_int = _int_at_least(0, "an int >= 0")      # a seed


def positive_number(text):
    """A finite number > 0 (a learning rate)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def output_folder(text):
    """A folder to write into: it may exist (as a folder) or not yet, but it is not a file."""
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is an existing file, not a folder; name a folder for the outputs")
    return text


def device_name(text):
    """"cpu", "cuda" or "auto" as the option's choices allow; "cuda" only where a GPU is usable."""
    if text == "cuda":
        usable, reason = minilora.backend.cuda_status()
        if not usable:
            raise argparse.ArgumentTypeError(f"cuda is not usable here ({reason}); use --device cpu "
                                             "(`minilora info` says more)")
    return text


if __name__ == "__main__":
    sys.exit(main())
