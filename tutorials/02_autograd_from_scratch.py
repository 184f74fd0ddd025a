# %% [markdown]
# # 02 · Autograd from scratch
#
# Training LoRA needs the gradients dA and dB of a loss with respect to the adapter matrices.
# Nobody writes those out by hand for a whole model: an *autograd engine* records what the forward
# pass did and replays it backwards. This tutorial builds one in small steps and then opens
# minilora's own:
#
# 1. the chain rule by hand, on three scalar operations;
# 2. a tiny engine for scalars (about 50 lines), and a picture of the graph it records;
# 3. why gradients must be *added up* when a value is used twice;
# 4. minilora's `Tensor` and `Function`: the same ideas on arrays, forward and backward side by side;
# 5. why the backward pass runs in reverse topological order;
# 6. broadcasting, and why its backward is a sum.
#
# **Time:** about 20 minutes; the code runs in a few seconds.
#
# **How to run it:** `python tutorials/02_autograd_from_scratch.py` (or with `--fast`: the same
# here), or open it as a notebook (VS Code "Run Cell", or Jupyter with `jupytext`; see
# `tutorials/README.md`). Figures go to `minilora_runs/figures/` (or `$MINILORA_FIGURES`).

# %%
import inspect
import math
import sys

import numpy as np
from matplotlib.figure import Figure

import minilora
from minilora.function import Function
from minilora.notebook import FAST, show
from minilora.ops.broadcast import unbroadcast
from minilora.ops.unary import Tanh

print(f"fast mode: {FAST}")

# %% [markdown]
# ## 1. The chain rule by hand
#
# Take one neuron and a squared loss, written as three small steps:
#
#     z = w·x + b          h = tanh(z)          L = h²
#
# How does L change when w changes a little? Each step has an easy local derivative, and the chain
# rule multiplies them along the path from L back to w:
#
#     dL/dh = 2h        dh/dz = 1 − h²        dz/dw = x,   dz/dx = w,   dz/db = 1
#     dL/dw = dL/dh · dh/dz · dz/dw = 2h · (1 − h²) · x
#
# Notice the order: we start at L, where dL/dL = 1, and walk *backwards*. Every step needs a value
# the forward pass computed (h, x), which is why an engine keeps them.

# %%
x, w, b = 0.5, -1.5, 0.3

z = w * x + b            # forward, step by step
h = math.tanh(z)
L = h**2

dL_dh = 2 * h            # backward, step by step, from L to the inputs
dL_dz = dL_dh * (1 - h**2)
dL_dw, dL_dx, dL_db = dL_dz * x, dL_dz * w, dL_dz * 1.0
print(f"z = {z:.4f}, h = {h:.4f}, L = {L:.4f}")
print(f"dL/dw = {dL_dw:.6f}, dL/dx = {dL_dx:.6f}, dL/db = {dL_db:.6f}")


# A first sanity check: nudge w both ways and watch L (tutorial 03 is all about this).
def loss_at(x, w, b):
    return math.tanh(w * x + b) ** 2


eps = 1e-6
numeric = (loss_at(x, w + eps, b) - loss_at(x, w - eps, b)) / (2 * eps)
print(f"numerically:  {numeric:.6f}")
assert abs(numeric - dL_dw) < 1e-8

# %% [markdown]
# ## 2. A tiny engine for scalars
#
# Doing that by hand for millions of weights is hopeless, but every step was *local*: each operation
# only needs to know how to pass a gradient from its output to its own inputs. So let every
# operation record, on the value it produces:
#
# - `inputs`: the values it was computed from (that makes a graph);
# - `_backward`: a small function that takes `out.grad` and **adds** its share to each input's
#   `.grad`, using the local derivative.
#
# Then `backward()` visits the graph from the output back to the inputs and calls each
# `_backward` once. Here is the whole engine; forward and backward of each operation sit together.

