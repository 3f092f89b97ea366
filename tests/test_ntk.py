"""The exact NTK: every method against a brute-force per-example Jacobian contraction."""
import copy
import importlib
import itertools

import numpy as np
import pytest
import torch
from torch import nn

import silentlib as sl



def brute_force_ntk(model, x1, x2):
    """K[i, j, a, b] = sum over trainable parameters of df_a(x1_i)/dθ df_b(x2_j)/dθ,
    one torch.autograd.grad call per (example, output); returns (P1, P2, C, C)."""
    params = [p for p in model.parameters() if p.requires_grad]

    def jac(x):
        rows = []
        for i in range(x.shape[0]):
            out = model(x[i:i + 1]).reshape(-1)
            for a in range(out.shape[0]):
                g = torch.autograd.grad(out[a], params, retain_graph=True, allow_unused=True)
                rows.append(torch.cat([(torch.zeros_like(p) if gi is None else gi).reshape(-1)
                                       for gi, p in zip(g, params)]))
        J = torch.stack(rows)
        return J.reshape(x.shape[0], -1, J.shape[1])   # (P, C, n_params)

    J1, J2 = jac(x1), jac(x2)
    return torch.einsum("iak,jbk->ijab", J1, J2).detach()


def as4(K):
    return K if K.ndim == 4 else K[:, :, None, None]


def rel_err(A, B):
    A, B = as4(A).detach(), as4(B).detach()
    return float((A - B).abs().max() / B.abs().max())


def randomize_biases(model, generator):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.copy_(0.5 * torch.randn(m.bias.shape, generator=generator))


# depth 1 (f = w.x [+ b]) has no activation, so one activation stands for all three there
MLP_CASES = [c for c in itertools.product([1, 2, 3, 4], ["linear", "relu", "tanh"], [False, True], [1, 3])
             if c[0] > 1 or c[1] == "linear"]


@pytest.mark.parametrize("depth,activation,bias,C", MLP_CASES)
def test_mlp_methods_agree_with_brute_force(depth, activation, bias, C):
    g = torch.Generator().manual_seed(1000 * depth + 10 * C + bias)
    torch.manual_seed(1000 * depth + 10 * C + bias)
    model = sl.MLP(5, 7, depth, out_dim=C, activation=activation, sigma=1.3, bias=bias)
    if bias:
        randomize_biases(model, g)
    x1 = torch.randn(6, 5, generator=g)
    x2 = torch.randn(4, 5, generator=g)
    for a, b in [(x1, x1), (x1, x2)]:
        ref = brute_force_ntk(model, a, b)
        assert float(ref.abs().max()) > 0
        # block_size=2 splits the 6 (or 4) inputs into several blocks; auto uses its default size
        for method, block_size in (("layerwise", 2), ("jacobian", 2), ("vp", 2), ("auto", None)):
            K = sl.ntk(model, a, None if b is a else b, method=method, block_size=block_size)
            expected_shape = (a.shape[0], b.shape[0]) + ((C, C) if C > 1 else ())
            assert tuple(K.shape) == expected_shape, (method, K.shape)
            assert K.dtype == torch.float64
            err = rel_err(K, ref)
            assert err < 1e-10, f"{method} block_size={block_size}: relative error {err:.2e}"


def test_cross_kernel_is_transpose_of_swapped():
    torch.manual_seed(0)
    model = sl.MLP(4, 6, 3, out_dim=2, activation="tanh")
    x1, x2 = torch.randn(5, 4), torch.randn(3, 4)
    K12 = sl.ntk(model, x1, x2)
    K21 = sl.ntk(model, x2, x1)
    assert rel_err(K12, K21.permute(1, 0, 3, 2)) < 1e-12


def test_plain_sequential_with_gelu_layerwise():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 9), nn.GELU(), nn.Linear(9, 2))
    x1, x2 = torch.randn(5, 4), torch.randn(3, 4)
    for a, b in [(x1, None), (x1, x2)]:
        ref = brute_force_ntk(model, a, a if b is None else b)
        K = sl.ntk(model, a, b, method="layerwise")
        assert K.shape == ref.shape
        assert rel_err(K, ref) < 1e-10


