"""Training throughput: tokens per second of one GPT training step (forward, backward, AdamW).

    python benchmarks/bench_train.py                    # the sizes below, minilora on the CPU
    python benchmarks/bench_train.py --profile          # and where a step's time goes, op by op
                                                        # (beside PyTorch's, by kind of work)
    python benchmarks/bench_train.py --device cuda      # minilora on the GPU (CuPy) as well
    python benchmarks/bench_train.py --sizes lora-4x256-T128 --profile   # LoRA fine-tuning step

Where PyTorch is importable, the same architecture is built in PyTorch (eager mode, the same
weights copied in, the same AdamW) and timed beside minilora on the same device, as an outside
reference; minilora itself never imports torch. Before timing, the first losses of the two
models are compared, so the table never compares two different models.

Sizes whose name starts with "lora" train a LoRA adapter instead of the whole model: rank 8 on
q_proj and v_proj (alpha 16), everything else frozen, in minilora (minilora.lora.apply_lora) and,
beside it, in PyTorch + PEFT (peft.get_peft_model with the same LoraConfig); B starts at zero in
both, so the first losses agree.

Each time is the median over --steps steps after --warmup steps, with the batch drawn once:
the table measures the step, not the data. Run it on a quiet machine: other processes on the
same cores change the numbers far more than any code change. On a shared machine, compare one
thread against one thread, where a busy neighbour disturbs least:

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/bench_train.py

(OpenBLAS threads wait for each other at every matrix product; when another process holds a
core, each wait can cost a scheduler time slice, and the many small products of these models
then run several times slower than on one thread.)
"""

import argparse
import collections
import statistics
import sys
import time

import numpy as np

import minilora
from minilora.function import Function
from minilora.nn import GPT, GPTConfig
from minilora.optim import AdamW

# name: (GPTConfig keywords, batch size). "task" is the addition run of `python -m minilora.train`,
# "text" the character model of the pydoc texts.
SIZES = {
    "task-4x128-T9": (dict(vocab_size=14, block_size=9, n_layer=4, n_head=4, n_embd=128), 64),
    "text-4x128-T64": (dict(vocab_size=103, block_size=64, n_layer=4, n_head=4, n_embd=128), 32),
    "6x256-T128": (dict(vocab_size=103, block_size=128, n_layer=6, n_head=8, n_embd=256), 16),
    "lora-4x256-T128": (dict(vocab_size=103, block_size=128, n_layer=4, n_head=8, n_embd=256), 16),
}
# The adapter of the "lora" sizes (the same in minilora and in PEFT).
LORA = dict(r=8, alpha=16, targets=("q_proj", "v_proj"))


def time_steps(steps_to_time, warmup, steps):
    """Median (wall seconds, CPU seconds) per call of each (step, sync) pair in `steps_to_time`.

    The steps take turns (one call of each per round), so a neighbour's load that comes and goes
    falls on all of them alike. CPU seconds add up every thread of this process: on a shared
    machine they move much less than the wall time does."""
    for step, sync in steps_to_time:
        for _ in range(warmup):
            step()
        sync()
    wall = [[] for _ in steps_to_time]
    cpu = [[] for _ in steps_to_time]
    for _ in range(steps):
        for i, (step, sync) in enumerate(steps_to_time):
            start, start_cpu = time.perf_counter(), time.process_time()
            step()
            sync()
            wall[i].append(time.perf_counter() - start)
            cpu[i].append(time.process_time() - start_cpu)
    return [(statistics.median(w), statistics.median(c)) for w, c in zip(wall, cpu)]


def minilora_step(config, idx, targets, device, lora=False):
    """A training step of a minilora GPT on `device` (of its LoRA adapter when `lora`), the model,
    the loss of its first forward, and the weights of the model without the adapter."""
    minilora.random.manual_seed(0)
    model = GPT(GPTConfig(**config)).to(device=device)
    base_state = model.state_dict()
    if lora:
        from minilora.lora import LoRAConfig, apply_lora
        apply_lora(model, LoRAConfig(r=LORA["r"], alpha=LORA["alpha"], target_modules=LORA["targets"]))
    optimizer = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    idx_t, targets_t = minilora.tensor(idx, device=device), minilora.tensor(targets, device=device)

    def step():
        optimizer.zero_grad()
        _, loss = model(idx_t, targets_t)
        loss.backward()
        optimizer.step()

    first_loss = model(idx_t, targets_t)[1].item()
    return model, step, first_loss, base_state


