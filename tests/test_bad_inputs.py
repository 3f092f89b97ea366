"""Every bad input raises ValueError with a message that says what is wrong."""
import math
import warnings

import numpy as np
import pytest
import torch

import silentlib as sl


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def data(P=6, D=4, C=None):
    x = torch.randn(P, D)
    y = torch.randn(P) if C is None else torch.randn(P, C)
    return x, y


# --- models ------------------------------------------------------------------------------

@pytest.mark.parametrize("sigma", [0.0, -1.0, math.nan, math.inf])
def test_mlp_sigma_must_be_positive(sigma):
    with pytest.raises(ValueError, match="sigma"):
        sl.MLP(4, 5, 2, sigma=sigma)


@pytest.mark.parametrize("depth", [0, -1, 1.5, True])
def test_mlp_depth_at_least_one(depth):
    with pytest.raises(ValueError, match="depth"):
        sl.MLP(4, 5, depth)


@pytest.mark.parametrize("kw,word", [(dict(d_in=0, width=5, depth=2), "d_in"),
                                     (dict(d_in=4, width=0, depth=2), "width"),
                                     (dict(d_in=4, width=5, depth=2, out_dim=0), "out_dim")])
def test_mlp_sizes_positive(kw, word):
    with pytest.raises(ValueError, match=word):
        sl.MLP(**kw)


def test_unknown_activation():
    with pytest.raises(ValueError, match="activation.*'softmax'"):
        sl.MLP(4, 5, 2, activation="softmax")


@pytest.mark.parametrize("bad", [torch.randn(3, 5), torch.randn(3), torch.randn(3, 4, 1)])
def test_mlp_wrong_input_dimension(bad):
    model = sl.MLP(4, 5, 2)
    with pytest.raises(ValueError, match=r"\(P, 4\)"):
        model(bad)


def test_wide_resnet_sizes():
    with pytest.raises(ValueError, match="widen"):
        sl.WideResNet(widen=0)


# --- ntk -----------------------------------------------------------------------------------

def test_ntk_unknown_method():
    with pytest.raises(ValueError, match="method.*'fast'"):
        sl.ntk(sl.MLP(4, 5, 2), torch.randn(3, 4), method="fast")


def test_ntk_mismatched_trailing_shapes():
    with pytest.raises(ValueError, match="trailing shape"):
        sl.ntk(sl.MLP(4, 5, 2), torch.randn(3, 4), torch.randn(3, 5))


def test_ntk_wrong_input_dimension_for_mlp():
    with pytest.raises(ValueError, match=r"\(P, 4\)"):
        sl.ntk(sl.MLP(4, 5, 2), torch.randn(3, 7))


@pytest.mark.parametrize("method", ["auto", "layerwise", "jacobian", "vp"])
def test_ntk_wrong_input_reports_the_callers_shape(method):
    """The message names the shape the user passed, (4, 6), not only that of ntk's one-input probe."""
    with pytest.raises(ValueError, match=r"x1 of shape \(4, 6\).*\(P, 5\)"):
        sl.ntk(sl.MLP(5, 3, 2), torch.randn(4, 6), method=method)
    plain = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    with pytest.raises(ValueError, match=r"x1 of shape \(4, 6\)"):
        sl.ntk(plain, torch.randn(4, 6), method=method)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_ntk_non_finite_inputs(bad):
    x = torch.randn(3, 4)
    x[1, 2] = bad
    with pytest.raises(ValueError, match="non-finite"):
        sl.ntk(sl.MLP(4, 5, 2), x)
    with pytest.raises(ValueError, match="x2.*non-finite"):
        sl.ntk(sl.MLP(4, 5, 2), torch.randn(2, 4), x)


def test_ntk_empty_inputs():
    with pytest.raises(ValueError, match="non-empty"):
        sl.ntk(sl.MLP(4, 5, 2), torch.randn(0, 4))


@pytest.mark.parametrize("block_size", [0, -3, 2.5])
def test_ntk_bad_block_size(block_size):
    with pytest.raises(ValueError, match="block_size"):
        sl.ntk(sl.MLP(4, 5, 2), torch.randn(3, 4), block_size=block_size)


# --- train ---------------------------------------------------------------------------------

def test_train_mismatched_number_of_examples():
    x, y = data()
    with pytest.raises(ValueError, match="same number of examples"):
        sl.train(sl.MLP(4, 5, 2), x, y[:4], lr=0.1, t_max=1.0)


def test_train_output_size_differs_from_targets():
    x, y = data(C=3)
    with pytest.raises(ValueError, match=r"output.*\(6,\).*y has shape \(6, 3\)"):
        sl.train(sl.MLP(4, 5, 2), x, y, lr=0.1, t_max=1.0)
    x, y = data()
    with pytest.raises(ValueError, match=r"output.*\(6, 2\).*y has shape \(6,\)"):
        sl.train(sl.MLP(4, 5, 2, out_dim=2), x, y, lr=0.1, t_max=1.0)


@pytest.mark.parametrize("which", ["x", "y", "x_test"])
def test_train_non_finite_inputs(which):
    x, y = data()
    xt = torch.randn(3, 4)
    {"x": x, "y": y, "x_test": xt}[which][1] = math.nan
    with pytest.raises(ValueError, match=f"{which} has non-finite"):
        sl.train(sl.MLP(4, 5, 2), x, y, lr=0.1, t_max=1.0, x_test=xt)


