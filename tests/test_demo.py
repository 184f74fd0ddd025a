"""`minilora demo` in its quick form: every stage runs, writes its files, and reports what it computed.
(The full demo's accuracies are measured by running `minilora demo`, not asserted here.)"""

import os
import re

import numpy as np
import pytest

import minilora
from minilora import cli, demo
from minilora.data import TaskDataset, get_task
from minilora.lora import LoRAConfig, apply_lora
from minilora.lora.finetune import QUICK
from minilora.nn import GPT, GPTConfig


def run_demo(capsys, folder, *options):
    assert cli.main(["demo", "--quick", "--quiet", "--out", str(folder), *options]) == 0
    return capsys.readouterr().out


def test_quick_demo_writes_every_file_and_reports_its_numbers(tmp_path, capsys):
    out = run_demo(capsys, tmp_path, "--device", "cpu")
    for name in ("base_model.npz", "adapter.npz", "full_model.npz", "loss_curves.png", "parameters.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert "pretrained the base model" in out
    # the sizes printed are the sizes of the files written
    adapter = os.path.getsize(tmp_path / "adapter.npz")
    checkpoint = os.path.getsize(tmp_path / "full_model.npz")
    assert f"{adapter / 1000:.1f} KB" in out and f"{checkpoint / 1000:.1f} KB" in out
    assert re.search(r"the outputs agree", out)
    assert "greedy answers identical on 50 of 50 examples" in out


def test_second_run_loads_the_base_model_and_changed_settings_retrain_it(tmp_path, capsys):
    run_demo(capsys, tmp_path)
    assert "loaded the base model" in run_demo(capsys, tmp_path)
    assert "other settings; pretraining again" in run_demo(capsys, tmp_path, "--seed", "1")
    assert "pretrained the base model" in run_demo(capsys, tmp_path, "--seed", "1", "--retrain-base")


def test_a_damaged_base_model_file_is_trained_again(tmp_path, capsys):
    run_demo(capsys, tmp_path)
    path = tmp_path / "base_model.npz"
    path.write_bytes(path.read_bytes()[:100])
    out = run_demo(capsys, tmp_path)
    assert "cannot be used" in out and "pretrained the base model" in out


@pytest.mark.gpu
def test_quick_demo_on_the_gpu(tmp_path, capsys, cuda_device):
    out = run_demo(capsys, tmp_path, "--device", cuda_device)
    assert "minilora demo on cuda" in out and "the outputs agree" in out
    assert "'cuda' backend of the fused op" in out      # the LoRA layers ran on the fused kernels
    assert (tmp_path / "adapter.npz").stat().st_size > 0


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    if minilora.cuda_available():
        pytest.skip("a GPU is usable here, so --device cuda is not an error")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["demo", "--quick", "--quiet", "--device", "cuda", "--out", str(tmp_path)])
    assert exit_.value.code == 2  # a usage error, before any work starts
    assert "argument --device: cuda is not usable here" in capsys.readouterr().err


def lora_model_with_trained_look():
    """A small GPT with a LoRA adapter whose B is not zero, so merging really changes W."""
    dataset = TaskDataset(get_task(QUICK.pretrain_task))
    minilora.random.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=dataset.tokenizer.vocab_size, block_size=dataset.task.length - 1,
                          n_layer=1, n_head=2, n_embd=16))
    apply_lora(model, LoRAConfig(r=2, alpha=4))
    for name, p in model.named_parameters():
        if name.endswith("lora_B"):
            p.data[...] = np.random.default_rng(1).normal(size=p.shape).astype(p.dtype)
    return model, dataset


def test_merge_report_measures_agreement_and_catches_a_wrong_merge(monkeypatch):
    model, dataset = lora_model_with_trained_look()
    assert "the outputs agree" in demo.merge_report(model, dataset, 20)

    def wrong_merge(m):            # merges, then perturbs one merged weight
        demo_merge(m)
        m.h[0].attn.q_proj.base.weight.data[0, 0] += 1.0

    def wrong_unmerge(m):
        m.h[0].attn.q_proj.base.weight.data[0, 0] -= 1.0
        demo_unmerge(m)

    demo_merge, demo_unmerge = demo.merge_adapters, demo.unmerge_adapters
    monkeypatch.setattr(demo, "merge_adapters", wrong_merge)
    monkeypatch.setattr(demo, "unmerge_adapters", wrong_unmerge)
    assert "DO NOT agree" in demo.merge_report(model, dataset, 20)
