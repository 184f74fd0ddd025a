"""Drawing a training history (minilora.train's dict of lists) to a PNG, without a screen.

    plot_history(history, "runs/add/history.png")

Left: train and validation loss against the step (log scale: late progress stays visible).
Right: every accuracy-like metric in percent, when the history has one; otherwise the learning rate.
Rows where a value is None (a metric not measured at that step) are skipped.
"""

# Figure without pyplot draws with matplotlib's Agg renderer straight to a file: no screen needed
# (a server, CI), and no global backend switched under a notebook that has its own.
from matplotlib.figure import Figure

from minilora.io import atomic_write


def plot_history(history, path, title=None, reference=None):
    """Write a PNG of `history` to `path` (atomically) and return path.

    reference: optional (label, value) drawn as a horizontal line on the loss plot, e.g.
    ("unigram entropy", 3.25) for a character model.
    """
    if not isinstance(history, dict) or "step" not in history:
        raise ValueError("history must be the dict of lists returned by minilora.train.train "
                         f"(with a 'step' list), got {type(history).__name__}")
    if not history["step"]:
        raise ValueError("history has no rows to plot (train() records one every eval_every steps)")
    accuracy_keys = [k for k in history if "accuracy" in k and _points(history, k)[0]]
    fig = Figure(figsize=(11, 4))
    loss_ax, right_ax = fig.subplots(1, 2)

    for key in ("train_loss", "val_loss"):
        steps, values = _points(history, key)
        if steps:
            loss_ax.plot(steps, values, marker="o", markersize=3, label=key.replace("_", " "))
    if reference is not None:
        label, value = reference
        loss_ax.axhline(value, color="gray", linestyle="--", label=label)
    loss_ax.set(xlabel="step", ylabel="loss (nats per token)", yscale="log", title="loss")
    loss_ax.legend()

    if accuracy_keys:
        for key in accuracy_keys:
            steps, values = _points(history, key)
            right_ax.plot(steps, [100 * v for v in values], marker="o", markersize=3, label=key.replace("_", " "))
        right_ax.set(xlabel="step", ylabel="exact match (%)", ylim=(0, 100), title="held-out accuracy")
        right_ax.legend()
    else:
        steps, values = _points(history, "lr")
        right_ax.plot(steps, values, marker="o", markersize=3)
        right_ax.set(xlabel="step", ylabel="learning rate", title="learning rate")
    for ax in (loss_ax, right_ax):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)


def save_png(fig, path):
    """Write matplotlib Figure `fig` to `path` as a PNG, atomically; return path."""
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)
    return path


def _points(history, key):
    """(steps, values) of the rows where history[key] has a value."""
    pairs = [(s, v) for s, v in zip(history["step"], history.get(key, [])) if v is not None]
    return [s for s, _ in pairs], [v for _, v in pairs]
