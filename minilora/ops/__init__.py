"""The differentiable ops, one Function class each, grouped by kind (one file per group).

    arithmetic   add sub mul div neg pow          unary      exp log tanh relu gelu
    matmul       matmul                           reduce     sum mean max
    shape        reshape transpose concatenate    select     indexing, where, masked_fill
                 split stack                      softmax    softmax, log_softmax
    loss         cross_entropy                    norm       layer_norm
    embedding    embedding                        dropout    dropout
    attention    causal_softmax (scale, causal mask and softmax as one op)
    linear       linear (x·Wᵀ + b, the product inside nn.Linear)
    lora_linear  the LoRA layer's one op, x·Wᵀ + s·(x·Aᵀ)·Bᵀ, dispatched to minilora.kernels

broadcast.py and axes.py hold the helpers the ops share (undoing broadcasting, checking axes).
Products, layer norm, softmax and GELU run compiled twins for NumPy float arrays
(minilora/kernels/compiled.py); the code in these files is the reference they are tested against.
The public, friendlier entry points are in minilora.functional (also minilora.F).
"""
