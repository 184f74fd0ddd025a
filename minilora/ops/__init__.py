"""The differentiable ops, one Function class each, grouped by kind (one file per group).

The public, friendlier entry points are in minilora.functional (also minilora.F).
"""
