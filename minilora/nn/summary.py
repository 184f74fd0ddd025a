"""ParameterTable: where a model's parameters live, one row per module that owns some.

    print(model.parameter_table())

    module               type          parameters   trainable
    wte                  Embedding          4,096       4,096
    h.0.attn.q_proj      Linear             1,056       1,056
    ...
    total                                  80,448      80,448

The LoRA tutorial prints it before and after `apply_lora` to show how few numbers are trained.
"""

import collections

Row = collections.namedtuple("Row", ["module", "type", "parameters", "trainable"])


class ParameterTable:
    """rows: a list of Row(module, type, parameters, trainable); total and trainable: ints."""

    def __init__(self, rows):
        self.rows = rows
        self.total = sum(r.parameters for r in rows)
        self.trainable = sum(r.trainable for r in rows)

    @classmethod
    def of(cls, model):
        rows, seen = [], set()
        for name, module in model.named_modules():
            # A parameter shared by two modules is counted once, at the first.
            own = [p for _, p in module.named_parameters(recurse=False) if id(p) not in seen]
            seen.update(id(p) for p in own)
            if own:
                rows.append(Row(name or "(root)", type(module).__name__, sum(p.size for p in own),
                                sum(p.size for p in own if p.requires_grad)))
        return cls(rows)

    def __str__(self):
        header = ("module", "type", "parameters", "trainable")
        body = [(r.module, r.type, f"{r.parameters:,}", f"{r.trainable:,}") for r in self.rows]
        body.append(("total", "", f"{self.total:,}", f"{self.trainable:,}"))
        widths = [max(len(line[i]) for line in [header] + body) for i in range(4)]

        def fmt(line):
            return (f"{line[0]:<{widths[0]}}  {line[1]:<{widths[1]}}  "
                    f"{line[2]:>{widths[2]}}  {line[3]:>{widths[3]}}")

        return "\n".join([fmt(header)] + [fmt(line) for line in body])

    __repr__ = __str__
