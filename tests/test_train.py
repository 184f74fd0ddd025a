"""The training loop: it lowers the loss, trains only what requires grad, records a history that
plots, stops on NaN/inf naming the step, checkpoints; and a character model of the pydoc texts gets
below the text's unigram entropy in a short run."""

import json

import numpy as np
import pytest

import minilora
from minilora.checkpoint import load_checkpoint, read_checkpoint
from minilora.data import TaskDataset, TextCorpus, get_task
from minilora.nn import GPT, GPTConfig
from minilora.plot import plot_history
from minilora.train import HISTORY_KEYS, TrainConfig, TrainingDiverged, main, mean_loss, save_history, text_run, train

TASK = get_task("add", digits=1)   # "7+9=16.": 100 examples, a model of a few thousand parameters


def tiny_gpt(seed=0, vocab_size=14, block_size=6):
    minilora.random.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=1, n_head=2, n_embd=16))


def dataset():
    return TaskDataset(TASK, seed=0, val_size=20)


def batches_of(ds):
    return lambda batch_size, rng: ds.get_batch("train", batch_size, rng)


def test_training_lowers_the_loss_and_records_a_history():
    ds, model = dataset(), tiny_gpt()
    val_before = mean_loss(model, ds.batches("val", 8))
    config = TrainConfig(steps=60, batch_size=16, lr=1e-2, warmup_steps=5, eval_every=25)
    history = train(model, batches_of(ds), config, quiet=True,
                    evaluate=lambda m: {"val_loss": mean_loss(m, ds.batches("val", 8)), "accuracy": 0.5})
    assert tuple(history) == HISTORY_KEYS
    assert history["step"] == [25, 50, 60]
    assert all(len(values) == 3 for values in history.values())
    assert history["accuracy"] == [0.5, 0.5, 0.5]
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert history["val_loss"][-1] < 0.7 * val_before
    assert history["time"] == sorted(history["time"])
    # lr: the cosine after warm-up, read at the step each row was recorded
    assert history["lr"][0] == pytest.approx(1e-2 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 19 / 55))))
    assert model.training


def test_the_history_row_averages_the_losses_since_the_previous_row():
    losses = iter([3.0, 1.0, 2.0, 4.0, 5.0])

    class Constant(minilora.nn.Module):
        """A model whose loss is a given number (times a parameter fixed at 1 by lr=0)."""

        def __init__(self):
            super().__init__()
            self.scale = minilora.nn.Parameter(np.ones(1, dtype=np.float32))

        def forward(self, idx, targets):
            return None, (self.scale * float(next(losses))).sum()

    history = train(Constant(), lambda b, rng: (np.zeros((b, 1), np.int64),) * 2,
                    TrainConfig(steps=5, lr=0.0, warmup_steps=0, eval_every=2), quiet=True)
    assert history["train_loss"] == [2.0, 3.0, 5.0]
    assert history["val_loss"] == [None, None, None]


def test_only_parameters_that_require_grad_change():
    ds, model = dataset(), tiny_gpt()
    frozen = {n: p.numpy().copy() for n, p in model.named_parameters() if not n.startswith("h.0.mlp")}
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("h.0.mlp")
    train(model, batches_of(ds), TrainConfig(steps=5, batch_size=8, warmup_steps=0), quiet=True)
    params = dict(model.named_parameters())
    assert all(np.array_equal(params[n].numpy(), v) for n, v in frozen.items())
    assert not np.array_equal(params["h.0.mlp.fc_in.weight"].numpy(), tiny_gpt().h[0].mlp.fc_in.weight.numpy())


def test_weight_decay_applies_to_matrices_only():
    from minilora.train import parameter_groups

    model = tiny_gpt()
    groups = parameter_groups(model.parameters(), 0.1)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert {p.ndim for p in groups[0]["params"]} == {2} and {p.ndim for p in groups[1]["params"]} == {1}


def test_same_seed_same_run():
    ds = dataset()
    config = TrainConfig(steps=8, batch_size=8, warmup_steps=2, eval_every=4, seed=3)
    a = train(tiny_gpt(), batches_of(ds), config, quiet=True)
    b = train(tiny_gpt(), batches_of(ds), config, quiet=True)
    assert a["train_loss"] == b["train_loss"]


def test_nan_loss_stops_training_and_names_the_step():
    ds, model = dataset(), tiny_gpt()
    calls = []

    def poisoned(batch_size, rng):
        calls.append(1)
        if len(calls) == 7:  # the weights go bad before step 7's forward
            model.wte.weight.data[...] = np.nan
        return ds.get_batch("train", batch_size, rng)

    with pytest.raises(TrainingDiverged, match=r"training stopped at step 7 of 20: the loss is nan") as info:
        train(model, poisoned, TrainConfig(steps=20, batch_size=4, warmup_steps=0, eval_every=5), quiet=True)
    assert info.value.history["step"] == [5]


