"""The labs, in course order, and finding one by name.

Every module in minilora/labs/specs/ that defines LAB is a lab: to add one, write its spec there
(tutorials/labs/AUTHORING.md says every step). They are ordered by Lab.number.
"""

import importlib
import pkgutil

from minilora.labs import specs


def discover():
    """{name: Lab} of every spec module, in the order of their numbers; ValueError when two labs
    share a name or a number."""
    found = []
    for info in pkgutil.iter_modules(specs.__path__):
        module = importlib.import_module(f"{specs.__name__}.{info.name}")
        if hasattr(module, "LAB"):
            found.append(module.LAB)
    found.sort(key=lambda lab: lab.number)
    for kind in ("name", "number"):
        values = [getattr(lab, kind) for lab in found]
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"two labs in minilora/labs/specs share the {kind} {repeated[0]!r}")
    return {lab.name: lab for lab in found}


LABS = discover()


def get_lab(name):
    """The Lab called `name`; a ValueError listing the labs when there is none."""
    if name not in LABS:
        raise ValueError(f"unknown lab {name!r}; the labs are: {', '.join(LABS)}")
    return LABS[name]