# %%
class Value:
    """A scalar that remembers how it was computed."""

    def __init__(self, data, inputs=(), op="", label=""):
        self.data = data
        self.grad = 0.0              # d(output)/d(self), filled in by backward()
        self.inputs = inputs
        self.op = op
        self.label = label
        self._backward = lambda: None  # a leaf has no inputs to pass a gradient to

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other), "+")

        def _backward():             # d(a + b)/da = 1, d(a + b)/db = 1
            self.grad += out.grad
            other.grad += out.grad
        out._backward = _backward
        return out

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other), "*")

        def _backward():             # d(a·b)/da = b, d(a·b)/db = a
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad
        out._backward = _backward
        return out

    def tanh(self):
        t = math.tanh(self.data)
        out = Value(t, (self,), "tanh")

        def _backward():             # d tanh(a)/da = 1 - tanh(a)²
            self.grad += (1 - t * t) * out.grad
        out._backward = _backward
        return out

    def backward(self):
        # Order the graph so that every value comes after the values it was computed from...
        order, seen = [], set()

        def visit(v):
            if v not in seen:
                seen.add(v)
                for parent in v.inputs:
                    visit(parent)
                order.append(v)
        visit(self)
        # ...then walk it backwards from the output, where d(self)/d(self) = 1.
        self.grad = 1.0
        for v in reversed(order):
            v._backward()

    def __repr__(self):
        return f"Value({self.label or self.op}: data={self.data:.4f}, grad={self.grad:.4f})"


# %% [markdown]
# The same neuron, now with the engine. `L = h * h` uses h twice; hold that thought.

# %%
vx, vw, vb = Value(x, label="x"), Value(w, label="w"), Value(b, label="b")
vwx = vw * vx
vwx.label = "w·x"
vz = vwx + vb
vz.label = "z"
vh = vz.tanh()
vh.label = "h"
vL = vh * vh
vL.label = "L"
vL.backward()

for v in (vx, vw, vb, vz, vh, vL):
    print(v)
assert math.isclose(vL.data, L)
for value, by_hand in ((vw, dL_dw), (vx, dL_dx), (vb, dL_db)):
    assert math.isclose(value.grad, by_hand, rel_tol=1e-12)
print("the engine's gradients equal the ones worked out by hand")

# %% [markdown]
# ### Seeing the graph
#
# The forward pass built a graph: one node per value, the leaves (x, w, b) to the left of the
# operations that use them, the loss on the right. The drawing code below lays nodes out in columns
# by *depth* (an operation sits one column right of its deepest input, a leaf just left of the
# first operation that uses it) and draws an arrow from each input to the node that uses it. It
# takes two small functions, `inputs_of` and `label_of`, so the same code will draw minilora's
# graphs later.

# %%
def graph_layout(root, inputs_of):
    """Every node reachable from root, each with an (x, y) position; and the edges (input, user)."""
    nodes, edges, stack, seen = [], [], [root], {id(root)}
    while stack:
        node = stack.pop()
        nodes.append(node)
        for parent in inputs_of(node):
            edges.append((parent, node))
            if id(parent) not in seen:
                seen.add(id(parent))
                stack.append(parent)
    users = {}
    for parent, child in edges:
        users.setdefault(id(parent), []).append(child)

    # Depth: an op sits one column right of its deepest input. A leaf sits just left of its
    # first user, so that a constant used late does not send a long arrow across the picture.
    def depths(leaf_depth):
        memo = {}

        def depth_of(node):          # recursive, which is fine for the small graphs drawn here
            if id(node) not in memo:
                ins = inputs_of(node)
                memo[id(node)] = 1 + max(map(depth_of, ins)) if ins else leaf_depth.get(id(node), 0)
            return memo[id(node)]
        return {id(n): depth_of(n) for n in nodes}

    depth = depths({})
    depth = depths({id(n): min(depth[id(u)] for u in users[id(n)]) - 1
                    for n in nodes if not inputs_of(n) and id(n) in users})

    columns = {}
    for node in nodes:
        columns.setdefault(depth[id(node)], []).append(node)
    row = {id(n): float(i) for column in columns.values() for i, n in enumerate(column)}

    # Fewer crossing arrows: order each column by the mean row of its neighbours (the inputs of an
    # op, the users of a leaf), sweeping left to right twice.
    def mean_row(n):
        neighbours = inputs_of(n) or users.get(id(n), [])
        return sum(row[id(m)] for m in neighbours) / max(len(neighbours), 1)

    for _ in range(2):
        for d in sorted(columns):
            columns[d].sort(key=mean_row)
            row.update({id(n): i - (len(columns[d]) - 1) / 2 for i, n in enumerate(columns[d])})
    position = {id(n): (depth[id(n)], -row[id(n)]) for n in nodes}
    return nodes, edges, position


