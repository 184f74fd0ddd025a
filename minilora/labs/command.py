"""`minilora lab`: list the gradient labs, or check a student's file of one.

    minilora lab list
    minilora lab check <name> [--file PATH] [--seed N]

check prints one line per check (PASS or FAIL, in plain words) and exits with 0 when every check
passes, 1 otherwise (also for an unknown lab or a missing file, with the reason on stderr).
"""

import sys

from minilora.labs.checker import check
from minilora.labs.loading import repository_labs_folder
from minilora.labs.registry import LABS


def add_arguments(parser):
    actions = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    actions.add_parser("list", help="the labs, their files and the functions to write")
    checking = actions.add_parser("check", help="check your file of a lab: gradients against numerical ones")
    checking.add_argument("name", help=f"the lab: {', '.join(LABS)}")
    checking.add_argument("--file", metavar="PATH",
                          help="the file to check (default: the lab's file in the repository's tutorials/labs/)")
    checking.add_argument("--seed", type=int, metavar="N",
                          help="seed of the random shapes and values (default: a fresh one, shown in the report)")


def run(args):
    if args.action == "list":
        for line in list_lines():
            print(line)
        return 0
    try:
        result = check(args.name, path=args.file, seed=args.seed)
    except (ValueError, FileNotFoundError) as error:
        print(f"minilora lab check: {error}", file=sys.stderr)
        return 1
    print(result.report())
    return 0 if result.ok else 1


def list_lines():
    """`minilora lab list`'s output, one string per line."""
    folder = repository_labs_folder()
    lines = []
    for lab in LABS.values():
        functions = ", ".join(f.name for f in lab.functions)
        lines += [f"{lab.number}. {lab.name:<11} {lab.title}",
                  f"   file {lab.file_name}, write: {functions}"]
    lines += ["",
              f"files: {folder}" if folder.is_dir() else "files: tutorials/labs/ in minilora's repository",
              "check one: minilora lab check <name> [--file PATH] [--seed N]"]
    return lines
