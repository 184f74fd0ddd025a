"""trainable_summary: how many numbers LoRA trains, in total and layer by layer.

    trainable params: 2,048 || all params: 9,312 || trainable: 21.99%

    layer              W (d x k)      d·k   r   r·(d+k)  r·(d+k) / d·k
    h.0.attn.q_proj    16 x 16        256   4       128         50.00%
    ...

A frozen d x k weight would need d·k trainable numbers to fine-tune; its adapter needs r·(d + k).
"""

from minilora.lora.inject import lora_layers


def trainable_summary(model, print_it=True):
    """Print (unless print_it=False) and return the summary of `model`'s trainable parameters.

    The per-layer table lists every LoRALinear with its active adapter's rank.
    """
    trainable = model.num_parameters(trainable_only=True)
    total = model.num_parameters()
    lines = [f"trainable params: {trainable:,} || all params: {total:,} || "
             f"trainable: {100.0 * trainable / max(total, 1):.2f}%"]
    counts = []  # (name, d, k, r) for each LoRA layer, r of its active adapter (0 if it has none)
    for name, layer in lora_layers(model):
        r = layer.adapters[layer.active_adapter].r if layer.active_adapter in layer.adapters else 0
        counts.append((name, layer.out_features, layer.in_features, r))
    if counts:
        rows = [(name, f"{d} x {k}", d * k, str(r), r * (d + k)) for name, d, k, r in counts]
        rows.append(("total", "", sum(row[2] for row in rows), "", sum(row[4] for row in rows)))
        rows = [(name, shape, f"{dk:,}", r, f"{lora:,}", f"{100.0 * lora / dk:.2f}%")
                for name, shape, dk, r, lora in rows]
        header = ("layer", "W (d x k)", "d·k", "r", "r·(d+k)", "r·(d+k) / d·k")
        widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
        fmt = "  ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
        lines += ["", fmt.format(*header)] + [fmt.format(*row) for row in rows]
    text = "\n".join(lines)
    if print_it:
        print(text)
    return text
