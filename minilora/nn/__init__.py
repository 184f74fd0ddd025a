"""minilora.nn: layers with parameters, and a minimal GPT built from them.

    module.py      Module: registration by assignment, state_dict, to(), train()/eval()
    parameter.py   Parameter and the GPT-2 initialisers
    linear.py, embedding.py, layernorm.py, dropout.py, containers.py: the layers
    gpt.py         GPTConfig and GPT (attention, MLP, Block); sampling.py: picking the next token
    summary.py     the per-module parameter table
"""

from minilora.nn.containers import ModuleList, Sequential
from minilora.nn.dropout import Dropout
from minilora.nn.embedding import Embedding
from minilora.nn.gpt import GPT, MLP, Block, CausalSelfAttention, GPTConfig
from minilora.nn.layernorm import LayerNorm
from minilora.nn.linear import Linear
from minilora.nn.module import LoadResult, Module
from minilora.nn.parameter import Parameter
from minilora.nn.summary import ParameterTable

__all__ = ["GPT", "MLP", "Block", "CausalSelfAttention", "Dropout", "Embedding", "GPTConfig", "LayerNorm",
           "Linear", "LoadResult", "Module", "ModuleList", "Parameter", "ParameterTable", "Sequential"]