def test_a_huge_learning_rate_without_clipping_ends_in_a_clear_error():
    ds, model = dataset(), tiny_gpt()
    config = TrainConfig(steps=50, batch_size=8, lr=1e6, warmup_steps=0, grad_clip=None)
    with np.errstate(all="ignore"), pytest.raises(TrainingDiverged, match=r"training stopped at step \d+ of 50: "
                                                                           r"the loss is (nan|inf)"):
        train(model, batches_of(ds), config, quiet=True)


def test_checkpoints_every_n_steps_and_at_the_end(tmp_path):
    ds, model = dataset(), tiny_gpt()
    path = str(tmp_path / "ckpt.npz")
    saved_steps = []

    def evaluate(m):
        try:
            saved_steps.append(read_checkpoint(path).extra["step"])
        except FileNotFoundError:
            saved_steps.append(None)
        return {}

    train(model, batches_of(ds), TrainConfig(steps=10, batch_size=4, warmup_steps=0, eval_every=1),
          evaluate=evaluate, checkpoint_path=path, checkpoint_every=4, checkpoint_extra={"task": "add"}, quiet=True)
    # evaluate runs before the checkpoint of the same step is written
    assert saved_steps == [None, None, None, None, 4, 4, 4, 4, 8, 8]
    extra = read_checkpoint(path).extra
    assert extra["step"] == 10 and extra["task"] == "add" and extra["history"]["step"] == list(range(1, 11))
    restored = load_checkpoint(path)
    for name, array in model.state_dict().items():
        assert restored.state_dict()[name].tobytes() == array.tobytes()


def test_mean_loss_is_the_mean_over_every_answer_position():
    ds, model = dataset(), tiny_gpt()
    got = mean_loss(model, ds.batches("val", 7))
    logits = model(ds.inputs["val"])[0].numpy().astype(np.float64)           # (N, T, V)
    targets = ds.targets["val"]
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    keep = targets != -1
    picked = np.take_along_axis(log_probs, np.where(keep, targets, 0)[..., None], axis=-1)[..., 0]
    assert got == pytest.approx(-picked[keep].mean(), rel=1e-5)


