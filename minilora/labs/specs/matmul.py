"""Lab 1, matmul: the gradients of c = a @ b, first for two matrices, then with batch axes that broadcast.

    c = a @ b        grad_a = grad @ bᵀ        grad_b = aᵀ @ grad

With batch axes, an operand that was broadcast (b of shape (K, N) used by every matrix of a
(B, M, K)) gets the sum of the gradients of all its copies.
"""

from minilora.labs.draw import away_from_zero, sizes
from minilora.labs.spec import Case, Lab, LabFunction


def forward(a, b):
    return a @ b, {}


def _case(rng, a_shape, b_shape, why=""):
    return Case(f"a {a_shape} @ b {b_shape}{why}",
                {"a": away_from_zero(rng, a_shape), "b": away_from_zero(rng, b_shape)})


def matrix_cases(rng):
    cases = []
    for _ in range(2):
        m, k, n = sizes(rng, 3)
        cases.append(_case(rng, (m, k), (k, n)))
    return cases


def batched_cases(rng):
    batch, other_batch, m, k, n = sizes(rng, 5)
    return [
        _case(rng, (batch, m, k), (batch, k, n), ", one b per matrix of a"),
        _case(rng, (batch, m, k), (k, n), ", b broadcast over the batch axis"),
        _case(rng, (m, k), (batch, k, n), ", a broadcast over the batch axis"),
        _case(rng, (other_batch, 1, m, k), (batch, k, n), ", a's axis of size 1 broadcast against b's batch axis"),
    ]


LAB = Lab(
    number=1,
    name="matmul",
    title="matrix product: grad_a and grad_b, with broadcasting batch axes",
    file_name="lab1_matmul.py",
    functions=(
        LabFunction(name="matmul_backward", arguments=("grad", "a", "b"), gradients=("grad_a", "grad_b"),
                    wrt=("a", "b"), forward=forward, make_cases=matrix_cases),
        LabFunction(name="batched_matmul_backward", arguments=("grad", "a", "b"),
                    gradients=("grad_a", "grad_b"), wrt=("a", "b"), forward=forward, make_cases=batched_cases,
                    broadcast=("a", "b")),
    ),
)