def draw_graph(ax, root, inputs_of, label_of, color_of=lambda node: "lightyellow", title=""):
    """Draw the graph that ends in `root` on a matplotlib Axes."""
    nodes, edges, position = graph_layout(root, inputs_of)
    drawn = {}
    for parent, child in edges:
        # A node used twice by one op (h * h) gets two arrows; bend the second so both show.
        repeat = drawn[id(parent), id(child)] = drawn.get((id(parent), id(child)), -1) + 1
        # An arrow that skips a column would run straight through the nodes standing in it: bend it.
        skips = abs(position[id(child)][0] - position[id(parent)][0]) > 1
        ax.annotate("", xy=position[id(child)], xytext=position[id(parent)],
                    arrowprops={"arrowstyle": "->", "color": "gray", "shrinkA": 26, "shrinkB": 26,
                                "connectionstyle": f"arc3,rad={0.4 * repeat + (0.3 if skips else 0)}"})
    for node in nodes:
        ax.text(*position[id(node)], label_of(node), ha="center", va="center", fontsize=8,
                bbox={"boxstyle": "round", "facecolor": color_of(node), "edgecolor": "gray"})
    xs = [p[0] for p in position.values()]
    ys = [p[1] for p in position.values()]
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
    ax.set_title(title)
    ax.axis("off")
    return nodes, edges


fig = Figure(figsize=(9, 3.2))
ax = fig.subplots()
nodes, edges = draw_graph(
    ax, vL, inputs_of=lambda v: v.inputs,
    label_of=lambda v: f"{v.label or v.op}\ndata {v.data:.3f}\ngrad {v.grad:.3f}",
    color_of=lambda v: "lightblue" if not v.inputs else "lightyellow",
    title="L = tanh(w·x + b)²: leaves in blue, the loss on the right")
fig.tight_layout()
show(fig, "02_scalar_graph")
assert len(nodes) == 7 and len(edges) == 7   # x, w, b, w·x, z, h, L; h -> L twice (h * h)

# %% [markdown]
# The two arrows from h to L are the two uses of h in `h * h`. Each one sends a gradient back.

# %% [markdown]
# ## 3. Why `+=`: a value used twice
#
# In `L = h * h`, the multiplication's backward hands `h.data * out.grad` to its first input *and*
# to its second, and both are h. With `+=` h collects both: 2h, the right answer. With `=`, the
# second hand-off overwrites the first. Here is that bug, planted in a copy of the multiplication:

# %%
class ForgetfulValue(Value):
    def __mul__(self, other):
        out = ForgetfulValue(self.data * other.data, (self, other), "*")

        def _backward():
            self.grad = other.data * out.grad     # '=' instead of '+=': the bug
            other.grad = self.data * out.grad
        out._backward = _backward
        return out


good, bad = Value(3.0), ForgetfulValue(3.0)
(good * good).backward()
(bad * bad).backward()
print(f"d(x·x)/dx at x = 3:  with +=: {good.grad}   with =: {bad.grad}   (the answer is 2x = 6)")
assert good.grad == 6.0 and bad.grad == 3.0

