"""Synthetic tasks with exact answers: two-digit addition (to pretrain), and two related tasks that
a model pretrained on addition fails (to fine-tune on).

Each example is one string "prompt=answer." of fixed length, over one shared alphabet, so a single
tokenizer serves both tasks and every batch is a dense (B, T) array with no padding:

    add     "37+25=062."    the sum, zero-padded to digits + 1 characters
    coded   "62+74=062."    the same sum, but the question is written in a digit code: each digit d
                            of the operands appears as 9 - d (37 as "62", 25 as "74")
    sub     "37-25=+12."    the signed difference: a sign, then digits characters

A model pretrained on addition reads "62+74=" as 62 + 74 and answers "136.", so it fails the coded
task: the skill (adding) is there, the way the question is written is new. That is the kind of
change LoRA is good at, and the fine-tuning experiment (minilora.lora.finetune) uses it.
Subtraction asks for a new skill (borrowing, a sign) as well as a new symbol; LoRA on the
attention projections learns it only in part, full fine-tuning learns it: a contrast worth running
(minilora finetune --task sub).

Example i of a task uses the operands (a, b) = divmod(i, 10**digits), for both tasks alike, and
TaskDataset splits the example numbers with one seeded permutation. So for a given seed the two
tasks hold out the same operand pairs: no held-out pair of either task is ever trained on.

Training only on the answer: idx is the example without its last character, targets the example
without its first (the next character at each position), with -1 (ignored by the loss) wherever
the next character still belongs to the prompt. Accuracy is exact match of the whole answer,
generated greedily (batched) after "prompt=".
"""

import numpy as np

from minilora.data.corpus import check_rng
from minilora.data.tokenizer import CharTokenizer
from minilora.nn.checks import positive_int

ALPHABET = "0123456789+-=."  # digits first, so id d is digit d
END = "."


class Task:
    """Base class: a task with `num_examples` prompts, prompt(i) and answer(prompt) of fixed lengths."""

    name = ""
    description = ""

    def __init__(self, digits=2):
        if isinstance(digits, bool) or not isinstance(digits, int) or not 1 <= digits <= 4:
            raise ValueError(f"digits must be an int in [1, 4], got {digits!r}")
        self.digits = digits
        self.num_examples = 10 ** (2 * digits)     # every ordered pair of operands
        self.prompt_length = 2 * digits + 2        # "37+25="
        self.answer_length = digits + 2            # "062."

    @property
    def length(self):
        """Characters per example, prompt and answer together."""
        return self.prompt_length + self.answer_length

    def operands(self, i):
        return divmod(int(i), 10 ** self.digits)

    def prompt(self, i):
        """The prompt of example i, ending with "="."""
        a, b = self.operands(i)
        return f"{self.write_operand(a)}{self.operator}{self.write_operand(b)}="

    def write_operand(self, n):
        """How operand n appears in the prompt: zero-padded to `digits` characters."""
        return f"{n:0{self.digits}d}"

    def answer(self, a, b):
        """The answer to a `operator` b, ending with the end marker "."."""
        raise NotImplementedError

    def example(self, i):
        return self.prompt(i) + self.answer(*self.operands(i))

    def tokenizer(self):
        return CharTokenizer(ALPHABET)

    def __repr__(self):
        return f"{type(self).__name__}(digits={self.digits})"


class Addition(Task):
    name = "add"
    description = "a+b with two zero-padded operands; the sum, zero-padded"
    operator = "+"

    def answer(self, a, b):
        return f"{a + b:0{self.digits + 1}d}{END}"


class CodedAddition(Addition):
    name = "coded"
    description = "a+b with each operand digit d written as 9-d; the plain sum, zero-padded"
    CODE = str.maketrans("0123456789", "9876543210")

    def write_operand(self, n):
        return super().write_operand(n).translate(self.CODE)


class Subtraction(Task):
    name = "sub"
    description = "a-b with two zero-padded operands; the signed difference"
    operator = "-"

    def answer(self, a, b):
        sign = "-" if a < b else "+"
        return f"{sign}{abs(a - b):0{self.digits}d}{END}"


