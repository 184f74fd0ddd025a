"""Finding a lab's file, copying it for a student to work on, and loading a student's file as a module.

A student works on a copy (`minilora lab start <name> [folder]`), never on the file in the
repository: the repository's templates stay as they are, with their TODOs.

The file is compiled and run in a fresh module object every time: an edited file is always read
again (no stale module, no bytecode cache written next to it), and nothing is added to sys.path
or sys.modules, so checking a file cannot change what other imports find.
"""

import importlib.util
import shutil
from pathlib import Path

import minilora
from minilora.labs.errors import Failure, describe_exception


def repository_labs_folder():
    """Where tutorials/labs/ is when minilora runs from a checkout of its repository (an editable install)."""
    return Path(minilora.__file__).resolve().parent.parent / "tutorials" / "labs"


def template_file(lab):
    """The path of `lab`'s template in the repository; FileNotFoundError when minilora does not run
    from a checkout of its repository."""
    path = repository_labs_folder() / lab.file_name
    if not path.is_file():
        raise FileNotFoundError(
            f"cannot find the template of lab {lab.name!r}: {path} does not exist (minilora is not installed "
            "from a checkout of its repository, where the labs live in tutorials/labs/)")
    return path


def start_lab(lab, folder="."):
    """Copy `lab`'s template into `folder` (made if missing) and return the new file's path.
    FileExistsError rather than overwriting a file already there (a student's work)."""
    source = template_file(lab)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"folder must be a folder, got the file {folder}")
    target = folder / lab.file_name
    if target.exists():
        raise FileExistsError(f"{target} already exists: it may hold your work, so it is left as it is "
                              f"(check it with `minilora lab check {lab.name} --file {target}`)")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def default_lab_file(lab):
    """`lab`'s file in the current folder (where `minilora lab start` puts it); FileNotFoundError
    saying how to get one otherwise."""
    path = Path(lab.file_name)
    if not path.is_file():
        raise FileNotFoundError(
            f"there is no {lab.file_name} in this folder ({Path.cwd()}): copy the lab here with "
            f"`minilora lab start {lab.name}`, or name your file: `minilora lab check {lab.name} --file PATH` "
            f"(minilora.labs.check({lab.name!r}, path=PATH))")
    return path


def check_lab_file(path):
    """`path` as a Path; FileNotFoundError unless it names a file (a folder is named as one)."""
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"{path} is a folder, expected a lab's .py file in it (the "
                                "lab<N>_<name>.py that `minilora lab start` writes)")
    if not path.is_file():
        raise FileNotFoundError(f"no such lab file: {path}")
    return path


def load_module(path, module_name):
    """Run the Python file at `path` as a new module called `module_name` and return it.

    Raises FileNotFoundError when there is no such file, Failure when it does not parse or
    raises while it runs (the message names the line).
    """
    path = check_lab_file(path)
    source = path.read_text(encoding="utf-8")
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as error:
        raise Failure(_describe_syntax_error(path, error)) from None
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        exec(code, module.__dict__)
    except Exception as error:  # any error in the student's top-level code is reported, not raised
        raise Failure(f"{path.name} could not be run: {describe_exception(error, path)}") from None
    return module


def _describe_syntax_error(path, error):
    lines = [f"{path.name} has a syntax error at line {error.lineno}: {error.msg}"]
    if error.text:
        text = error.text.rstrip("\n")
        lines.append(f"    {text.strip()}")
        if error.offset:
            # Put the caret under the offending character of the stripped line.
            indent = len(text) - len(text.lstrip())
            lines.append("    " + " " * max(error.offset - 1 - indent, 0) + "^")
    return "\n".join(lines)
