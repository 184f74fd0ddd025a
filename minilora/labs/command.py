"""`minilora lab`: list the gradient labs, start one, check a student's file, grade many.

    minilora lab list
    minilora lab start <name> [FOLDER]
    minilora lab check <name> [--file PATH] [--seed N] [--timeout S]
    minilora lab grade <name> <files or folders>... [--seed N] [--timeout S] [--json FILE]

start copies the lab's file into FOLDER (default: here), never over an existing file. check
prints one line per check (PASS or FAIL, in plain words); grade prints one line per file and
writes a JSON record per file and part. Both exit with 0 when every check passes, 1 otherwise
(also for an unknown lab or a missing file, with the reason on stderr).
"""

import sys

from minilora.labs import grading
from minilora.labs.checker import check, choose_seed
from minilora.labs.loading import repository_labs_folder, start_lab
from minilora.labs.registry import LABS, get_lab
from minilora.labs.sandbox import DEFAULT_TIMEOUT_S


def add_arguments(parser):
    actions = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    actions.add_parser("list", help="the labs, their files and the functions to write")
    starting = actions.add_parser("start", help="copy a lab's file into your folder, to work on it there")
    starting.add_argument("name", help=f"the lab: {', '.join(LABS)}")
    starting.add_argument("folder", nargs="?", default=".", help="where to put it (default: this folder)")

    checking = actions.add_parser("check", help="check your file of a lab: gradients against numerical ones")
    checking.add_argument("name", help=f"the lab: {', '.join(LABS)}")
    checking.add_argument("--file", metavar="PATH",
                          help="the file to check (default: the lab's file in this folder, from `lab start`)")
    _add_seed_and_timeout(checking)

    grading_ = actions.add_parser("grade", help="check many students' files of a lab: one line each, JSON records")
    grading_.add_argument("name", help=f"the lab: {', '.join(LABS)}")
    grading_.add_argument("sources", nargs="+", metavar="FILE_OR_FOLDER",
                          help="students' files, or folders holding them (every .py file under a folder)")
    grading_.add_argument("--json", metavar="FILE", help="write a record per file and part to FILE")
    _add_seed_and_timeout(grading_)


def _add_seed_and_timeout(parser):
    parser.add_argument("--seed", type=int, metavar="N",
                        help="seed of the random shapes and values (default: a fresh one, shown in the report)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                        help=f"seconds a file may take before it is stopped (default {DEFAULT_TIMEOUT_S:g})")


def run(args):
    if args.action == "list":
        for line in list_lines():
            print(line)
        return 0
    try:
        return {"start": _start, "check": _check, "grade": _grade}[args.action](args)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as error:
        print(f"minilora lab {args.action}: {error}", file=sys.stderr)
        return 1


def _start(args):
    lab = get_lab(args.name)
    path = start_lab(lab, args.folder)
    print(f"copied lab {lab.number} ({lab.name}) to {path}: fill in its TODOs there, then check it with\n"
          f"    minilora lab check {lab.name} --file {path}")
    return 0


def _check(args):
    result = check(args.name, path=args.file, seed=args.seed, timeout=args.timeout)
    print(result.report())
    return 0 if result.ok else 1


def _grade(args):
    seed = choose_seed(args.seed)
    records, passed, files = [], 0, 0
    for path, result in grading.grade(args.name, args.sources, seed, timeout=args.timeout):
        file_records = grading.part_records(path, result)
        print(grading.summary_line(path, file_records), flush=True)
        records += file_records
        passed, files = passed + result.ok, files + 1
    print(f"{passed} of {files} files passed every check (lab {args.name}, seed {seed}); the same inputs "
          f"again: --seed {seed}")
    if args.json:
        grading.write_records(args.json, records)
        print(f"records: {args.json}")
    return 0 if passed == files else 1


def list_lines():
    """`minilora lab list`'s output, one string per line."""
    folder = repository_labs_folder()
    lines = []
    for lab in LABS.values():
        functions = ", ".join(f.name for f in lab.functions)
        lines += [f"{lab.number}. {lab.name:<13} {lab.title}",
                  f"   file {lab.file_name}, write: {functions}"]
    lines += ["",
              f"files: {folder}" if folder.is_dir() else "files: tutorials/labs/ in minilora's repository",
              "start one: minilora lab start <name> [FOLDER]    (copies its file there)",
              "check it:  minilora lab check <name> [--file PATH] [--seed N]"]
    return lines
