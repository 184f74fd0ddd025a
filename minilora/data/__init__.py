"""minilora.data: where tokens come from.

    tokenizer.py   CharTokenizer: text <-> int64 ids, one id per character
    corpus.py      TextCorpus: the pydoc help texts that ship with Python, as (idx, targets) windows
    tasks.py       synthetic tasks scored exactly (add to pretrain, sub to fine-tune) and TaskDataset
"""

from minilora.data.corpus import TextCorpus, pydoc_text
from minilora.data.tasks import ALPHABET, TASKS, Addition, CodedAddition, Subtraction, Task, TaskDataset, get_task
from minilora.data.tokenizer import CharTokenizer

__all__ = ["ALPHABET", "TASKS", "Addition", "CharTokenizer", "CodedAddition", "Subtraction", "Task", "TaskDataset", "TextCorpus",
           "get_task", "pydoc_text"]
