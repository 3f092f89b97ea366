"""Models: initialization variances, sigma scaling of f_0 and K_0, dtypes."""
import copy
import math

import numpy as np
import pytest
import torch

import silentlib as sl



@pytest.mark.parametrize("sigma", [0.1, 1.0, 3.0])
def test_mlp_init_variances(sigma):
    torch.manual_seed(0)
    D, N = 300, 400
    model = sl.MLP(D, N, 3, out_dim=200, sigma=sigma, bias=True)
    for lin in model.linears:
        w = lin.weight.detach().numpy()
        expected = sigma / math.sqrt(lin.in_features)
        # >= 60,000 entries: the empirical std is within ~0.3% of the true one
        assert w.std() == pytest.approx(expected, rel=0.02), (lin, w.std(), expected)
        assert abs(w.mean()) < 0.02 * expected
        assert torch.equal(lin.bias, torch.zeros_like(lin.bias))
    assert [l.weight.shape for l in model.linears] == [(N, D), (N, N), (200, N)]


def test_mlp_structure():
    model = sl.MLP(5, 7, 4, activation="relu")
    assert len(model.linears) == 4
    assert sum(isinstance(m, torch.nn.ReLU) for m in model) == 3
    assert sl.MLP(5, 7, 1).linears[0].weight.shape == (1, 5)
    x = torch.randn(3, 5)
    assert model(x).shape == (3,)
    assert sl.MLP(5, 7, 2, out_dim=4)(x).shape == (3, 4)


def test_reset_parameters_with_generator_is_reproducible():
    m1, m2 = sl.MLP(6, 8, 3), sl.MLP(6, 8, 3)
    m1.reset_parameters(torch.Generator().manual_seed(3))
    m2.reset_parameters(torch.Generator().manual_seed(3))
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)


def _pair(depth, activation, sigma, seed=0):
    torch.manual_seed(seed)
    big = sl.MLP(8, 30, depth, activation=activation, sigma=sigma)
    torch.manual_seed(seed)
    small = sl.MLP(8, 30, depth, activation=activation, sigma=sigma / 2)
    return big, small


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("activation", ["linear", "relu"])
def test_output_and_kernel_scale_with_sigma(depth, activation):
    """Same random draws at sigma and sigma/2: every weight halves, so for a homogeneous
    activation f_0 shrinks by 2^L and K_0 (products of L-1 weights per factor) by 2^(2L-2)."""
    big, small = _pair(depth, activation, 0.8)
    x = torch.randn(10, 8)
    f_big, f_small = big(x).detach(), small(x).detach()
    ratio_f = float(f_big.norm() / f_small.norm())
    assert ratio_f == pytest.approx(2.0 ** depth, rel=1e-8)
    K_big, K_small = sl.ntk(big, x), sl.ntk(small, x)
    ratio_K = float(K_big.norm() / K_small.norm())
    assert ratio_K == pytest.approx(2.0 ** (2 * depth - 2), rel=1e-8)


def test_tanh_scales_like_linear_for_small_sigma():
    """tanh is linear near 0: at small sigma the same ratios hold approximately."""
    big, small = _pair(3, "tanh", 0.05)
    x = torch.randn(10, 8)
    assert float(big(x).detach().norm() / small(x).detach().norm()) == pytest.approx(8.0, rel=1e-2)
    assert float(sl.ntk(big, x).norm() / sl.ntk(small, x).norm()) == pytest.approx(16.0, rel=1e-2)


def test_output_scale_statistics():
    """E f_0(x)^2 = sigma^(2L) |x|^2 / D for a deep linear network (an average over draws)."""
    torch.manual_seed(1)
    D, N, L, sigma = 10, 40, 3, 0.5
    x = torch.randn(1, D)
    with torch.no_grad():
        vals = [float(sl.MLP(D, N, L, sigma=sigma)(x)) ** 2 for _ in range(2000)]
    expected = sigma ** (2 * L) * float(x.norm()) ** 2 / D
    # 2000 draws of a heavy-tailed product: the mean is within ~10% (std of the mean ~ 5%)
    assert np.mean(vals) == pytest.approx(expected, rel=0.2)


def test_double_gives_float64_outputs_and_kernels():
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        torch.manual_seed(2)
        model = sl.MLP(5, 6, 3, activation="tanh", out_dim=2)
        assert model.linears[0].weight.dtype == torch.float32
        x = torch.randn(4, 5)
        assert model(x).dtype == torch.float32
        assert sl.ntk(model, x).dtype == torch.float32
        m64 = copy.deepcopy(model).double()
        assert m64(x.double()).dtype == torch.float64
        for method in ("layerwise", "jacobian", "vp"):
            # float32 inputs are cast to the model's dtype
            assert sl.ntk(m64, x, method=method).dtype == torch.float64
        wrn = sl.WideResNet(widen=1, channels=1).double()
        assert wrn(torch.randn(2, 1, 8, 8, dtype=torch.float64)).dtype == torch.float64
    finally:
        torch.set_default_dtype(saved)


