# %% [markdown]
# # 03 · Gradient checking
#
# A backward pass that is wrong does not crash. The loss still goes down a little, or not, and
# you are left guessing. The cure is old and simple: compare the gradient that backward computes
# with one *measured* by nudging each input and watching the output. This tutorial shows how to
# do that well:
#
# 1. forward versus central differences, and how the step size eps trades two errors;
# 2. why the check uses float64, and why it compares *relative* errors;
# 3. `minilora.gradcheck` on a correct op, and on two backwards with planted bugs, with the
#    reports it prints;
# 4. why the inputs must be random: a lucky input hides a bug (LoRA's own B = 0 start is one).
#
# **Time:** about 20 minutes; the code runs in a few seconds.
#
# **How to run it:** `python tutorials/03_gradient_checking.py` (or with `--fast`), or open it as a
# notebook (VS Code "Run Cell", or Jupyter with `jupytext`; see `tutorials/README.md`). Figures go
# to `minilora_runs/figures/` (or `$MINILORA_FIGURES`).

# %%
import numpy as np
from matplotlib.figure import Figure

import minilora
from minilora import F
from minilora.function import Function
from minilora.kernels import reference
from minilora.notebook import FAST, show

print(f"fast mode: {FAST}")
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Measuring a derivative
#
# The derivative is the limit of a difference quotient. Two ways to stop short of the limit:
#
#     forward difference   (f(x + eps) − f(x)) / eps                 error ≈ (eps/2)·f''(x)
#     central difference   (f(x + eps) − f(x − eps)) / (2·eps)       error ≈ (eps²/6)·f'''(x)
#
# The central difference is symmetric, so the f'' terms of the two sides cancel: its error
# shrinks with eps², not eps. But eps cannot be made tiny either: f(x + eps) and f(x − eps) agree
# in almost all their digits, and subtracting them leaves mostly *rounding error*, about
# (machine epsilon)·|f| / eps. So the total error first falls as eps shrinks, then rises again.
#
# Let's measure it for f = tanh at x = 0.7, where we know the answer exactly, f' = 1 − tanh².

# %%
def forward_difference(f, x, eps):
    return (f(x + eps) - f(x)) / eps


def central_difference(f, x, eps):
    return (f(x + eps) - f(x - eps)) / (2 * eps)


x0 = 0.7
exact = 1 - np.tanh(x0) ** 2
steps = np.logspace(-1, -13, 25 if FAST else 97)
errors = {}
for dtype in (np.float64, np.float32):
    x = dtype(x0)
    for name, rule in (("forward", forward_difference), ("central", central_difference)):
        # Every number in the computation has this dtype: x, eps, tanh and the arithmetic.
        errors[name, np.dtype(dtype).name] = np.array(
            [abs(float(rule(np.tanh, x, dtype(eps))) - exact) for eps in steps])

at_1e6 = int(np.argmin(np.abs(np.log10(steps) + 6)))     # the grid point eps = 1e-6
print(f"{'rule':<8} {'dtype':<8} {'error at eps=1e-6':>18} {'lowest error':>13} {'at eps':>7} "
      f"{'balance point':>14}")
at_gradcheck_eps = {}
for (name, dtype), err in errors.items():
    i = int(np.argmin(err))
    at_gradcheck_eps[name, dtype] = err[at_1e6]
    u = np.finfo(dtype).eps                                    # machine epsilon of the dtype
    balance = u ** 0.5 if name == "forward" else u ** (1 / 3)  # where the two errors are equal
    print(f"{name:<8} {dtype:<8} {err[at_1e6]:>18.1e} {err[i]:>13.1e} {steps[i]:>7.0e} {balance:>14.0e}")

assert at_gradcheck_eps["central", "float64"] < 1e-9 < at_gradcheck_eps["forward", "float64"]
assert at_gradcheck_eps["central", "float32"] > 1e-4    # float32 at eps = 1e-6: mostly rounding noise
assert errors["central", "float64"][-1] > 1e-6          # eps = 1e-13: rounding wins even in float64

fig = Figure(figsize=(7.5, 4.5))
ax = fig.subplots()
for (name, dtype), err in errors.items():
    ax.loglog(steps, np.maximum(err, 1e-17), marker=".",
              linestyle="-" if dtype == "float64" else "--", label=f"{name}, {dtype}")
ax.axvline(1e-6, color="gray", linewidth=0.8)
ax.text(1e-6, 0.03, " gradcheck's eps = 1e-6", fontsize=8, color="gray",
        transform=ax.get_xaxis_transform())   # x in data units, y as a fraction of the axes
ax.invert_xaxis()
ax.set(xlabel="eps (smaller to the right)", ylabel="|numeric − exact|",
       title="error of the difference quotient for tanh'(0.7)")
