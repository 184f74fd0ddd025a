"""Dropout: in training, zero each element with probability p and scale the rest by 1/(1-p), so the
expected value is unchanged; in evaluation (model.eval()) it passes x through untouched."""

from minilora import functional as F
from minilora.nn.checks import probability
from minilora.nn.module import Module


class Dropout(Module):
    def __init__(self, p=0.0):
        super().__init__()
        self.p = probability("p", p)

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"
