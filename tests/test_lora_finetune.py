"""A smoke run of the fine-tuning experiment (a few steps: it checks the plumbing and the counts;
the accuracies are measured by `python -m minilora.lora.finetune`, not asserted here)."""

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