TASKS = {task.name: task for task in (Addition, CodedAddition, Subtraction)}


def get_task(name, digits=2):
    """The task called `name`: one of TASKS ("add", "coded", "sub")."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; the tasks are {sorted(TASKS)}")
    return TASKS[name](digits)


class TaskDataset:
    """The examples of `task`, split into disjoint "train" and "val" sets by a seeded permutation.

    val_size: number of held-out examples; train_size: number of training examples (default: all
    the others). Arrays (each (N, task.length - 1) int64, N the split's size):
        inputs[split], targets[split] (-1 on the prompt), and example_ids[split] (N,).
    """

    def __init__(self, task, seed=0, val_size=1000, train_size=None):
        if not isinstance(task, Task):
            raise TypeError(f"task must be a Task (e.g. get_task('add')), got {type(task).__name__}")
        n = task.num_examples
        positive_int("val_size", val_size)
        train_size = n - val_size if train_size is None else positive_int("train_size", train_size)
        if train_size < 1 or val_size + train_size > n:  # train_size < 1: val_size leaves no example
            raise ValueError(f"{task!r} has {n} examples; val_size={val_size} and train_size={train_size} "
                             f"must each be >= 1 and add up to at most {n}")
        self.task = task
        self.tokenizer = task.tokenizer()
        order = np.random.default_rng(seed).permutation(n)
        self.example_ids = {"val": order[:val_size], "train": order[val_size:val_size + train_size]}
        self.inputs, self.targets = {}, {}
        for split, ids in self.example_ids.items():
            tokens = np.stack([self.tokenizer.encode(task.example(i)) for i in ids])  # (N, L)
            targets = tokens[:, 1:].copy()
            # targets[:, t] is the character at t + 1; the answer starts at prompt_length.
            targets[:, :task.prompt_length - 1] = -1
            self.inputs[split], self.targets[split] = tokens[:, :-1], targets

    def get_batch(self, split, batch_size, rng):
        """batch_size examples of `split` drawn at random -> (idx, targets), (B, T) int64 each."""
        n = len(self.example_ids[self._check(split)])
        rows = check_rng(rng).integers(0, n, size=positive_int("batch_size", batch_size))
        return self.inputs[split][rows], self.targets[split][rows]

    def batches(self, split, batch_size):
        """Every example of `split` once, in order, as (idx, targets) batches (the last may be smaller)."""
        n = len(self.example_ids[self._check(split)])
        positive_int("batch_size", batch_size)
        # A generator expression, not a generator function: bad arguments fail here, at the call,
        # not later at the first batch.
        return ((self.inputs[split][start:start + batch_size], self.targets[split][start:start + batch_size])
                for start in range(0, n, batch_size))

    def exact_match(self, model, split="val", batch_size=500, limit=None):
        """The fraction of examples of `split` (the first `limit` of them, if given) whose whole
        answer the model generates correctly, greedily, after reading the prompt."""
        return float(np.mean(self.score(model, split, batch_size, limit)[1]))

    def score(self, model, split="val", batch_size=500, limit=None):
        """(generated answers as strings, whether each is exactly right as a bool array)."""
        positive_int("batch_size", batch_size)
        if limit is not None:
            positive_int("limit", limit)  # limit=0 would score nothing, a negative one all but the last
        ids = self.example_ids[self._check(split)][:limit]
        p, a = self.task.prompt_length, self.task.answer_length
        prompts = self.inputs[split][:len(ids), :p]                                   # (N, P)
        expected = np.concatenate([self.inputs[split][:len(ids), p:], self.targets[split][:len(ids), -1:]], axis=1)
        generated = np.concatenate([
            model.generate(prompts[s:s + batch_size], max_new_tokens=a, temperature=0).numpy()[:, p:]
            for s in range(0, len(ids), batch_size)])                                 # (N, A)
        answers = [self.tokenizer.decode(row) for row in generated]
        return answers, (generated == expected).all(axis=1)

    def _check(self, split):
        if split not in self.example_ids:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        return split
