"""The NTK engine on generic models, its blocking and memory planning, and its refusals."""
import numpy as np
import pytest
import torch
from torch import nn

import silentlib as sl
from silentlib import config
from silentlib.ntk import ntk_plan

from test_ntk import brute_force_ntk, rel_err

METHODS = ["layerwise", "jacobian", "vp"]
GENERIC = ["jacobian", "vp"]


def small_cnn(C=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3, C)).double()


def limit_memory(monkeypatch, n_bytes):
    """Pretend the device has only ``n_bytes`` free."""
    monkeypatch.setattr(config, "free_memory", lambda dev: n_bytes)


@pytest.mark.parametrize("method", GENERIC)
def test_cnn_matches_brute_force(method):
    model = small_cnn()
    x1, x2 = torch.randn(5, 2, 6, 6), torch.randn(3, 2, 6, 6)
    assert rel_err(sl.ntk(model, x1, x2, method=method), brute_force_ntk(model, x1, x2)) < 1e-10
    assert rel_err(sl.ntk(model, x1, method=method), brute_force_ntk(model, x1, x1)) < 1e-10


def test_scalar_cnn_shape_and_value():
    model = small_cnn(C=1)
    model.append(nn.Flatten(0))        # (P, 1) -> (P,)
    x = torch.randn(4, 2, 6, 6)
    K = sl.ntk(model, x, method="vp")
    assert tuple(K.shape) == (4, 4)
    assert rel_err(K, brute_force_ntk(model, x, x)[:, :, 0, 0]) < 1e-10


def _cases():
    mlp = sl.MLP(6, 9, 3, out_dim=3, activation="tanh", bias=True).double()
    return [("mlp", mlp, lambda n: torch.randn(n, 6), METHODS), ("cnn", small_cnn(), lambda n: torch.randn(n, 2, 6, 6), GENERIC)]


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_blocked_equals_unblocked(name):
    torch.manual_seed(5)
    _, model, draw, methods = next(c for c in _cases() if c[0] == name)
    x1, x2 = draw(10), draw(7)
    for method in methods:
        for a, b in [(x1, None), (x1, x2)]:
            whole = sl.ntk(model, a, b, method=method, block_size=64)
            for bs in (1, 3, 4):
                blocked = sl.ntk(model, a, b, method=method, block_size=bs)
                assert rel_err(blocked, whole) < 1e-12, (method, bs, b is None)
        K = sl.ntk(model, x1, method=method, block_size=3)
        # blocks below the diagonal are the transposes of those above: exactly symmetric
        assert torch.equal(K, K.permute(1, 0, 3, 2))


@pytest.mark.parametrize("method", METHODS)
def test_float32_blocked_equals_unblocked(method):
    torch.manual_seed(6)
    model = sl.MLP(6, 20, 3, out_dim=2, activation="relu").float()
    x = torch.randn(9, 6, dtype=torch.float32)
    assert rel_err(sl.ntk(model, x, method=method, block_size=2), sl.ntk(model, x, method=method)) < 1e-5


def test_memory_limit_chooses_smaller_blocks_and_same_kernel(monkeypatch):
    torch.manual_seed(7)
    model = sl.MLP(6, 50, 3, out_dim=2, activation="relu").double()
    x = torch.randn(40, 6)
    free = {m: sl.ntk(model, x, method=m) for m in METHODS}
    for m in METHODS:
        assert ntk_plan(model, x, method=m).block_size == 40
    limit_memory(monkeypatch, 600_000)        # 600 kB: the kernel (51 kB) fits, the work must be blocked
    for m in METHODS:
        plan = ntk_plan(model, x, method=m)
        assert plan.block_size < 40, m
        assert plan.kernel_bytes == 40 * 40 * 2 * 2 * 8
        assert plan.kernel_bytes + plan.working_bytes <= 600_000, (m, plan)
        assert rel_err(sl.ntk(model, x, method=m), free[m]) < 1e-12, m


def test_jacobian_splits_parameters_when_one_jacobian_does_not_fit(monkeypatch):
    torch.manual_seed(11)
    model = nn.Sequential(nn.Flatten(), nn.Linear(72, 30), nn.Tanh(), nn.Linear(30, 30), nn.Tanh(),
                          nn.Linear(30, 2)).double()
    x = torch.randn(6, 2, 6, 6)
    ref = brute_force_ntk(model, x, x)
    assert len(ntk_plan(model, x, method="jacobian").groups) == 1
    plan = None
    for limit in (int(1e4 * 1.1 ** k) for k in range(60)):   # the smallest memory that still works
        limit_memory(monkeypatch, limit)
        try:
            plan = ntk_plan(model, x, method="jacobian")
            break
        except ValueError as err:
            assert "working memory" in str(err)
    assert plan is not None and len(plan.groups) > 1
    names = [n for g in plan.groups for n in g]
    assert names == [n for n, _ in model.named_parameters()]     # every parameter, once, in order
    K = sl.ntk(model, x, method="jacobian")
    assert rel_err(K, ref) < 1e-10
    assert torch.equal(K, K.permute(1, 0, 3, 2))    # the groups' diagonal blocks add up exactly symmetric


