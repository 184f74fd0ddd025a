"""Synthetic tasks: exact answers, fixed lengths, seeded disjoint splits, answer-only targets, and
exact-match scoring by greedy generation."""

import numpy as np
import pytest

from minilora.data import ALPHABET, TaskDataset, get_task


def test_examples_are_exact_and_fixed_length():
    add, sub = get_task("add"), get_task("sub")
    assert add.example(37 * 100 + 25) == "37+25=062."
    assert add.example(99 * 100 + 99) == "99+99=198."
    assert add.example(5) == "00+05=005."
    assert sub.example(37 * 100 + 25) == "37-25=+12."
    assert sub.example(25 * 100 + 37) == "25-37=-12."
    assert sub.example(42 * 100 + 42) == "42-42=+00."
    for task in (add, sub):
        assert {len(task.example(i)) for i in range(0, task.num_examples, 37)} == {task.length}


def test_every_answer_is_right_by_plain_arithmetic():
    for i in range(0, 10_000, 13):
        a, b = divmod(i, 100)
        add, sub = get_task("add").example(i), get_task("sub").example(i)
        assert int(add[6:9]) == a + b
        assert int(sub[6:9]) == a - b
        assert add[:6] == f"{a:02d}+{b:02d}=" and sub[:6] == f"{a:02d}-{b:02d}="


def test_coded_addition_writes_each_operand_digit_d_as_9_minus_d():
    coded = get_task("coded")
    assert coded.example(37 * 100 + 25) == "62+74=062."
    assert coded.example(5) == "99+94=005."
    assert get_task("coded", digits=1).example(79) == "2+0=16."
    for i in range(0, 10_000, 7):
        a, b = divmod(i, 100)
        example = coded.example(i)
        # the operands decoded digit by digit give back a and b; the answer is the plain sum
        decoded = ["".join(str(9 - int(c)) for c in example[k:k + 2]) for k in (0, 3)]
        assert [int(d) for d in decoded] == [a, b]
        assert example[2] == "+" and example[5] == "=" and int(example[6:9]) == a + b
        assert len(example) == coded.length == get_task("add").length


def test_coded_prompts_differ_from_plain_ones_unless_every_digit_is_its_own_code():
    add, coded = get_task("add"), get_task("coded")
    # no digit equals 9 - itself, so every coded prompt differs from the plain one
    assert all(add.prompt(i) != coded.prompt(i) for i in range(add.num_examples))


def test_fine_tuning_answers_differ_from_pretraining_answers_for_the_same_operands():
    add, sub = get_task("add"), get_task("sub")
    for i in range(add.num_examples):
        assert add.answer(*add.operands(i)) != sub.answer(*sub.operands(i))


def test_one_digit_tasks_and_bad_names():
    assert get_task("add", digits=1).example(79) == "7+9=16."
    assert get_task("sub", digits=1).num_examples == 100
    with pytest.raises(ValueError, match="unknown task 'mul'"):
        get_task("mul")
    with pytest.raises(ValueError, match=r"digits must be an int in \[1, 4\], got 0"):
        get_task("add", digits=0)


def test_splits_are_disjoint_and_deterministic_per_seed():
    a = TaskDataset(get_task("add"), seed=3, val_size=500)
    b = TaskDataset(get_task("add"), seed=3, val_size=500)
    c = TaskDataset(get_task("add"), seed=4, val_size=500)
    assert len(a.example_ids["val"]) == 500 and len(a.example_ids["train"]) == 9500
    assert not set(a.example_ids["val"]) & set(a.example_ids["train"])
    np.testing.assert_array_equal(a.inputs["train"], b.inputs["train"])
    assert not np.array_equal(a.example_ids["val"], c.example_ids["val"])


def test_both_tasks_hold_out_the_same_operand_pairs_for_a_seed():
    add = TaskDataset(get_task("add"), seed=1, val_size=300)
    sub = TaskDataset(get_task("sub"), seed=1, val_size=300)
    np.testing.assert_array_equal(add.example_ids["val"], sub.example_ids["val"])


def test_inputs_and_targets_train_only_on_the_answer():
    ds = TaskDataset(get_task("add"), seed=0, val_size=10, train_size=20)
    tok = ds.tokenizer
    assert tok.chars == ALPHABET
    for split in ("train", "val"):
        for row, i in enumerate(ds.example_ids[split]):
            text = ds.task.example(i)                      # e.g. "37+25=062."
            assert tok.decode(ds.inputs[split][row]) == text[:-1]
            targets = ds.targets[split][row]
            assert list(targets[:5]) == [-1] * 5           # next characters inside the prompt
            assert tok.decode(targets[5:]) == text[6:]     # the answer and the end marker


def test_get_batch_draws_rows_of_the_split_reproducibly():
    ds = TaskDataset(get_task("sub"), seed=0, val_size=50, train_size=200)
    idx, targets = ds.get_batch("train", 16, np.random.default_rng(7))
    idx2, _ = ds.get_batch("train", 16, np.random.default_rng(7))
    assert idx.shape == targets.shape == (16, 9) and idx.dtype == targets.dtype == np.int64
    np.testing.assert_array_equal(idx, idx2)
    train_rows = {tuple(r) for r in ds.inputs["train"]}
    assert all(tuple(r) in train_rows for r in idx)


