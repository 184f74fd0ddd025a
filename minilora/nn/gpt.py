"""A minimal GPT (decoder-only transformer), read top to bottom: config, attention, MLP, block, model.

Data path, for a batch of token ids idx (B, T):

    x = wte[idx] + wpe[0..T-1]                         (B, T, C)     C = n_embd
    for each block:  x = x + attn(ln_1(x))             causal multi-head self-attention
                     x = x + mlp(ln_2(x))              C -> 4C -> C with tanh-GELU
    logits = lm_head(ln_f(x))                          (B, T, vocab_size)

Every Linear is its own module with a name (q_proj, k_proj, v_proj, o_proj, fc_in, fc_out), so LoRA
can adapt any of them by replacing it in place. Sampling lives in minilora.nn.sampling and training
in minilora.train; this file is only the model.
"""

import dataclasses
import math

import numpy as np

from minilora import backend
from minilora import functional as F
from minilora.creation import arange
from minilora.nn import sampling
from minilora.nn.checks import positive_int, probability
from minilora.nn.containers import ModuleList
from minilora.nn.dropout import Dropout
from minilora.nn.embedding import Embedding
from minilora.nn.layernorm import LayerNorm
from minilora.nn.linear import Linear
from minilora.nn.module import Module
from minilora.tensor import Tensor, no_grad, tensor

# The std of GPT-2's initial weights. The two projections that write into the residual stream
# (o_proj, fc_out) start smaller, at INIT_STD / sqrt(2 * n_layer): the stream is a sum of
# 2 * n_layer such outputs, and this keeps its variance at initialisation independent of depth.
INIT_STD = 0.02


@dataclasses.dataclass
class GPTConfig:
    vocab_size: int   # number of distinct tokens
    block_size: int   # longest context the model can read (number of position embeddings)
    n_layer: int      # number of transformer blocks
    n_head: int       # attention heads per block; n_embd must divide evenly among them
    n_embd: int       # width C of the residual stream
    dropout: float = 0.0
    bias: bool = True  # biases in the Linear layers and LayerNorms

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            positive_int(name, getattr(self, name))
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd must be divisible by n_head (each head gets n_embd // n_head "
                             f"dimensions), got n_embd={self.n_embd}, n_head={self.n_head}")
        self.dropout = probability("dropout", self.dropout)
        if not isinstance(self.bias, bool):
            raise TypeError(f"bias must be a bool, got {self.bias!r}")


class CausalSelfAttention(Module):
    """Each position attends to itself and the positions before it, in n_head heads of head_dim."""

    def __init__(self, config):
        super().__init__()
        C, residual_std = config.n_embd, INIT_STD / math.sqrt(2 * config.n_layer)
        self.n_head = config.n_head
        self.head_dim = C // config.n_head
        self.q_proj = Linear(C, C, bias=config.bias)
        self.k_proj = Linear(C, C, bias=config.bias)
        self.v_proj = Linear(C, C, bias=config.bias)
        self.o_proj = Linear(C, C, bias=config.bias, init_std=residual_std)
        self.attn_dropout = Dropout(config.dropout)
        self.resid_dropout = Dropout(config.dropout)
        # True above the diagonal: the future positions that a query may not see. Built once.
        future = np.triu(np.ones((config.block_size, config.block_size), dtype=bool), k=1)
        self.register_buffer("causal_mask", Tensor(future))

    def forward(self, x):
        B, T, C = x.shape
        nh, hd = self.n_head, self.head_dim
        # (B, T, C) -> (B, T, nh, hd) -> (B, nh, T, hd): each head attends independently
        q = self.q_proj(x).reshape(B, T, nh, hd).transpose(0, 2, 1, 3)
        k = self.k_proj(x).reshape(B, T, nh, hd).transpose(0, 2, 1, 3)
        v = self.v_proj(x).reshape(B, T, nh, hd).transpose(0, 2, 1, 3)
        # Scaling by 1/sqrt(hd) keeps the scores' variance near 1, so softmax does not saturate.
        # causal_softmax is softmax(scale · att) with att.masked_fill(causal_mask[:T, :T], -inf) first,
        # as one op (ops/attention.py): position t attends to positions <= t only.
        att = q @ k.transpose(0, 1, 3, 2)                            # (B, nh, T, T)
        att = F.causal_softmax(att, scale=1.0 / math.sqrt(hd))
        att = self.attn_dropout(att)
        y = att @ v                                                  # (B, nh, T, hd)
        y = y.transpose(0, 2, 1, 3).reshape(B, T, C)                 # heads side by side again
        return self.resid_dropout(self.o_proj(y))                    # (B, T, C)

    def extra_repr(self):
        return f"n_head={self.n_head}, head_dim={self.head_dim}"


