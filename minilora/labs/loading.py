"""Finding a lab's file and loading a student's file as a module, with readable errors.

The file is compiled and run in a fresh module object every time: an edited file is always read
again (no stale module, no bytecode cache written next to it), and nothing is added to sys.path
or sys.modules, so checking a file cannot change what other imports find.
"""

import importlib.util
from pathlib import Path

import minilora
from minilora.labs.errors import Failure, describe_exception


def repository_labs_folder():
    """Where tutorials/labs/ is when minilora runs from a checkout of its repository (an editable install)."""
    return Path(minilora.__file__).resolve().parent.parent / "tutorials" / "labs"


def default_lab_file(lab):
    """The path of `lab`'s file in the repository; FileNotFoundError saying how to pass one otherwise."""
    path = repository_labs_folder() / lab.file_name
    if not path.is_file():
        raise FileNotFoundError(
            f"cannot find the file of lab {lab.name!r}: {path} does not exist (minilora is not installed "
            f"from a checkout of its repository). Pass your copy of {lab.file_name}: "
            f"`minilora lab check {lab.name} --file PATH`, or minilora.labs.check({lab.name!r}, path=PATH)")
    return path


def load_module(path, module_name):
    """Run the Python file at `path` as a new module called `module_name` and return it.

    Raises FileNotFoundError when there is no such file, Failure when it does not parse or
    raises while it runs (the message names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such lab file: {path}")
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