@pytest.mark.parametrize("kwargs, error, fragment", [
    (dict(steps=0), ValueError, "steps must be a positive int"),
    (dict(steps=10, warmup_steps=11), ValueError, r"warmup_steps must be an int in \[0, steps=10\]"),
    (dict(warmup_steps=True), ValueError, "warmup_steps must be an int >= 0, got True"),
    (dict(grad_clip=0.0), ValueError, r"grad_clip must be > 0.0, got 0.0"),
    (dict(grad_clip="1"), TypeError, "grad_clip must be a number, got str '1'"),
    (dict(grad_clip=float("nan")), ValueError, "grad_clip must be a number"),
    (dict(eval_every=1.5), ValueError, "eval_every must be a positive int"),
    (dict(lr=-0.1), ValueError, r"lr must be >= 0.0, got -0.1"),
    (dict(lr=float("nan")), ValueError, "lr must be a finite number"),
    (dict(lr="3e-3"), TypeError, "lr must be a number, got str '3e-3'"),
    (dict(weight_decay=-1), ValueError, r"weight_decay must be >= 0.0, got -1"),
    (dict(min_lr_ratio=1.5), ValueError, r"min_lr_ratio must be in \[0, 1\], got 1.5"),
    (dict(min_lr_ratio=None), TypeError, "min_lr_ratio must be a number, got NoneType None"),
    (dict(seed=-1), ValueError, "seed must be an int >= 0, got -1"),
    (dict(seed=1.5), ValueError, "seed must be an int >= 0, got 1.5"),
])
def test_bad_train_config(kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        TrainConfig(**kwargs)


@pytest.mark.parametrize("result, error, fragment", [
    (None, TypeError, r"evaluate\(model\) must return a dict \{name: number\}, got NoneType None"),
    ({"lr": 1.0, "val_loss": 2.0}, ValueError,
     r"evaluate\(model\) returned \['lr'\], which the loop records itself \(step, train_loss, lr, time\)"),
    ({"step": 3}, ValueError, r"returned \['step'\], which the loop records itself"),
    ({"val_loss": "low"}, TypeError, r"must return a dict \{name \(str\): number\}, got 'val_loss': 'low'"),
])
def test_a_bad_evaluate_result_is_named(result, error, fragment):
    config = TrainConfig(steps=2, batch_size=4, warmup_steps=0)
    with pytest.raises(error, match=fragment):
        train(tiny_gpt(), batches_of(dataset()), config, evaluate=lambda m: result, quiet=True)


def test_a_nan_evaluation_is_kept_and_written_as_null(tmp_path):
    path = str(tmp_path / "ckpt.npz")
    history = train(tiny_gpt(), batches_of(dataset()), TrainConfig(steps=2, batch_size=4, warmup_steps=0, eval_every=1),
                    evaluate=lambda m: {"val_loss": float("nan"), "accuracy": np.float32(0.5)},
                    checkpoint_path=path, quiet=True)
    assert np.isnan(history["val_loss"]).all() and history["accuracy"] == [0.5, 0.5]
    assert read_checkpoint(path).extra["history"]["val_loss"] == [None, None]

    def no_bare_nan(name):
        raise AssertionError(f"invalid JSON: {name}")

    text = save_history(history, tmp_path / "h.json").read_text()
    assert json.loads(text, parse_constant=no_bare_nan)["val_loss"] == [None, None]


def test_an_infinite_gradient_stops_training_and_names_the_step():
    class SquareRoot(minilora.nn.Module):
        """loss = sqrt(w) at w = 0: a finite loss (0) whose gradient, 1 / (2·sqrt(w)), is inf."""

        def __init__(self):
            super().__init__()
            self.w = minilora.nn.Parameter(np.zeros(1, dtype=np.float32))

        def forward(self, idx, targets):
            return None, (self.w ** 0.5).sum()

    with np.errstate(divide="ignore"), pytest.raises(
            TrainingDiverged, match=r"training stopped at step 1 of 3: the gradients hold inf or NaN: "
                                    r"the grad of parameter 0 \(shape \(1,\)\)"):
        train(SquareRoot(), lambda b, rng: (np.zeros((b, 1), np.int64),) * 2,
              TrainConfig(steps=3, warmup_steps=0), quiet=True)


def test_nothing_to_train_is_an_error():
    model = tiny_gpt().requires_grad_(False)
    with pytest.raises(ValueError, match="no parameter with requires_grad=True"):
        train(model, batches_of(dataset()), TrainConfig(steps=1, warmup_steps=0), quiet=True)


def test_plot_writes_a_png(tmp_path):
    import matplotlib.pyplot as plt

    history = {"step": [10, 20, 30], "train_loss": [2.0, 1.0, 0.5], "val_loss": [2.1, None, 0.7],
               "accuracy": [0.1, 0.5, 0.9], "lr": [1e-3, 5e-4, 1e-4], "time": [1.0, 2.0, 3.0]}
    path = plot_history(history, tmp_path / "plots" / "h.png", title="t", reference=("unigram entropy", 3.0))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    image = plt.imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert plt.get_fignums() == []   # drawn without pyplot: no figure left open
    text_only = {k: v for k, v in history.items() if k != "accuracy"}
    plot_history(text_only, tmp_path / "lr.png")


def test_plot_rejects_an_empty_history(tmp_path):
    with pytest.raises(ValueError, match="no rows to plot"):
        plot_history({"step": []}, tmp_path / "x.png")


def test_save_history_round_trips_as_json(tmp_path):
    history = {"step": [1], "train_loss": [0.5], "val_loss": [None]}
    path = save_history(history, tmp_path / "h.json")
    assert json.loads(path.read_text()) == history


def test_a_short_character_model_gets_clearly_below_the_unigram_entropy():
    """The acceptance check in miniature: a 1-layer, 32-wide model, 100 steps (seconds on a CPU)."""
    corpus = TextCorpus.from_pydoc()
    entropy = corpus.unigram_entropy()
    model_config = GPTConfig(vocab_size=corpus.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=32)
    model, history, _ = text_run(TrainConfig(steps=100, batch_size=32, lr=1e-2, warmup_steps=10, eval_every=100),
                                 quiet=True, val_batches=4, model_config=model_config)
    assert 3.0 < entropy < 3.5            # English text with code: about 3.25 nats per character
    assert history["val_loss"][-1] < entropy - 0.5
    text = corpus.tokenizer.decode(model.generate(corpus.tokenizer.encode("The ")[None], 40).numpy()[0])
    assert text.startswith("The ") and len(text) == 44


def test_the_command_trains_evaluates_and_writes_its_files(tmp_path, capsys):
    code = main(["--task", "sub", "--steps", "3", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "held-out exact match:" in out and "of 1000 examples" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json", "history.png", "model.npz"]
    assert read_checkpoint(tmp_path / "model.npz").extra["task"] == "sub"
    assert json.loads((tmp_path / "history.json").read_text())["step"] == [3]


@pytest.mark.gpu
def test_training_on_the_gpu_lowers_the_loss(cuda_device):
    ds = dataset()
    model = tiny_gpt().to(device=cuda_device)
    history = train(model, batches_of(ds), TrainConfig(steps=30, batch_size=16, lr=1e-2, warmup_steps=3,
                                                        eval_every=10), quiet=True,
                    evaluate=lambda m: {"accuracy": ds.exact_match(m, "val")})
    assert model.wte.weight.device == "cuda"
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert all(0.0 <= a <= 1.0 for a in history["accuracy"])