class MLP(Module):
    """Position-wise: C -> 4C -> tanh-GELU -> C."""

    def __init__(self, config):
        super().__init__()
        C = config.n_embd
        self.fc_in = Linear(C, 4 * C, bias=config.bias)
        self.fc_out = Linear(4 * C, C, bias=config.bias, init_std=INIT_STD / math.sqrt(2 * config.n_layer))
        self.dropout = Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.fc_out(F.gelu(self.fc_in(x))))  # (B, T, C)


class Block(Module):
    """Pre-LayerNorm transformer block: normalise, transform, add back to the residual stream."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, eps=1e-5, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, eps=1e-5, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(Module):
    """GPT(config); model(idx, targets=None) -> (logits, loss). Built on "cpu" in float32; use
    .to(device=..., dtype=...) to move or cast it."""

    def __init__(self, config):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT needs a GPTConfig, got {type(config).__name__}")
        self.config = config
        self.wte = Embedding(config.vocab_size, config.n_embd)   # token embeddings
        self.wpe = Embedding(config.block_size, config.n_embd)   # position embeddings
        self.drop = Dropout(config.dropout)
        self.h = ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = LayerNorm(config.n_embd, eps=1e-5, bias=config.bias)
        # Not tied to wte: the output head is a separate matrix (and a separate LoRA target).
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)

    @classmethod
    def from_pretrained(cls, path, dtype="float32"):
        """A GPT with the weights of a Hugging Face GPT-2 checkpoint: `path` a folder holding
        config.json and model.safetensors, or that .safetensors file with config.json beside it.
        c_attn is split into q, k, v, GPT-2's Conv1D weights are transposed, and lm_head is a copy of
        wte; see minilora/nn/pretrained.py for the whole name table."""
        from minilora.nn.pretrained import load_gpt2

        return load_gpt2(path, dtype)

    @property
    def device(self):
        return self.wte.weight.device

    def forward(self, idx, targets=None):
        """idx: integer token ids (B, T) with T <= block_size.
        targets: optional (B, T) next-token ids; -1 marks a position left out of the loss
        (e.g. the prompt of an instruction example), the loss being the mean over the rest.
        Returns logits (B, T, vocab_size) and loss (a scalar Tensor, or None without targets)."""
        idx = self._tokens("idx", idx)
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"idx has {T} positions but block_size is {self.config.block_size}; "
                             f"crop the context to the last {self.config.block_size} tokens")
        positions = arange(T, device=self.device)                  # (T,)
        x = self.drop(self.wte(idx) + self.wpe(positions))         # (B, T, C) + (T, C)
        for block in self.h:
            x = block(x)                                           # (B, T, C)
        logits = self.lm_head(self.ln_f(x))                        # (B, T, vocab_size)
        if targets is None:
            return logits, None
        targets = self._tokens("targets", targets)
        if targets.shape != (B, T):
            raise ValueError(f"targets must have the shape of idx {(B, T)}, got {targets.shape}")
        loss = F.cross_entropy(logits, targets, ignore_index=-1)  # mean over the non-ignored positions
        return logits, loss

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        """Extend idx (B, T) by max_new_tokens sampled tokens -> (B, T + max_new_tokens).

        Each step reads at most the last block_size tokens. temperature=0 picks the most likely
        token (greedy); otherwise logits / temperature are sampled, from the top_k most likely
        tokens only when top_k is given. Draws from minilora.random, so manual_seed reproduces it.
        Runs without dropout and without recording a graph; the train/eval mode is restored after.
        """
        idx = self._tokens("idx", idx)
        if idx.shape[1] == 0:  # the next token is read off the last position's logits
            raise ValueError(f"generate needs at least one token to continue, got idx of shape {idx.shape}; "
                             "start from a prompt (one token such as a newline will do)")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
        sampling.check_options(temperature, top_k)
        xp = backend.xp_for(self.device)
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                tokens = idx.data
                for _ in range(max_new_tokens):
                    logits, _ = self(Tensor(tokens[:, -self.config.block_size:]))
                    next_token = sampling.next_token(logits.data[:, -1, :], temperature, top_k)  # (B, 1)
                    tokens = xp.concatenate([tokens, next_token], axis=1)
        finally:
            self.train(was_training)
        return Tensor(tokens)

    def _tokens(self, name, ids):
        """ids as an integer Tensor (B, T) on the model's device. The ids' range is checked by the
        embedding lookup (idx) and by cross_entropy (targets, where -1 is also allowed)."""
        if not isinstance(ids, Tensor):
            ids = tensor(ids, device=self.device)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
        if ids.ndim != 2:
            raise ValueError(f"{name} must have shape (batch, time), got {ids.shape}")
        return ids