ax.grid(alpha=0.3, which="both")
ax.legend()
fig.tight_layout()
show(fig, "03_error_vs_eps")

# %% [markdown]
# Read the plot from left to right. While eps is large, the truncation error dominates: the forward
# lines fall by one decade per decade of eps, the central ones by two. Then rounding takes over and
# the lines climb again. The lowest point of each line lies roughly where the two errors balance,
# near u^(1/2) for the forward rule and u^(1/3) for the central one (u is the machine epsilon; the
# table prints both), give or take lucky dips where rounding errors happen to cancel. At
# gradcheck's eps = 1e-6, float64 central differences are accurate to many digits while float32
# ones are mostly noise, and below eps ≈ 1e-7 float32 loses the nudge entirely (x + eps rounds
# back to x).
#
# That is why minilora's gradient checks use **central differences in float64 with eps = 1e-6**:
# numeric gradients good to about 10 digits, so a correct backward agrees to about 1e-7 or better
# and a wrong one stands out by orders of magnitude.

# %% [markdown]
# ## 2. Relative, not absolute, error
#
# Gradients span many orders of magnitude. An absolute error of 0.01 is nothing for a gradient
# of 10,000 and everything for a gradient of 0.0001. The relative error |a − n| / max(|a|, |n|)
# (a = analytic, n = numeric) puts them on one scale. Near zero, though, the relative error of two
# tiny numbers is noise, so the test `minilora.gradcheck` applies to each element combines both:
#
#     |analytic − numeric| <= atol + rtol · |numeric|        (atol = 1e-5, rtol = 1e-3 by default)

# %%
analytic = np.array([10_000.01, 1e-4, 3e-12])
numeric = np.array([10_000.00, 2e-4, 1e-12])
absolute = np.abs(analytic - numeric)
relative = absolute / np.maximum(np.abs(analytic), np.abs(numeric))
passes = absolute <= 1e-5 + 1e-3 * np.abs(numeric)
print(f"{'analytic':>11} {'numeric':>11} {'abs err':>9} {'rel err':>9}  gradcheck's rule")
for row in zip(analytic, numeric, absolute, relative, passes):
    print(f"{row[0]:>11.4g} {row[1]:>11.4g} {row[2]:>9.1e} {row[3]:>9.1e}  {'pass' if row[4] else 'FAIL'}")
assert passes.tolist() == [True, False, True]

# %% [markdown]
# The first row is fine despite a "large" absolute error; the second is a factor of two off despite
# a "small" one; the third has a relative error of 67%, but both numbers are zero for all practical
# purposes, and atol lets it pass.

# %% [markdown]
# ## 3. `minilora.gradcheck`
#
# `gradcheck(fn, inputs)` does all of the above for a function of tensors. It turns the output into
# one number L = Σ out·v with fixed random weights v (so every output element counts, each
# differently), gets the analytic gradient of L from backward, and the numeric one by central
# differences, one input element at a time. Then it reports.
#
# First, a correct op: the LoRA layer's own `F.lora_linear`, y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ, checked
# with respect to all four inputs.

# %%
def random_inputs(*shapes):
    """Fresh float64 normal tensors that require grad: the inputs a gradient check wants."""
    return [minilora.tensor(rng.standard_normal(shape), requires_grad=True) for shape in shapes]


M, K, N, r, scaling = 3, 5, 4, 2, 2.0
x, W, A, B = random_inputs((M, K), (N, K), (r, K), (N, r))
result = minilora.gradcheck(lambda x, W, A, B: F.lora_linear(x, W, A, B, scaling), [x, W, A, B],
                            names=["x", "W", "A", "B"])
print(result)
assert result.ok and result.max_abs_err < 1e-7   # rounding only: 100 times inside atol = 1e-5

# %% [markdown]
# ### A planted bug: a forgotten transpose
#
# Here is a matrix product with its backward written by hand, and one mistake. For C = a·b the
# gradients are dL/da = G·bᵀ and dL/db = aᵀ·G (G = dL/dC). The second line forgets the transpose.
# The shapes still work out when a is square, so nothing crashes.