# ---- the PyTorch reference (only where torch is installed) -------------------------------------
def torch_step(config, state, idx, targets, device, lora=False):
    """The same GPT in PyTorch eager mode, with minilora's weights copied in (and, when `lora`, a
    PEFT adapter of the same shape: B is zero in both, so the models agree)."""
    import torch
    from torch import nn

    C, H = config["n_embd"], config["n_head"]

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(C, C) for _ in range(4))

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = (p(x).view(B, T, H, C // H).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
            att = (q @ k.transpose(-1, -2)) / (C // H) ** 0.5
            att = att.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
            return self.o_proj((att.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc_in, self.fc_out = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

        def forward(self, x):
            return self.fc_out(nn.functional.gelu(self.fc_in(x), approximate="tanh"))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.attn, self.ln_2, self.mlp = nn.LayerNorm(C), Attention(), nn.LayerNorm(C), MLP()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class TorchGPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(config["vocab_size"], C)
            self.wpe = nn.Embedding(config["block_size"], C)
            self.h = nn.ModuleList(Block() for _ in range(config["n_layer"]))
            self.ln_f = nn.LayerNorm(C)
            self.lm_head = nn.Linear(C, config["vocab_size"], bias=False)

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
            for block in self.h:
                x = block(x)
            logits = self.lm_head(self.ln_f(x))
            return nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1)

    model = TorchGPT()
    model.load_state_dict({name: torch.from_numpy(array) for name, array in state.items()})
    model.to(device)
    if lora:
        import peft
        model = peft.get_peft_model(model, peft.LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"],
                                                           target_modules=list(LORA["targets"])))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.01)
    idx_t, targets_t = torch.from_numpy(idx).to(device), torch.from_numpy(targets).to(device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(idx_t, targets_t).backward()
        optimizer.step()

    with torch.no_grad():
        first_loss = model(idx_t, targets_t).item()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    return step, first_loss, sync


def torch_available(lora=False):
    try:
        import torch  # noqa: F401
        if lora:
            import peft  # noqa: F401
    except ImportError:
        return False
    return True


# ---- the op profile ----------------------------------------------------------------------------
def all_functions(cls=Function):
    for sub in cls.__subclasses__():
        yield sub
        yield from all_functions(sub)


def profile(step, steps):
    """Seconds spent in each op's forward and backward over `steps` steps, and the total."""
    spent = collections.Counter()
    originals = {}

    def timed(fn, label):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] += time.perf_counter() - start
        return staticmethod(wrapper)

    for cls in all_functions():
        for kind in ("forward", "backward"):
            if kind in cls.__dict__:
                originals[(cls, kind)] = cls.__dict__[kind]
                setattr(cls, kind, timed(cls.__dict__[kind].__func__, f"{cls.__name__}.{kind}"))
    try:
        step()
        spent.clear()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        total = time.perf_counter() - start
    finally:
        for (cls, kind), original in originals.items():
            setattr(cls, kind, original)
    return spent, total


def print_profile(name, spent, total, steps, top=15):
    print(f"\nwhere a step's time goes, {name} ({total / steps * 1e3:.1f} ms per step, {steps} steps):")
    print(f"| {'op':<24} | ms/step | share |")
    print(f"|{'-' * 26}|---------|-------|")
    for label, seconds in spent.most_common(top):
        print(f"| {label:<24} | {seconds / steps * 1e3:7.2f} | {seconds / total:5.1%} |")
    outside = total - sum(spent.values())
    print(f"| {'(outside the ops)':<24} | {outside / steps * 1e3:7.2f} | {outside / total:5.1%} |")
    print("(outside the ops: the graph walk, optimizer, argument checks, Python overhead)")


# ---- the same breakdown for both, by kind of work ---------------------------------------------
# minilora's Function names and PyTorch's aten ops, grouped into the same kinds of work. PyTorch's
# linear layers and PEFT's adapters are the same aten products, so those two are one row.
KINDS = {
    "linear + LoRA products": (("Linear", "FusedLoRALinear"), ("aten::addmm", "aten::mm")),
    "attention products": (("MatMul",), ("aten::bmm",)),
    "softmax (+ mask, scale)": (("Softmax", "CausalSoftmax", "Where"), ("aten::_softmax", "aten::_softmax_backward_data",
                                                      "aten::masked_fill_", "aten::div", "aten::div_")),
    "layer norm": (("Normalize", "CompiledLayerNorm"), ("aten::native_layer_norm", "aten::native_layer_norm_backward")),
    "GELU": (("Gelu",), ("aten::gelu", "aten::gelu_backward")),
    "cross-entropy": (("CrossEntropy",), ("aten::_log_softmax", "aten::_log_softmax_backward_data",
                                          "aten::nll_loss_forward", "aten::nll_loss_backward")),
    "embedding": (("Embedding",), ("aten::embedding", "aten::embedding_dense_backward", "aten::index_select")),
}


def kind_of_minilora(label):
    op = label.split(".")[0]
    return next((kind for kind, (ours, _) in KINDS.items() if op in ours), "other ops")


def kind_of_torch(name):
    return next((kind for kind, (_, theirs) in KINDS.items() if name in theirs), "other ops")


def torch_profile(step, steps):
    """Milliseconds per step of each aten op (self time on the calling thread), and the total."""
    import torch

    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        total = time.perf_counter() - start
    spent = collections.Counter()
    for event in prof.key_averages():
        spent[event.key] += event.self_cpu_time_total / 1e6  # microseconds -> seconds
    return spent, total


def print_kinds(name, ours, ours_total, theirs, theirs_total, steps):
    """Where each step's time goes, by kind of work, minilora beside PyTorch."""
    by_kind = collections.Counter()
    for label, seconds in ours.items():
        by_kind["minilora", kind_of_minilora(label)] += seconds
    for label, seconds in theirs.items():
        by_kind["torch", kind_of_torch(label)] += seconds
    for who, total in (("minilora", ours_total), ("torch", theirs_total)):
        inside = sum(v for (w, _), v in by_kind.items() if w == who)
        by_kind[who, "(outside the ops)"] = total - inside
    kinds = list(KINDS) + ["other ops", "(outside the ops)"]
    print(f"\nwhere a step's time goes by kind of work, {name}, ms per step ({steps} steps each):")
    print("| kind | minilora | torch | minilora / torch |")
    print("|---|---|---|---|")
    for kind in kinds:
        a, b = by_kind["minilora", kind] / steps * 1e3, by_kind["torch", kind] / steps * 1e3
        print(f"| {kind} | {a:.1f} | {b:.1f} | {a / b:.2f}x |" if b > 0 else f"| {kind} | {a:.1f} | {b:.1f} | |")
    print(f"| total | {ours_total / steps * 1e3:.1f} | {theirs_total / steps * 1e3:.1f} | "
          f"{ours_total / theirs_total:.2f}x |")
    print("(torch: self time of each aten op on the calling thread; outside the ops: autograd engine, "
          "optimizer, Python)")


# ---- the table ---------------------------------------------------------------------------------
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(SIZES), help=f"comma-separated, from: {', '.join(SIZES)}")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--profile", action="store_true", help="also print the time per op for each size")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.sizes.split(",")]
    unknown = [n for n in names if n not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; choose from {list(SIZES)}")
    if args.device == "cuda" and not minilora.cuda_available():
        print(f"--device cuda: {minilora.backend.cuda_status()[1]}")
        return 1
    with_torch = not args.no_torch and torch_available(any(n.startswith("lora") for n in names))
    if with_torch:
        import torch
        print(f"PyTorch {torch.__version__} (eager, {torch.get_num_threads()} threads) as the outside reference")
    else:
        print("PyTorch (and for LoRA sizes PEFT) not importable, or --no-torch: minilora only")

    rows, profiles = [], []
    for name in names:
        config, batch = SIZES[name]
        rng = np.random.default_rng(0)
        idx = rng.integers(0, config["vocab_size"], size=(batch, config["block_size"]))
        targets = rng.integers(0, config["vocab_size"], size=(batch, config["block_size"]))
        tokens = idx.size
        lora = name.startswith("lora")
        # base_state is taken before the timed steps change the weights
        model, step, loss, base_state = minilora_step(config, idx, targets, args.device, lora)
        sync = minilora.backend.xp_for(args.device).cuda.Device().synchronize if args.device == "cuda" else (lambda: None)
        to_time = [(step, sync)]
        if with_torch:
            t_step, t_loss, t_sync = torch_step(config, base_state, idx, targets, args.device, lora)
            if abs(t_loss - loss) > 1e-4 * max(1.0, abs(loss)):
                raise RuntimeError(f"{name}: the PyTorch model's first loss {t_loss} differs from minilora's "
                                   f"{loss}: the two are not the same model")
            to_time.append((t_step, t_sync))
        times = time_steps(to_time, args.warmup, args.steps)
        row = {"size": name, "params": model.num_parameters(), "tokens": tokens,
               "minilora": times[0][0], "minilora cpu": times[0][1]}
        if with_torch:
            row["torch"], row["torch cpu"] = times[1]
        rows.append(row)
        if args.profile and args.device == "cpu":
            ours = profile(step, args.steps)
            theirs = torch_profile(t_step, args.steps) if with_torch else None
            profiles.append((name, ours, theirs))

    print(f"\none training step (forward + backward + AdamW) on {args.device}, median of {args.steps}")
    header = "| size | parameters | tokens/step | minilora ms | minilora tokens/s |"
    if with_torch:
        header += " torch ms | torch tokens/s | minilora / torch, wall | minilora / torch, CPU |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for r in rows:
        line = (f"| {r['size']} | {r['params']:,} | {r['tokens']} | {r['minilora'] * 1e3:.1f} | "
                f"{r['tokens'] / r['minilora']:,.0f} |")
        if with_torch:
            line += (f" {r['torch'] * 1e3:.1f} | {r['tokens'] / r['torch']:,.0f} | {r['minilora'] / r['torch']:.2f}x |"
                     f" {r['minilora cpu'] / r['torch cpu']:.2f}x |")
        print(line)
    for name, (spent, total), theirs in profiles:
        print_profile(name, spent, total, args.steps)
        if theirs is not None:
            print_kinds(name, spent, total, *theirs, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
