"""The labs, in course order, and finding one by name. To add a lab, write its spec in specs/ and list it here."""

from minilora.labs.specs import layer_norm, lora, matmul, softmax

LABS = {lab.name: lab for lab in (matmul.LAB, softmax.LAB, layer_norm.LAB, lora.LAB)}


def get_lab(name):
    """The Lab called `name`; a ValueError listing the labs when there is none."""
    if name not in LABS:
        raise ValueError(f"unknown lab {name!r}; the labs are: {', '.join(LABS)}")
    return LABS[name]
