"""The CUDA "nf4" rung (W in NF4, dequantized by the tile loader; csrc/cuda/lora_nf4.cu) on a GPU,
against the float64 reference on W dequantized (kernels/nf4_check.py), as the emulated tests
(test_emulated_nf4.py) check it without one. Outputs are NaN-poisoned buffers passed as `out=`.

The GPU tests are marked `gpu` and skipped with the reason where the kernels cannot run; the
binding's checks run wherever minilora._C was built with CUDA, since they refuse before any CUDA
call.
"""

import numpy as np
import pytest

from minilora import backend, kernels
from minilora.kernels import cuda as cuda_kernels
from minilora.kernels import nf4, nf4_check

from lora_shapes import GPU_SHAPES

KERNELS_USABLE, KERNELS_REASON = cuda_kernels.status()
needs_kernels = pytest.mark.skipif(not KERNELS_USABLE, reason=KERNELS_REASON or "")


def on_gpu(a):
    cp = backend.xp_for("cuda")
    return {name: value.to("cuda") if name == "W" else cp.asarray(value) for name, value in a.items()}


def nan(*shapes, dtype):
    cp = backend.xp_for("cuda")
    return tuple(cp.full(shape, np.nan, dtype=dtype) for shape in shapes)


@pytest.mark.gpu
@needs_kernels
@pytest.mark.parametrize("double_quant", [False, True], ids=["absmax32", "double_quant"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: "M{}_N{}_K{}_r{}".format(*s))
def test_nf4_rung_matches_reference_on_the_gpu(rng, shape, dtype, double_quant):
    M, N, K, r = shape
    a, s, expected = nf4_check.random_layer(rng, M, N, K, r, dtype, 7 if (N * K) % 2 else 64, double_quant)
    d = on_gpu(a)
    y, u = cuda_kernels.forward(d["x"], d["W"], d["A"], d["B"], s, d["bias"], variant=nf4.VARIANT,
                                out=nan((M, N), (M, r), dtype=dtype))
    grads = cuda_kernels.backward(d["dy"], d["x"], d["W"], d["A"], d["B"], d["u"], s, variant=nf4.VARIANT,
                                  out=nan((M, K), (r, K), (N, r), dtype=dtype))
    outputs = dict(zip(nf4_check.NAMES, (backend.to_numpy(o) for o in (y, u) + grads)))
    assert not nf4_check.failures(outputs, expected)


@pytest.mark.gpu
@needs_kernels
def test_cupy_arrays_with_an_nf4_weight_go_to_the_nf4_rung(rng):
    a, s, expected = nf4_check.random_layer(rng, 3, 70, 65, 4, np.float32, 64)
    d = on_gpu(a)
    y, u = kernels.lora_forward(d["x"].reshape(1, 3, 65), d["W"], d["A"], d["B"], s, d["bias"])
    assert not nf4_check.failures({"y": backend.to_numpy(y).reshape(3, 70)}, expected)
    with pytest.raises(ValueError, match="an NF4 weight runs on the CUDA rung 'nf4' only"):
        kernels.lora_forward(d["x"], d["W"], d["A"], d["B"], s, variant="fused")
    y, _ = kernels.lora_forward(d["x"], d["W"], d["A"], d["B"], s, d["bias"], backend="cupy")
    assert not nf4_check.failures({"y": backend.to_numpy(y)}, expected)
    with pytest.raises(ValueError, match=r"W is an NF4Tensor on 'cpu' but the other arrays are on 'cuda'"):
        kernels.lora_forward(d["x"], a["W"], d["A"], d["B"], s)


@pytest.mark.gpu
@needs_kernels
def test_a_model_with_an_nf4_base_moves_to_the_gpu_and_computes_the_same(rng):
    """model.to("cuda") moves the NF4 bases too (NF4Linear._moved_to): the loss and the LoRA
    gradients on the GPU are those on the CPU, to float32 rounding."""
    import minilora
    from minilora.lora import LoRAConfig, apply_lora
    from minilora.nn import GPT, GPTConfig

    config = GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=64)
    model = apply_lora(GPT(config), LoRAConfig(r=4, base_quant="nf4", base_quant_scope="all-linear"))
    idx = rng.integers(0, 32, size=(2, 16))
    results = {}
    for device in ("cpu", "cuda"):
        model.to(device)
        model.zero_grad()
        assert model.h[0].attn.q_proj.base.weight_nf4.device == device
        _, loss = model(minilora.tensor(idx, device=device), minilora.tensor(idx, device=device))
        loss.backward()
        results[device] = (loss.item(), backend.to_numpy(model.h[1].attn.v_proj.lora_B.grad))
    assert abs(results["cpu"][0] - results["cuda"][0]) <= 1e-4 * abs(results["cpu"][0])
    np.testing.assert_allclose(results["cuda"][1], results["cpu"][1], rtol=1e-3, atol=1e-5)


def test_nf4_binding_refuses_before_any_cuda_call():
    _C = pytest.importorskip("minilora._C", reason="minilora._C is not built here")
    if not _C.with_cuda:
        pytest.skip("minilora._C was built without CUDA")
    # M = N = K = r = 2: made-up, well-separated addresses; every call below is refused first.
    x, packed, absmax, code, A, B, y, u = (0x10000 * (i + 1) for i in range(8))

    def forward(**changes):
        p = dict(packed=packed, absmax=absmax, code=code, block_size=64, y=y) | changes
        _C.lora_forward_nf4_cuda("float32", x, p["packed"], p["absmax"], p["code"], p["block_size"], A, B,
                                 0, p["y"], u, 0, 0, 2, 2, 2, 2, 1.0, 0)

    with pytest.raises(ValueError, match=r"W.packed is a null pointer"):
        forward(packed=0)
    with pytest.raises(ValueError, match=r"block_size = 0, expected at least 1"):
        forward(block_size=0)
    with pytest.raises(ValueError, match=r"output y \(4 elements at 0x20000\) overlaps W.packed"):
        forward(y=packed)
    # The workspace of the nf4 rung is the tiled rung's: the same plans.
    for M, N, K, r in ((2, 2, 2, 2), (8, 40, 530, 4), (530, 20, 24, 3)):
        for backward in (False, True):
            assert (_C.lora_workspace_size("nf4", "float32", M, N, K, r, backward) ==
                    _C.lora_workspace_size("tiled", "float32", M, N, K, r, backward))
