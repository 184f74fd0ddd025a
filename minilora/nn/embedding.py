"""Embedding: a learned table of vectors, looked up by integer index (token ids, positions)."""

from minilora import functional as F
from minilora.nn import parameter
from minilora.nn.checks import positive_int
from minilora.nn.module import Module


class Embedding(Module):
    """weight: (num_embeddings, embedding_dim), initialised N(0, 0.02²) as in GPT-2.

    forward(idx): idx an integer Tensor of any shape (...) -> (..., embedding_dim).
    """

    def __init__(self, num_embeddings, embedding_dim, dtype="float32", device="cpu", init_std=0.02):
        super().__init__()
        positive_int("num_embeddings", num_embeddings)
        positive_int("embedding_dim", embedding_dim)
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.weight = parameter.normal((num_embeddings, embedding_dim), init_std, dtype, device)

    def forward(self, idx):
        return F.embedding(idx, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"