# %% [markdown]
# The same happens whenever a value feeds two operations, which in a network is everywhere: the
# input x of a LoRA layer goes both into x·Wᵀ and into x·Aᵀ, and its gradient is the sum of what
# comes back along both paths. Adding up gradients is not a special case; it *is* the chain rule
# for a value with several uses (the "multivariable chain rule").

# %% [markdown]
# ## 4. minilora: the same ideas on arrays
#
# minilora's engine is this engine, with arrays instead of numbers:
#
# | scalar engine | minilora |
# |---|---|
# | `Value.data`, `.grad` | `Tensor.data`, `.grad`: NumPy (or CuPy) arrays |
# | the inputs and `_backward` closure kept on the output | a `Context` kept on the output (`_ctx`): the op, its inputs, what forward saved |
# | `__mul__` and its `_backward` | an op class with `forward(ctx, ...)` and `backward(ctx, grad)` side by side (`minilora/ops/`) |
# | `backward()`: topological order, then reverse | `Tensor.backward()` in `minilora/tensor.py` |
#
# Here is a real op, tanh, from `minilora/ops/unary.py`. Compare it with `Value.tanh` above:

# %%
print(inspect.getsource(Tanh))

# %% [markdown]
# `forward` works on raw arrays through `ctx.xp` (NumPy on the CPU, CuPy on the GPU), saves y for
# later and returns the output. `backward` receives dL/dy as an array and returns dL/dx. The
# engine's `Tanh.apply(t)` (what `t.tanh()` calls) unwraps tensors, runs forward, and records the
# Context on the output so that backward can find it.
#
# The same neuron with minilora tensors, in float64 so the comparison with the hand-worked numbers
# is exact to many digits:

# %%
tx = minilora.tensor(x, requires_grad=True, dtype="float64")
tw = minilora.tensor(w, requires_grad=True, dtype="float64")
tb = minilora.tensor(b, requires_grad=True, dtype="float64")
th = (tw * tx + tb).tanh()
tL = th * th
tL.backward()
print(f"L = {tL.item():.6f}; dL/dw = {tw.grad.item():.6f}, dL/dx = {tx.grad.item():.6f}, "
      f"dL/db = {tb.grad.item():.6f}")
for tensor, by_hand in ((tw, dL_dw), (tx, dL_dx), (tb, dL_db)):
    assert math.isclose(tensor.grad.item(), by_hand, rel_tol=1e-12)

# %% [markdown]
# Writing your own op is the same two methods. Here is x³ (minilora has `**`, but this shows the
# pattern a lab asks you to follow): save what backward needs, and return one gradient per input.

