"""The `minilora` command: `minilora <command> [options]` (also `python -m minilora.cli`).

Each command lives in its own module, which has two functions:

    add_arguments(parser)   add the command's options to its argparse parser
    run(args)               do the work; return an exit code (None means 0)

To add a command, write such a module and add one line to COMMANDS. Only the module of the
command being run is imported, so `minilora --help` stays instant and one command's imports
(CuPy, say) never slow down or break another.
"""

import argparse
import importlib
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
            sub.set_defaults(run=module.run)
    return parser


def main(argv=None):
    """Run the command in `argv` (default: sys.argv[1:]); returns its exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # The top-level parser has no options that take a value, so the first word that is not an
    # option is the command.
    command = next((word for word in argv if not word.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    return args.run(args) or 0


if __name__ == "__main__":
    sys.exit(main())