def test_plain_sequential_scalar_output_shape():
    """nn.Linear(., 1) gives outputs (P, 1): a one-output kernel of shape (P, P, 1, 1)."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1))
    x = torch.randn(4, 3)
    K = sl.ntk(model, x, method="layerwise")
    assert tuple(K.shape) == (4, 4, 1, 1)
    assert rel_err(K, brute_force_ntk(model, x, x)) < 1e-10


def test_layerwise_rejects_non_sequential():
    model = sl.WideResNet(widen=1, channels=1)
    with pytest.raises(ValueError, match="layerwise"):
        sl.ntk(model, torch.randn(2, 1, 8, 8), method="layerwise")


def test_wide_resnet_jacobian_vp_brute_force():
    torch.manual_seed(3)
    model = sl.WideResNet(widen=1, block_size=1, channels=3, out_dim=1).double()
    x1 = torch.randn(3, 3, 8, 8)
    x2 = torch.randn(2, 3, 8, 8)
    ref = brute_force_ntk(model, x1, x2)
    Kj = sl.ntk(model, x1, x2, method="jacobian")
    Kv = sl.ntk(model, x1, x2, method="vp", block_size=1)
    Ka = sl.ntk(model, x1, x2)                      # auto -> jacobian for a non-Sequential model
    assert tuple(Kj.shape) == (3, 2)
    assert rel_err(Kj, Kv) < 1e-10
    assert rel_err(Kj, ref) < 1e-10
    assert rel_err(Ka, Kj) < 1e-14


def test_wide_resnet_multi_output():
    torch.manual_seed(4)
    model = sl.WideResNet(widen=1, channels=1, out_dim=2).double()
    x = torch.randn(2, 1, 8, 8)
    Kj = sl.ntk(model, x, method="jacobian")
    Kv = sl.ntk(model, x, method="vp")
    assert tuple(Kj.shape) == (2, 2, 2, 2)
    assert rel_err(Kj, Kv) < 1e-10


@pytest.mark.parametrize("method", ["layerwise", "jacobian", "vp"])
def test_float32_matches_float64(method):
    torch.manual_seed(5)
    m64 = sl.MLP(10, 32, 3, out_dim=2, activation="relu", sigma=1.0, bias=True)
    randomize_biases(m64, torch.Generator().manual_seed(5))
    m32 = copy.deepcopy(m64).float()
    x = torch.randn(12, 10)
    K64 = sl.ntk(m64, x, method=method)
    K32 = sl.ntk(m32, x.float(), method=method)
    assert K32.dtype == torch.float32 and K64.dtype == torch.float64
    err = rel_err(K32.double(), K64)
    assert err < 1e-4, f"float32 vs float64 relative error {err:.2e}"
    assert err > 0     # really computed in float32


@pytest.mark.parametrize("method", ["layerwise", "jacobian", "vp"])
@pytest.mark.parametrize("C", [1, 3])
def test_symmetric_psd(method, C):
    torch.manual_seed(6)
    model = sl.MLP(6, 20, 3, out_dim=C, activation="tanh", sigma=1.2)
    x = torch.randn(15, 6)
    K = sl.ntk(model, x, method=method, block_size=4)
    Km = as4(K).permute(0, 2, 1, 3).reshape(15 * C, 15 * C)
    assert torch.equal(Km, Km.T) or float((Km - Km.T).abs().max() / Km.abs().max()) < 1e-13
    lam = torch.linalg.eigvalsh(0.5 * (Km + Km.T))
    assert float(lam.min()) >= -1e-10 * float(lam.max())


@pytest.mark.parametrize("frozen", ["first_weight", "last_layer", "weight_keep_bias"])
def test_frozen_parameters_excluded(frozen):
    torch.manual_seed(7)
    model = sl.MLP(5, 8, 3, out_dim=2, activation="relu", bias=True)
    randomize_biases(model, torch.Generator().manual_seed(7))
    lins = model.linears
    if frozen == "first_weight":
        lins[0].weight.requires_grad_(False)
    elif frozen == "last_layer":
        lins[-1].weight.requires_grad_(False)
        lins[-1].bias.requires_grad_(False)
    else:                        # a frozen weight whose bias still trains
        lins[1].weight.requires_grad_(False)
    x1, x2 = torch.randn(4, 5), torch.randn(3, 5)
    ref = brute_force_ntk(model, x1, x2)        # over trainable parameters only
    full = copy.deepcopy(model)
    for p in full.parameters():
        p.requires_grad_(True)
    K_full = sl.ntk(full, x1, x2)
    assert rel_err(K_full, ref) > 1e-3          # freezing really removes a contribution
    for method in ("layerwise", "jacobian", "vp"):
        K = sl.ntk(model, x1, x2, method=method)
        assert rel_err(K, ref) < 1e-10, method


def test_all_frozen_raises():
    model = sl.MLP(3, 4, 2)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="trainable"):
        sl.ntk(model, torch.randn(2, 3))


def test_depth1_linear_kernel_is_gram_matrix():
    """f = w.x has K(x, x') = x.x' exactly (an independent closed form)."""
    model = sl.MLP(7, 1, 1)
    x1, x2 = torch.randn(5, 7), torch.randn(4, 7)
    for method in ("layerwise", "jacobian", "vp"):
        assert rel_err(sl.ntk(model, x1, x2, method=method), x1 @ x2.T) < 1e-13


def test_two_layer_linear_kernel_closed_form():
    """Two-layer linear f = a^T W x: K = x^T (W^T W + |a|^2 I) x' (paper, eq. 5)."""
    torch.manual_seed(8)
    model = sl.MLP(6, 10, 2, sigma=0.7)
    W, a = model.linears[0].weight, model.linears[1].weight.reshape(-1)
    M = W.T @ W + (a @ a) * torch.eye(6)
    x1, x2 = torch.randn(5, 6), torch.randn(3, 6)
    assert rel_err(sl.ntk(model, x1, x2), x1 @ M @ x2.T) < 1e-12


class _FlagProbe(nn.Identity):
    """An elementwise (identity) module that records the TF32 settings while it runs."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                          torch.get_float32_matmul_precision()))
        return x


def _check_tf32_off_inside(device):
    """Every forward pass ntk makes, and every Gram matrix of the layerwise method, runs without TF32.

    The probe module is a subclass of nn.Identity with its own forward, so the layerwise method
    (rightly) refuses it; for that method the flags are recorded in its Gram-matrix helper instead."""
    products = importlib.import_module("silentlib.ntk.products")  # where the Gram products are made
    probe = _FlagProbe()
    model = nn.Sequential(nn.Linear(4, 6), probe, nn.Linear(6, 1)).to(device).float()
    plain = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 1)).to(device).float()
    x = torch.randn(3, 4, device=device, dtype=torch.float32)
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision())
    gram = products.gram

    def recording_gram(A, B):
        probe.seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                           torch.get_float32_matmul_precision()))
        return gram(A, B)

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("medium")
    products.gram = recording_gram
    try:
        for method in ("layerwise", "jacobian", "vp"):
            probe.seen.clear()
            sl.ntk(plain if method == "layerwise" else model, x, method=method)
            inside = probe.seen              # every forward pass (or Gram matrix) ntk makes
            assert inside, method
            assert all(s == (False, False, "highest") for s in inside), (method, inside)
            # restored afterwards
            assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
            assert torch.get_float32_matmul_precision() == "medium"
    finally:
        products.gram = gram
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])


def test_tf32_off_inside_ntk_cpu():
    _check_tf32_off_inside("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_tf32_off():
    torch.manual_seed(9)
    cpu64 = sl.MLP(20, 64, 3, out_dim=2, activation="relu", bias=True)
    x = torch.randn(30, 20)
    K_cpu = sl.ntk(cpu64, x)
    for method in ("layerwise", "jacobian", "vp"):
        K64 = sl.ntk(copy.deepcopy(cpu64).cuda(), x.cuda(), method=method)
        assert K64.device.type == "cuda"
        assert rel_err(K64.cpu(), K_cpu) < 1e-10, method
        K32 = sl.ntk(copy.deepcopy(cpu64).float().cuda(), x.float().cuda(), method=method)
        # with TF32 the error would be ~1e-3; exact float32 stays near 1e-6
        assert rel_err(K32.double().cpu(), K_cpu) < 1e-4, method
    _check_tf32_off_inside("cuda")


@pytest.mark.parametrize("others, inside", [(5.0, 1), (0.0, 2), (None, 2)])
def test_busy_cores_mean_fewer_threads_inside_ntk_and_the_setting_is_restored(monkeypatch, others, inside):
    """With two torch threads on two cores: while other processes keep the cores busy, ntk computes on
    one thread; on idle cores (or without /proc/stat) on two; afterwards torch has two again."""
    products = importlib.import_module("silentlib.ntk.products")
    monkeypatch.setattr(products, "others_busy", lambda: others)
    monkeypatch.setattr(products, "_cores", lambda: 2)
    seen, gram = [], products.gram
    monkeypatch.setattr(products, "gram", lambda A, B: seen.append(torch.get_num_threads()) or gram(A, B))
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()
        K = sl.ntk(model, torch.randn(5, 4, dtype=torch.float64))
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(saved)
    assert seen and set(seen) == {inside}, seen
    assert after == 2
    assert K.shape == (5, 5, 2, 2)


def test_other_processes_load_is_sampled_at_most_every_sample_seconds(monkeypatch):
    """Within SAMPLE_SECONDS of the last sample, the last estimate is used without reading /proc/stat
    again; after it, a new sample measures the load since the last one."""
    products = importlib.import_module("silentlib.ntk.products")
    clock = [100.0]
    reads = []

    def sample():  # (wall, busy seconds of all cores, own CPU seconds): others use 0.5 cores, then 1.5
        reads.append(clock[0])
        return clock[0], 0.5 * clock[0] if clock[0] < 101 else 1.5 * clock[0] - 101, 0.0

    monkeypatch.setattr(products, "_sample", sample)
    monkeypatch.setattr(products.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(products.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    monkeypatch.setattr(products, "_last", {"sample": None, "others": None})
    assert products.others_busy() == pytest.approx(0.5)  # a first call samples twice, SAMPLE_SECONDS apart
    assert len(reads) == 2
    clock[0] += products.SAMPLE_SECONDS / 2
    assert products.others_busy() == pytest.approx(0.5) and len(reads) == 2
    clock[0] = 102.0  # since the last sample (at 100.05, busy 50.025): 52 - 50.025 busy seconds in 1.95 s
    assert products.others_busy() == pytest.approx((52 - 50.025) / 1.95) and len(reads) == 3
