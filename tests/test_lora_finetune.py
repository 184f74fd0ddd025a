"""A smoke run of the fine-tuning experiment (a few steps: it checks the plumbing and the counts;
the accuracies are measured by `python -m minilora.lora.finetune`, not asserted here)."""

import dataclasses

from minilora.lora.finetune import QUICK, format_report, run_experiment


def test_quick_experiment_runs_and_counts_what_trains():
    results = run_experiment(QUICK, quiet=True)
    total = results["total_params"]
    assert results["full"]["trainable"] == total
    assert results["lora"]["trainable"] == 1 * 2 * 4 * (32 + 32)     # 1 layer, q and v, r = 4, width 32
    assert results["full"]["adamw_bytes"] == 2 * 4 * total
    assert results["lora"]["adamw_bytes"] == 2 * 4 * 512
    # with the adapter off, the LoRA model scores exactly what the pretrained model scored
    assert results["lora"]["old"] == results["base"]["old"]
    assert 0 < results["files"]["adapter_bytes"] < results["files"]["checkpoint_bytes"]
    text = format_report(results)
    assert "full fine-tuning" in text and "512" in text and "whole experiment" in text


def test_the_lora_model_trains_on_the_backend_asked_for(calls):
    small = dataclasses.replace(QUICK, pretrain=dataclasses.replace(QUICK.pretrain, steps=2, warmup_steps=0),
                                full=dataclasses.replace(QUICK.full, steps=2, warmup_steps=0),
                                lora_training=dataclasses.replace(QUICK.lora_training, steps=2, warmup_steps=0),
                                eval_examples=4)
    results = run_experiment(small, quiet=True, backend="numpy")
    assert results["lora"]["backend"] == "numpy"
    # two training steps: a forward and a backward per LoRA layer (q and v of one block), all numpy
    assert calls[:8].count("numpy") == 8
    assert "'numpy' backend" in format_report(results)