def test_train_empty_dataset():
    with pytest.raises(ValueError, match="non-empty"):
        sl.train(sl.MLP(4, 5, 2), torch.randn(0, 4), torch.randn(0), lr=0.1, t_max=1.0)


def test_train_unknown_optimizer():
    x, y = data()
    with pytest.raises(ValueError, match="optimizer.*'sgd'"):
        sl.train(sl.MLP(4, 5, 2), x, y, lr=0.1, t_max=1.0, optimizer="sgd")


def test_train_unknown_ntk_method():
    x, y = data()
    with pytest.raises(ValueError, match="method"):
        sl.train(sl.MLP(4, 5, 2), x, y, lr=0.1, t_max=1.0, ntk_method="nope")


@pytest.mark.parametrize("lr,t_max", [(0.0, 1.0), (-0.1, 1.0), (0.1, 0.0), (math.nan, 1.0), (0.1, math.inf)])
def test_train_lr_and_time_positive(lr, t_max):
    x, y = data()
    with pytest.raises(ValueError, match="lr and t_max"):
        sl.train(sl.MLP(4, 5, 2), x, y, lr=lr, t_max=t_max)


def test_train_wrong_input_dimension():
    x, y = data(D=7)
    with pytest.raises(ValueError, match=r"\(P, 4\)"):
        sl.train(sl.MLP(4, 5, 2), x, y, lr=0.1, t_max=1.0)


def test_train_x_test_shape():
    x, y = data()
    with pytest.raises(ValueError, match="x_test"):
        sl.train(sl.MLP(4, 5, 2), x, y, lr=0.1, t_max=1.0, x_test=torch.randn(3, 5))


# --- kernels -------------------------------------------------------------------------------

def test_alignment_mismatched_shapes():
    K = np.eye(5)
    with pytest.raises(ValueError, match=r"kernel \(5, 5\) and y \(4,\)"):
        sl.kernel_alignment(K, np.ones(4))
    with pytest.raises(ValueError, match="expected"):
        sl.kernel_alignment(np.ones((5, 5, 2, 2)), np.ones((5, 3)))
    with pytest.raises(ValueError, match="square"):
        sl.kernel_alignment(np.ones((3, 5)), np.ones(5))


def test_alignment_non_finite_and_zero():
    K = np.eye(3)
    K[0, 1] = math.inf
    with pytest.raises(ValueError, match="K has non-finite"):
        sl.kernel_alignment(K, np.ones(3))
    with pytest.raises(ValueError, match="y has non-finite"):
        sl.kernel_alignment(np.eye(3), np.array([1.0, math.nan, 0.0]))
    with pytest.raises(ValueError, match="undefined"):
        sl.kernel_alignment(np.zeros((3, 3)), np.ones(3))
    with pytest.raises(ValueError, match="empty"):
        sl.kernel_alignment(np.zeros((0, 0)), np.zeros(0))


def test_regression_mismatched_shapes():
    K = np.eye(4)
    with pytest.raises(ValueError, match="K_cross"):
        sl.kernel_regression(K, np.ones((3, 5)), np.ones(4))
    with pytest.raises(ValueError, match="y"):
        sl.kernel_regression(K, np.ones((3, 4)), np.ones(5))
    with pytest.raises(ValueError, match="K_cross"):
        sl.kernel_regression(np.ones((4, 4, 2, 2)), np.ones((3, 4)), np.ones((4, 2)))


def test_ridgeless_regression_on_a_zero_kernel_raises():
    with pytest.raises(ValueError, match="no eigenvalue above the cutoff.*ridge > 0"):
        sl.kernel_regression(np.zeros((4, 4)), np.zeros((2, 4)), np.ones(4))
    # with a ridge it is well posed: alpha = y / ridge = 10 each, and a test row of ones sums them
    np.testing.assert_allclose(sl.kernel_regression(np.zeros((4, 4)), np.ones((2, 4)), np.ones(4), ridge=0.1), 40.0)


def test_ridgeless_regression_on_a_singular_kernel_warns_and_says_what_it_did():
    X = np.random.default_rng(0).normal(size=(8, 3))        # rank 3 < P = 8
    K = X @ X.T
    y = np.arange(8.0)
    with pytest.warns(sl.kernels.SingularKernelWarning, match=r"5 of its eigenvalues are below the cutoff.*pseudo-inverse"):
        pred = sl.kernel_regression(K, K, y)
    # the min-norm least-squares fit: the projection of y on the column space of X
    np.testing.assert_allclose(pred, X @ np.linalg.lstsq(X, y, rcond=None)[0], atol=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # a full-rank kernel, or a ridge: no warning
        sl.kernel_regression(K + np.eye(8), K, y)
        sl.kernel_regression(K, K, y, ridge=1e-3)


def test_regression_non_finite():
    K = np.eye(4)
    with pytest.raises(ValueError, match="K_cross has non-finite"):
        sl.kernel_regression(K, np.full((2, 4), math.nan), np.ones(4))


def test_cosine_similarity_bad():
    with pytest.raises(ValueError, match="same shape"):
        sl.cosine_similarity(np.ones((2, 2)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="zero"):
        sl.cosine_similarity(np.zeros((2, 2)), np.ones((2, 2)))


# --- config --------------------------------------------------------------------------------

def test_unknown_scale(monkeypatch):
    monkeypatch.setenv("SILENT_SCALE", "huge")
    with pytest.raises(ValueError, match="SILENT_SCALE"):
        sl.scale()
