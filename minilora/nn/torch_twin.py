"""torch_twin(model): minilora's GPT rebuilt in PyTorch, module for module, with the same names.

    twin = torch_twin(model)                                 # needs torch; minilora never does
    peft_model = PeftModel.from_pretrained(twin, "runs/peft_adapter")

Its modules are called as minilora's are (h.0.attn.q_proj, h.0.mlp.fc_in, lm_head, ...), so an
adapter written by minilora.lora.save_peft_adapter with layout="minilora" loads onto it in PEFT,
and one that PEFT trains on it loads back with load_peft_adapter. The forward pass is the one in
minilora/nn/gpt.py written with torch.nn: pre-LayerNorm blocks, causal attention scaled by
1/sqrt(head_dim), a tanh-GELU MLP of width 4·C, an untied lm_head. Used by tutorial 08 and
tests/test_peft_interop.py, to compare minilora with PyTorch and PEFT.
"""

import math


def torch_twin(model):
    """A torch.nn.Module in eval mode with the weights of `model` (a plain minilora GPT, no LoRA
    layers: merge_and_unload first, or pass the base model)."""
    try:
        import torch
    except ImportError:
        raise ImportError("torch_twin needs PyTorch (pip install torch), which minilora itself never "
                          "requires") from None
    twin = _twin_classes(torch)(model.config)
    twin.load_state_dict({name: torch.from_numpy(array) for name, array in model.state_dict().items()})
    return twin.eval()


def _twin_classes(torch):
    """The twin's classes, defined once torch is known to be importable."""
    nn = torch.nn

    class Attention(nn.Module):
        def __init__(self, C, n_head):
            super().__init__()
            self.n_head = n_head
            self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(C, C) for _ in range(4))

        def forward(self, x):
            B, T, C = x.shape
            hd = C // self.n_head
            q, k, v = (proj(x).view(B, T, self.n_head, hd).transpose(1, 2)
                       for proj in (self.q_proj, self.k_proj, self.v_proj))
            att = q @ k.transpose(-2, -1) / math.sqrt(hd)                          # (B, nh, T, T)
            future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
            att = att.masked_fill(future, float("-inf")).softmax(-1)
            return self.o_proj((att @ v).transpose(1, 2).reshape(B, T, C))

    class MLP(nn.Module):
        def __init__(self, C):
            super().__init__()
            self.fc_in, self.fc_out = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

        def forward(self, x):
            return self.fc_out(nn.functional.gelu(self.fc_in(x), approximate="tanh"))

    class Block(nn.Module):
        def __init__(self, C, n_head):
            super().__init__()
            self.ln_1, self.attn = nn.LayerNorm(C), Attention(C, n_head)
            self.ln_2, self.mlp = nn.LayerNorm(C), MLP(C)

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class TwinGPT(nn.Module):
        def __init__(self, config):
            super().__init__()
            C = config.n_embd
            self.wte, self.wpe = nn.Embedding(config.vocab_size, C), nn.Embedding(config.block_size, C)
            self.h = nn.ModuleList(Block(C, config.n_head) for _ in range(config.n_layer))
            self.ln_f, self.lm_head = nn.LayerNorm(C), nn.Linear(C, config.vocab_size, bias=False)

        def forward(self, idx):
            """idx: (B, T) int64 -> logits (B, T, vocab_size)."""
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
            for block in self.h:
                x = block(x)
            return self.lm_head(self.ln_f(x))

    return TwinGPT