def test_wide_resnet_shapes_and_init():
    torch.manual_seed(3)
    model = sl.WideResNet(widen=1, block_size=2, channels=3, out_dim=3, sigma=0.3, sigma_first=6.0)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 3)
    assert sl.WideResNet(widen=1, channels=3)(torch.randn(2, 3, 8, 8)).shape == (2,)
    # first convolution: std sigma_first / sqrt(3 * 3 * 3)
    w = model.first.weight.detach()
    assert float(w.std()) == pytest.approx(6.0 / math.sqrt(27), rel=0.1)
    w = model.blocks[-1].conv2.weight.detach()                    # 64 -> 64, 3x3
    assert float(w.std()) == pytest.approx(0.3 / math.sqrt(64 * 9), rel=0.02)
    assert model.readout.weight.shape == (3, 64)
    n_blocks = sum(type(m).__name__ == "_Block" for m in model.blocks)
    assert n_blocks == 6


def test_wide_resnet_is_neural_tangents_wideresnet():
    # neural-tangents' example: 3x3 conv to 16; per group a first block with a strided 3x3 conv
    # shortcut (strides 1, 2, 2), further blocks with identity shortcuts; pool; dense read-out.
    # Counted by hand for k = 4, b = 1, 3 channels: 432 + 55,296 + 294,912 + 1,179,648 + 256.
    model = sl.WideResNet(widen=4, block_size=1, channels=3)
    assert sum(p.numel() for p in model.parameters()) == 1_530_544
    model = sl.WideResNet(widen=1, block_size=2, channels=3)
    firsts = [b for b in model.blocks][::2]
    assert all(b.shortcut.kernel_size == (3, 3) for b in firsts)
    assert [b.shortcut.stride for b in firsts] == [(1, 1), (2, 2), (2, 2)]
    assert all(b.shortcut is None for b in list(model.blocks)[1::2])
    h = model.blocks(model.first(torch.randn(1, 3, 32, 32)))
    assert h.shape == (1, 64, 8, 8)                       # 32 -> 16 -> 8, as neural-tangents' 8x8 pool expects


# ------------------------------------------------------------------ seed and setup

def test_seed_reads_SILENT_SEED(monkeypatch):
    import silentlib as sl
    monkeypatch.delenv("SILENT_SEED", raising=False)
    assert sl.seed() == 0
    monkeypatch.setenv("SILENT_SEED", " 3 ")
    assert sl.seed() == 3
    for bad in ("abc", "-1", "1.5", str(2**40)):
        monkeypatch.setenv("SILENT_SEED", bad)
        with pytest.raises(ValueError, match="SILENT_SEED"):
            sl.seed()


def test_setup_sets_float64_and_the_torch_seed(monkeypatch):
    import silentlib as sl
    saved_dtype, saved_threads = torch.get_default_dtype(), torch.get_num_threads()
    try:
        monkeypatch.setenv("SILENT_SEED", "4")
        torch.set_default_dtype(torch.float32)
        assert sl.setup() == 4
        assert torch.get_default_dtype() == torch.float64
        a = torch.randn(3)
        torch.manual_seed(4)
        assert torch.equal(a, torch.randn(3))
    finally:
        torch.set_default_dtype(saved_dtype)
        torch.set_num_threads(saved_threads)


def test_setup_threads(monkeypatch):
    """NumPy's BLAS on one thread at every scale; torch on one at the fast scale, at the paper scale on
    the cores other processes leave free."""
    import silentlib as sl
    from silentlib.ntk import products
    threadpoolctl = pytest.importorskip("threadpoolctl")
    saved = torch.get_num_threads()
    try:
        for scale, free, torch_threads in (("paper", 2, 2), ("paper", 1, 1), ("fast", 2, 1)):
            monkeypatch.setattr(products, "threads_for", lambda n, free=free: min(n, free))
            with threadpoolctl.threadpool_limits(2, user_api="blas"):
                monkeypatch.setenv("SILENT_SCALE", scale)
                torch.set_num_threads(2)
                sl.setup()
                blas = [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
                assert blas and set(blas) == {1}, scale
                assert torch.get_num_threads() == torch_threads, scale
    finally:
        torch.set_num_threads(saved)


def test_scale_note_names_a_nonzero_seed(monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from silentlib import plotting
    fig = plt.figure()
    monkeypatch.setenv("SILENT_SEED", "0")
    assert "seed" not in plotting.scale_note(fig).get_text()
    monkeypatch.setenv("SILENT_SEED", "2")
    assert plotting.scale_note(fig).get_text().endswith("seed 2")
    plt.close(fig)