# %%
class Cube(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved
        return grad * 3 * x * x       # d(x³)/dx = 3x²


t = minilora.tensor([1.0, -2.0, 0.5], requires_grad=True, dtype="float64")
Cube.apply(t).sum().backward()
print(f"x = {t.data}, d(Σ x³)/dx = {t.grad}")
assert np.allclose(t.grad, 3 * t.data**2)

# %% [markdown]
# ### A LoRA layer's graph
#
# Now a graph that matters for this project: a LoRA layer written with plain ops,
# `y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ`, and a loss. W is frozen (`requires_grad=False`), A and B train.
# We draw it with the same function; `_ctx.inputs` plays the part of `Value.inputs`. (The
# underscore marks `_ctx` as the engine's own business; we peek at it here only to draw it.)

# %%
minilora.manual_seed(0)
M, K, N, r, s = 4, 6, 5, 2, 2.0
x_in = minilora.randn((M, K), dtype="float64")
W = minilora.randn((N, K), dtype="float64")                        # frozen
A = minilora.randn((r, K), dtype="float64").requires_grad_()      # trains
B = minilora.randn((N, r), dtype="float64").requires_grad_()      # trains
x_in.requires_grad_()   # we want dx too: a LoRA layer passes it on to the layer below
W_T = W.T                   # W does not require grad, so Wᵀ is a plain (frozen) tensor too
y = x_in @ W_T + s * ((x_in @ A.T) @ B.T)
loss = (y * y).mean()
loss.backward()

names = {id(x_in): "x", id(W_T): "Wᵀ (frozen)", id(A): "A", id(B): "B"}


def tensor_inputs(t):
    return t._ctx.inputs if t._ctx is not None else ()


def tensor_label(t):
    if t._ctx is not None:
        return f"{t._ctx.function.__name__}\n{t.shape}"
    if t.ndim == 0:
        return f"constant\n{t.item():g}"       # the Python number s, wrapped by Mul
    return f"{names.get(id(t), 'constant')}\n{t.shape}"


def tensor_color(t):
    if t._ctx is not None:
        return "lightyellow"
    return "lightblue" if t.requires_grad else "lightgray"


fig = Figure(figsize=(11, 4.2))
ax = fig.subplots()
draw_graph(ax, loss, tensor_inputs, tensor_label, tensor_color,
           title="a LoRA layer and a loss: trainable leaves blue, frozen and constants gray")
fig.tight_layout()
show(fig, "02_lora_graph")

# x feeds two matmuls, so its gradient is the sum of two paths. Check that with the engine itself:
# run the same forward twice more, each time letting x reach y along one path only (the other
# path gets a detached copy with the same values, so y and the loss are the same numbers).
def grad_of_x_along(path):
    x_path = x_in.detach().requires_grad_()
    x_frozen = x_in.detach()
    through_W, through_A = (x_path, x_frozen) if path == "W" else (x_frozen, x_path)
    y_path = through_W @ W_T + s * ((through_A @ A.detach().T) @ B.detach().T)   # A, B: no second .grad
    (y_path * y_path).mean().backward()
    return x_path.grad


assert np.allclose(x_in.grad, grad_of_x_along("W") + grad_of_x_along("A"))
assert W.grad is None                                         # frozen: no gradient computed
print("dx = (the gradient along the path through W) + (the gradient along the path through A); W got no gradient")

# %% [markdown]
# The engine found dx, dA and dB by chaining six small ops. Writing them as three formulas is
# lab 4 (`minilora lab start lora`); the fused kernel of tutorial 07 computes exactly those.

# %% [markdown]
# ## 5. Why reverse topological order
#
# An op's backward needs the *complete* gradient of its output, so it may run only after every op
# that used that output has sent its share. "Every node after all its inputs" is a topological
# order; walked in reverse, every node comes before its inputs, so by the time we reach a node,
# all its consumers are done.
#
# We can watch the order with an op that does nothing forward (the identity) and writes its name
# down when its backward runs:

# %%
backward_calls = []


class Trace(Function):
    @staticmethod
    def forward(ctx, x, *, name):
        ctx.name = name
        return x.copy()

    @staticmethod
    def backward(ctx, grad):
        backward_calls.append(ctx.name)
        return grad


t = minilora.tensor([1.0, 2.0], requires_grad=True, dtype="float64")
a = Trace.apply(t * 2.0, name="a")
b_ = Trace.apply(a * 3.0, name="b")          # b uses a
c = Trace.apply(a * b_, name="c")            # c uses a and b
Trace.apply(c.sum(), name="loss").backward()
print("backward ran in the order:", " -> ".join(backward_calls))

# a is used by b and by c, so a's backward must wait for both.
position = {name: i for i, name in enumerate(backward_calls)}
assert position["loss"] < position["c"] < position["b"] < position["a"]
assert backward_calls.count("a") == 1     # once, with both contributions already added up
# a = 2t, b = 3a = 6t, c = a·b = 12t², so d(Σc)/dt = 24t: both paths through a were counted.
assert np.allclose(t.grad, 24 * t.data)

# %% [markdown]
# How the order is found matters too. The scalar engine's `visit` calls itself once per level of
# the graph, so a graph deeper than Python's recursion limit breaks it. minilora's
# `Tensor._topological_order` keeps its own stack instead (look at it in `minilora/tensor.py`),
# so a long chain of ops is no problem:

# %%
depth = sys.getrecursionlimit() + 100
chain = Value(1.0)
for _ in range(depth):
    chain = chain + 1.0
try:
    chain.backward()
    recursion_failed = False
except RecursionError:
    recursion_failed = True
print(f"scalar engine, a chain of {depth} additions: "
      f"{'RecursionError' if recursion_failed else 'fine'}")

start = minilora.tensor(1.0, requires_grad=True, dtype="float64")
chain = start
for _ in range(depth):
    chain = chain + 1.0
chain.backward()
print(f"minilora, the same chain: d(out)/d(start) = {start.grad.item()}")
assert recursion_failed and start.grad.item() == 1.0

# %% [markdown]
# ## 6. Broadcasting, undone by summing
#
# NumPy lets you add a bias of shape (4,) to a batch of shape (3, 4): the bias is *broadcast*, as
# if copied into each of the 3 rows. Every copy then receives its own gradient, and since all
# copies are the same number, the bias's gradient is their **sum**: broadcasting in the forward
# is a sum in the backward. The same holds for an axis of size 1 (shape (3, 1) against (3, 4)).

# %%
minilora.manual_seed(1)
batch = minilora.randn((3, 4), dtype="float64")
bias = minilora.randn((4,), dtype="float64").requires_grad_()
column = minilora.randn((3, 1), dtype="float64").requires_grad_()
weights = minilora.randn((3, 4), dtype="float64")     # makes every element of the output count differently

((batch + bias + column) * weights).sum().backward()
print("bias.grad   =", np.round(bias.grad, 4), "  weights summed over rows:   ", np.round(weights.data.sum(axis=0), 4))
print("column.grad =", np.round(column.grad.ravel(), 4), "  weights summed over columns:", np.round(weights.data.sum(axis=1), 4))
assert bias.grad.shape == (4,) and np.allclose(bias.grad, weights.data.sum(axis=0))
assert column.grad.shape == (3, 1) and np.allclose(column.grad, weights.data.sum(axis=1, keepdims=True))

# %% [markdown]
# Every op that broadcasts (add, sub, mul, div) passes its gradient through one helper,
# `minilora.ops.broadcast.unbroadcast(grad, shape)`, that sums over the axes broadcasting added or
# stretched. Here is what it does, on a gradient of shape (2, 3, 4) of an output that an input was
# broadcast into; writing it yourself is part 2 of lab 1 (`minilora lab start matmul`), so its
# source is not printed here.

# %%
grad = np.ones((2, 3, 4))
for shape in [(4,), (3, 1), (1, 3, 4)]:
    summed = unbroadcast(grad, shape)
    copies = grad.size // summed.size
    print(f"input of shape {shape!s:<10} gradient of shape {summed.shape}: each element sums {copies} copies")
    assert summed.shape == shape and np.all(summed == copies)

# %% [markdown]
# ## What you have seen
#
# - The chain rule turns one big derivative into local ones, multiplied from the loss backwards.
# - An engine records, for every result, its inputs and how to pass a gradient back to them.
# - Gradients of a value used several times are **added** (`+=`), which is the chain rule.
# - The backward pass runs in reverse topological order so each op sees its output's full
#   gradient; minilora finds that order without recursion.
# - Broadcasting copies values forward, so its backward sums them.
# - Gradients are checked against numbers, not trusted: that is tutorial 03, and the labs.
#
# **Next:** tutorial 03 checks gradients numerically, the tool that catches a wrong backward,
# and the labs (`minilora lab check <name>`, `tutorials/labs/`) let you write your own.