def test_batches_cover_the_split_once():
    ds = TaskDataset(get_task("add"), seed=0, val_size=25, train_size=10)
    batches = list(ds.batches("val", 10))
    assert [len(i) for i, _ in batches] == [10, 10, 5]
    np.testing.assert_array_equal(np.concatenate([i for i, _ in batches]), ds.inputs["val"])


def test_bad_sizes_and_splits():
    with pytest.raises(ValueError, match="has 10000 examples"):
        TaskDataset(get_task("add"), val_size=9000, train_size=2000)
    ds = TaskDataset(get_task("add", digits=1), val_size=10)
    with pytest.raises(ValueError, match="split must be 'train' or 'val', got 'test'"):
        ds.get_batch("test", 4, np.random.default_rng(0))


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(val_size=None), "val_size must be a positive int, got None"),
    (dict(val_size=10.5), "val_size must be a positive int, got 10.5"),
    (dict(val_size=10, train_size=2.0), "train_size must be a positive int, got 2.0"),
    (dict(val_size=100), "val_size=100 and train_size=0 must each be >= 1"),
])
def test_bad_dataset_sizes_are_named(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        TaskDataset(get_task("add", digits=1), **kwargs)


def test_bad_batch_arguments_are_refused_at_the_call():
    ds = TaskDataset(get_task("add", digits=1), val_size=10)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        ds.batches("val", 0)  # not only once the batches are iterated
    with pytest.raises(ValueError, match="batch_size must be a positive int, got -1"):
        ds.get_batch("train", -1, np.random.default_rng(0))
    with pytest.raises(TypeError, match=r"rng must be a numpy.random.Generator .*, got int"):
        ds.get_batch("train", 4, 0)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(limit=0), "limit must be a positive int, got 0"),
    (dict(limit=-1), "limit must be a positive int, got -1"),
    (dict(batch_size=0), "batch_size must be a positive int, got 0"),
])
def test_bad_scoring_arguments_are_named(kwargs, fragment):
    ds = TaskDataset(get_task("add", digits=1), val_size=10)
    model = AnswerKey(lambda prompt: "000.")
    with pytest.raises(ValueError, match=fragment):
        ds.score(model, **kwargs)
    with pytest.raises(ValueError, match=fragment):
        ds.exact_match(model, **kwargs)
    assert model.calls == []


class AnswerKey:
    """A stand-in model whose generate() writes the given answer after each prompt, so the scoring
    can be checked against answers known to be right or wrong."""

    def __init__(self, answer_of):
        self.answer_of = answer_of
        self.calls = []

    def generate(self, idx, max_new_tokens, temperature):
        from minilora import tensor
        from minilora.data import CharTokenizer

        tok = CharTokenizer(ALPHABET)
        self.calls.append((len(idx), max_new_tokens, temperature))
        rows = [tok.encode(tok.decode(row) + self.answer_of(tok.decode(row))) for row in np.asarray(idx)]
        return tensor(np.stack(rows))


def test_exact_match_counts_whole_answers_in_batches():
    ds = TaskDataset(get_task("add"), seed=0, val_size=40)

    def half_right(prompt):
        a, b = int(prompt[:2]), int(prompt[3:5])
        right = f"{a + b:03d}."
        # wrong in one character (the end marker) for odd a: a partly right answer is still wrong
        return right if a % 2 == 0 else right[:-1] + "="

    model = AnswerKey(half_right)
    _, correct = ds.score(model, "val", batch_size=16)
    expected = [int(ds.task.operands(i)[0]) % 2 == 0 for i in ds.example_ids["val"]]
    np.testing.assert_array_equal(correct, expected)
    assert [c[0] for c in model.calls] == [16, 16, 8]
    assert all(c[1:] == (4, 0) for c in model.calls)       # 4 new tokens, greedy
    assert ds.exact_match(model, "val", limit=10) == pytest.approx(np.mean(expected[:10]))


def test_score_matches_greedy_decoding_one_example_at_a_time():
    import minilora
    from minilora.nn import GPT, GPTConfig

    ds = TaskDataset(get_task("add", digits=1), seed=0, val_size=12)
    minilora.random.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(ALPHABET), block_size=ds.task.length - 1, n_layer=1, n_head=2, n_embd=16))
    answers, _ = ds.score(model, "val", batch_size=5)
    for row, i in enumerate(ds.example_ids["val"]):
        ids = list(ds.tokenizer.encode(ds.task.prompt(i)))
        for _ in range(ds.task.answer_length):
            logits, _ = model(np.array([ids]))
            ids.append(int(np.argmax(logits.numpy()[0, -1])))
        assert answers[row] == ds.tokenizer.decode(ids[ds.task.prompt_length:])