@pytest.mark.parametrize("method", ["layerwise", "jacobian"])
def test_staircase_of_a_diagonal_block_is_exact_and_symmetric(monkeypatch, method):
    """A diagonal block computed as a staircase of row steps equals the definition and is exactly symmetric."""
    from silentlib.ntk import blocks
    monkeypatch.setattr(blocks, "STAIRCASE_MIN_ENTRIES", 1)
    monkeypatch.setattr(blocks, "STAIRCASE_MIN_ROWS", 2)     # 11 inputs in four steps of 3, 3, 3, 2
    torch.manual_seed(12)
    model = sl.MLP(5, 8, 3, out_dim=2, activation="tanh").double()
    x = torch.randn(11, 5)
    K = sl.ntk(model, x, method=method, block_size=11)
    assert rel_err(K, brute_force_ntk(model, x, x)) < 1e-10
    assert torch.equal(K, K.permute(1, 0, 3, 2))


def test_impossible_kernel_is_refused_with_the_options():
    model = sl.MLP(2, 4, 2, out_dim=10)
    x = torch.zeros(1_000_000, 2)                       # K would be 10^12 x 100 entries
    for method in METHODS:
        with pytest.raises(ValueError) as err:
            ntk_plan(model, x, method=method)
        msg = str(err.value)
        assert "1,000,000 x 1,000,000 inputs with 10 output(s)" in msg, msg
        assert "100,000,000,000,000" in msg and "GiB" in msg      # P1 P2 C^2 entries and its size
        assert "fewer inputs" in msg and "outputs=" in msg
    with pytest.raises(ValueError, match="GiB"):
        sl.ntk(model, x)                                # ntk itself refuses before allocating


def test_per_output_blocks_fit_where_the_full_kernel_does_not(monkeypatch):
    torch.manual_seed(8)
    model = sl.MLP(5, 8, 2, out_dim=6, activation="relu").double()
    x = torch.randn(30, 5)
    full = sl.ntk(model, x)
    limit_memory(monkeypatch, 30 * 30 * 36 * 8)         # the full kernel needs all of it: refused
    with pytest.raises(ValueError, match="outputs="):
        sl.ntk(model, x)
    for method in METHODS:
        part = sl.ntk(model, x, method=method, outputs=[4, 1])
        assert tuple(part.shape) == (30, 30, 2, 2)
        assert rel_err(part, full[:, :, [4, 1]][:, :, :, [4, 1]]) < 1e-12, method
    assert rel_err(sl.ntk(model, x, outputs=slice(2, 4)), full[:, :, 2:4, 2:4]) < 1e-12


def test_outputs_argument_is_checked():
    model = sl.MLP(3, 4, 2, out_dim=3)
    x = torch.randn(4, 3)
    for bad in ([3], [-1], []):
        with pytest.raises(ValueError, match="outputs must select indices in 0..2"):
            sl.ntk(model, x, outputs=bad)
    with pytest.raises(ValueError, match="scalar output"):
        sl.ntk(sl.MLP(3, 4, 2), x, outputs=[0])


def test_explicit_block_size_that_does_not_fit_is_refused(monkeypatch):
    model = sl.MLP(6, 50, 3, activation="relu").double()
    x = torch.randn(40, 6)
    limit_memory(monkeypatch, 200_000)
    auto = ntk_plan(model, x).block_size
    for too_big in (39, 40, 1000):                     # also when it covers all the inputs at once
        with pytest.raises(ValueError, match=f"use block_size <= {auto}"):
            sl.ntk(model, x, block_size=too_big)


def test_no_working_memory_is_refused(monkeypatch):
    model = sl.MLP(6, 50, 3, activation="relu").double()
    x = torch.randn(40, 6)
    limit_memory(monkeypatch, int(40 * 40 * 8 / 0.85))  # the kernel fits, little else does
    with pytest.raises(ValueError, match="working memory"):
        sl.ntk(model, x)


class CenterBatch(nn.Module):
    def forward(self, x):
        return x - x.mean(dim=0, keepdim=True)


@pytest.mark.parametrize("name", ["BatchNorm2d", "BatchNorm1d"])
@pytest.mark.parametrize("method", GENERIC)
def test_batch_norm_in_training_mode_is_refused(name, method):
    torch.manual_seed(9)
    if name == "BatchNorm2d":
        model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 1)).double()
        x = torch.randn(5, 2, 6, 6)
    else:
        model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).double()
        x = torch.randn(5, 3)
    with pytest.raises(ValueError, match=f"{name} in training mode.*per-example NTK is ill-defined"):
        sl.ntk(model, x, method=method)
    model.eval()                                       # fixed statistics: a per-example affine map
    assert rel_err(sl.ntk(model, x, method=method), brute_force_ntk(model, x, x)) < 1e-10