# %%
class MatMulForgotTranspose(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        return grad @ b.T, a @ grad        # BUG: dL/db is a.T @ grad


a, b = random_inputs((3, 3), (3, 2))
result = minilora.gradcheck(MatMulForgotTranspose.apply, [a, b], names=["a", "b"])
print(result)
assert not result.ok and result.worst_name == "b"
assert result.inputs[0].ok                 # the gradient of a is right, and the report says so

# %% [markdown]
# The report says which input is wrong (b), how many of its elements fail, the worst element with
# both values, and it prints both gradients in full when they are small. The gradient of a passes,
# which narrows the search to one line of backward.
#
# ### A planted bug in a LoRA backward
#
# Next, the LoRA layer y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ written as an op of our own. Its backward takes the
# right gradients from `minilora.kernels.reference` and then plants one slip: the scaling s is
# left out of dA, as if a factor had been forgotten in one line. (Deriving dx, dA and dB is lab 4,
# so the formulas stay out of this tutorial; minilora's real op lives in
# `minilora/ops/lora_linear.py`.)

# %%
class LoRAMissingScaling(Function):
    @staticmethod
    def forward(ctx, x, W, A, B, *, scaling):
        y, u = reference.lora_forward(x, W, A, B, scaling)
        ctx.save_for_backward(x, W, A, B, u)
        ctx.scaling = scaling
        return y

    @staticmethod
    def backward(ctx, dy):
        x, W, A, B, u = ctx.saved
        dx, dA, dB = reference.lora_backward(dy, x, W, A, B, u, ctx.scaling)
        return dx, None, dA / ctx.scaling, dB   # BUG: dA without its factor s; W is frozen: no gradient


def lora_with_bug(x, W, A, B):
    return LoRAMissingScaling.apply(x, W, A, B, scaling=scaling)


x, A, B = random_inputs((M, K), (r, K), (N, r))
W = minilora.tensor(rng.standard_normal((N, K)))           # frozen, as in LoRA
at_random_B = minilora.gradcheck(lora_with_bug, [x, W, A, B], names=["x", "W", "A", "B"])
print(at_random_B)
assert not at_random_B.ok and at_random_B.worst_name == "A"
assert "constant factor" in at_random_B.report()            # the hint: analytic = 0.5 × numeric

# %% [markdown]
# This time the report adds a **hint**: analytic = 0.5 × numeric everywhere, a constant factor off.
# With s = 2, that points straight at a missing s.
#
# ## 4. Why float64
#
# Section 1 showed that float32 central differences are good to a few digits at best, too coarse to
# tell a correct backward (agreeing to about 1e-7) from a slightly wrong one. gradcheck
# therefore refuses float32 inputs, and says why:

# %%
x32 = minilora.tensor(rng.standard_normal((2, 3)), requires_grad=True, dtype="float32")
try:
    minilora.gradcheck(lambda t: t.tanh(), [x32])
    refused = False
except TypeError as error:
    refused = True
    print(f"TypeError: {error}")
assert refused

# %% [markdown]
# A model written in float32 is checked by casting it, `module.to(dtype="float64")` or
# `x.to(dtype="float64")`; every minilora op works in both.

# %% [markdown]
# ## 5. Why random inputs: a lucky input hides a bug
#
# A gradient check can only fail where the bug changes a number. Some inputs make a wrong backward
# give the right answer by accident, and the most natural inputs are often exactly those.
#
# **LoRA starts with B = 0.** That is deliberate: the adapted model then starts equal to the base
# model. But A reaches y only through B (y has s·(x·Aᵀ)·Bᵀ in it), so with B = 0 the true dA is
# zero, and so is our buggy dA, which is the true one divided by s. Check the buggy op at LoRA's
# initial values:

# %%
B_init = minilora.zeros((N, r), dtype="float64").requires_grad_()
at_init = minilora.gradcheck(lora_with_bug, [x, W, A, B_init], names=["x", "W", "A", "B"])
print("B = 0:     ", at_init)
print("B random:  ", "passed" if at_random_B.ok else "FAILED (the report above)")
assert at_init.ok and not at_random_B.ok

# %% [markdown]
# It passes. A test that checked the layer "as it is created" would never find this bug, and
# training would quietly run with a learning rate for A that is s times too small.
#
# The same goes for a symmetric matrix and a forgotten transpose (aᵀ = a, so the bug of the
# matrix product above cannot show):

# %%
square = rng.standard_normal((3, 3))
a_sym = minilora.tensor(square + square.T, requires_grad=True)
b = random_inputs((3, 2))[0]
lucky = minilora.gradcheck(MatMulForgotTranspose.apply, [a_sym, b], names=["a", "b"])
print("symmetric a:", lucky)
assert lucky.ok

# %% [markdown]
# Hence the rules minilora's own tests follow: **fresh random inputs every time, never zeros or
# ones, no special structure**, shapes that are not all equal (a square matrix hides a transpose
# in the shapes too), and a check that must *fail* on a planted bug before we trust it to pass.
#
# ## Try it yourself: the labs
#
# The labs in `tutorials/labs/` ask you to write backwards of your own and check them against
# numerical gradients on random inputs, as above. Copy a lab into a folder of yours, fill it in,
# and check it with one command:
#
#     minilora lab start lora my_labs    # writes my_labs/lab4_lora.py
#     minilora lab check lora --file my_labs/lab4_lora.py
#
# The `lora` lab is the backward you just saw fail: dx, dA and dB of a LoRA layer. See
# `tutorials/labs/README.md` for the list.
#
# **Next:** tutorial 04 builds the minimal GPT that LoRA will adapt.
