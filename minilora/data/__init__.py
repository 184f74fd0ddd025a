"""minilora.data: where tokens come from.

    tokenizer.py   CharTokenizer: text <-> int64 ids, one id per character
    gpt2_tokenizer.py  GPT2Tokenizer: GPT-2's byte-level BPE from its vocab.json and merges.txt
    corpus.py      TextCorpus: the pydoc help texts that ship with Python, as (idx, targets) windows
    tasks.py       synthetic tasks scored exactly (add to pretrain, sub to fine-tune) and TaskDataset
"""

from minilora.data.corpus import TextCorpus, pydoc_text
from minilora.data.tasks import ALPHABET, TASKS, Addition, CodedAddition, Subtraction, Task, TaskDataset, get_task
from minilora.data.gpt2_tokenizer import GPT2Tokenizer
from minilora.data.tokenizer import CharTokenizer

__all__ = ["ALPHABET", "TASKS", "Addition", "CharTokenizer", "CodedAddition", "GPT2Tokenizer", "Subtraction", "Task", "TaskDataset", "TextCorpus",
           "get_task", "pydoc_text"]