@pytest.mark.parametrize("layer,reason", [(CenterBatch, "mixes examples"), (lambda: nn.Dropout(0.5), "random")])
def test_layers_mixing_examples_or_random_are_refused(layer, reason):
    model = nn.Sequential(nn.Linear(3, 8), layer(), nn.Linear(8, 1)).double()
    with pytest.raises(ValueError, match=reason):
        sl.ntk(model, torch.randn(4, 3), method="jacobian")


def test_per_example_model_passes_the_mixing_check():
    model = small_cnn()
    sl.ntk(model, torch.randn(3, 2, 6, 6))  # no error: conv, pooling and tanh act per example
    model_with_dropout = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Linear(8, 1)).double().eval()
    sl.ntk(model_with_dropout, torch.randn(4, 3), method="vp")


def test_wide_resnet_ten_classes_blocked():
    """The paper's Wide-ResNet shape (widen 1 here, for time) with 10 outputs, blocked over inputs."""
    torch.manual_seed(10)
    model = sl.WideResNet(widen=1, block_size=1, channels=3, out_dim=10).double()
    x = torch.randn(5, 3, 8, 8)
    Kj = sl.ntk(model, x, method="jacobian", block_size=2)
    Kv = sl.ntk(model, x, method="vp", block_size=3)
    assert tuple(Kj.shape) == (5, 5, 10, 10)
    assert rel_err(Kj, Kv) < 1e-10
    assert rel_err(Kj[:2, 3:], brute_force_ntk(model, x[:2], x[3:])) < 1e-10


def test_train_refuses_tracked_kernels_that_do_not_fit_on_the_host(monkeypatch):
    model = sl.MLP(3, 4, 2)
    x, y = torch.randn(50, 3), torch.randn(50)
    limit_memory(monkeypatch, 100 * 50 * 50 * 8)        # 100 records need twice the allowed half
    with pytest.raises(ValueError, match="n_records.*track_ntk=False"):
        sl.train(model, x, y, lr=0.1, t_max=100, n_records=100)
    sl.train(model, x, y, lr=0.1, t_max=100, n_records=100, track_ntk=False)   # fine without snapshots
    torch.manual_seed(13)
    tr = sl.train(sl.MLP(3, 4, 2), x, y, lr=0.1, t_max=100, n_records=100, keep_kernels=False)
    torch.manual_seed(13)
    full = sl.train(sl.MLP(3, 4, 2), x, y, lr=0.1, t_max=100, n_records=20)
    assert tr.kernels is None and np.all(np.isfinite(tr.alignment)) and np.all(tr.kernel_norm > 0)
    assert tr.K0 is None and tr.Kinf is None                           # no kernel-sized array kept at all
    np.testing.assert_allclose(tr.alignment[[0, -1]], full.alignment[[0, -1]], rtol=1e-12)  # same run, same numbers
    assert full.kernels.shape == (len(full.t), 50, 50)


def test_tracked_alignment_of_a_multi_output_kernel_matches_kernel_alignment():
    torch.manual_seed(12)
    x, y = torch.randn(12, 4), torch.randn(12, 3)
    tr = sl.train(sl.MLP(4, 16, 2, out_dim=3, activation="tanh", sigma=0.5), x, y, lr=0.05, t_max=5, n_records=6)
    for k in range(len(tr.t)):
        assert tr.alignment[k] == pytest.approx(sl.kernel_alignment(tr.kernels[k], y), rel=1e-12)
        assert tr.kernel_norm[k] == pytest.approx(np.linalg.norm(tr.kernels[k]), rel=1e-12)


def test_train_hands_the_model_back_on_its_device():
    model = sl.MLP(3, 4, 2)
    before = [p for p in model.parameters()]
    sl.train(model, torch.randn(6, 3), torch.randn(6), lr=0.1, t_max=1, device="cpu")
    assert all(a is b and a.device.type == "cpu" for a, b in zip(before, model.parameters()))


def test_silent_device_is_checked(monkeypatch):
    monkeypatch.setenv("SILENT_DEVICE", "cpu")
    assert sl.device() == torch.device("cpu")
    monkeypatch.setenv("SILENT_DEVICE", "tpu7")
    with pytest.raises(ValueError, match="SILENT_DEVICE"):
        sl.device()
    if not torch.cuda.is_available():
        monkeypatch.setenv("SILENT_DEVICE", "cuda")
        with pytest.raises(ValueError, match="no CUDA device"):
            sl.device()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_generic_and_blocked_match_cpu():
    model = small_cnn()
    x = torch.randn(7, 2, 6, 6)
    ref = brute_force_ntk(model, x, x)
    gpu = small_cnn().cuda()
    for method in GENERIC:
        for bs in (None, 2):
            K = sl.ntk(gpu, x.cuda(), method=method, block_size=bs)
            assert K.device.type == "cuda"
            assert rel_err(K.cpu(), ref) < 1e-10, (method, bs)
    plan = ntk_plan(gpu, x.cuda())
    assert plan.free_bytes > 0 and plan.block_size == 7
