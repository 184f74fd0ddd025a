"""LoRA+ (Hayou et al., 2024): train B with a learning rate λ times A's.

A and B play different parts: A (r, in) reads the input and B (out, r) writes the update, and
with B starting at zero the update grows only as fast as B does. For wide layers the paper shows
that one learning rate for both is inefficient and suggests lr_B = λ·lr_A with λ around 2⁴ = 16.
Nothing changes in the model: it is only an optimizer setting, built here as parameter groups.

    groups = lora_plus_param_groups(model, lr=2e-3, ratio=16)
    optimizer = AdamW(groups, lr=2e-3)
    train(model, get_batch, config, optimizer=optimizer)   # the schedule keeps the groups' ratio

Every trainable lora_B goes into the fast group; everything else that trains (lora_A, DoRA's
magnitude, biases, modules_to_save) keeps lr. (PEFT's helper also puts every 1-D parameter, such as
a bias or DoRA's magnitude, in B's group; minilora keeps the rule to what the paper is about.)
Weight decay follows minilora.train: matrices decay, vectors do not.
"""

from minilora.optim.optimizer import check_number
from minilora.train import parameter_groups


def lora_plus_param_groups(model, lr, ratio=16.0, weight_decay=0.01):
    """Optimizer parameter groups: the trainable lora_B matrices at lr·ratio, the rest at lr.

    Returns a list of dicts {"params", "lr", "weight_decay", "name"} (the groups that are not
    empty), the base-lr groups first. Raises ValueError if no lora_B trains.
    """
    check_number("lr", lr, low=0.0)
    check_number("ratio", ratio, low=0.0)
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    fast = [p for name, p in trainable if name.split(".")[-1] == "lora_B"]
    if not fast:
        raise ValueError(f"lora_plus_param_groups: {type(model).__name__} has no trainable lora_B "
                         "(apply_lora first, with the adapter active)")
    rest = [p for name, p in trainable if name.split(".")[-1] != "lora_B"]
    groups = [dict(group, lr=lr, name="lora_A and the rest") for group in parameter_groups(rest, weight_decay)]
    return groups + [{"params": fast, "lr": lr * ratio, "weight_decay": weight_decay, "name": "lora_B"}]
