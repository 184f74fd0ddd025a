"""The differentiable ops, one Function class each, grouped by kind (one file per group).

    arithmetic   add sub mul div neg pow          unary      exp log tanh relu gelu
    matmul       matmul                           reduce     sum mean max
    shape        reshape transpose concatenate    select     indexing, where, masked_fill
                 split stack                      softmax    softmax, log_softmax
    loss         cross_entropy                    norm       layer_norm
    embedding    embedding                        dropout    dropout
    lora_linear  the LoRA layer's one op, x·Wᵀ + s·(x·Aᵀ)·Bᵀ, dispatched to minilora.kernels

broadcast.py and axes.py hold the helpers the ops share (undoing broadcasting, checking axes).
The public, friendlier entry points are in minilora.functional (also minilora.F).
"""
