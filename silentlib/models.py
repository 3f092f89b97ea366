"""Networks in the paper's standard parameterization.

:class:`MLP` is the fully connected network of Sections 3-5,

    f(x) = W_L phi(W_{L-1} ... phi(W_1 x)),   (W_l)_ij ~ N(0, sigma^2 / fan_in),

so that with a homogeneous activation (linear, ReLU) f_0 = O(sigma^L) and the
initial NTK K_0 = O(sigma^(2L-2)) (paper, Section 2 and Appendix B).

:class:`WideResNet` is the convolutional network of the paper's Figure 1(d, e)
(Zagoruyko & Komodakis; the neural-tangents version of Novak et al. 2020), used
through the generic (Jacobian) NTK path.
"""
from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS = {"linear": nn.Identity, "relu": nn.ReLU, "tanh": nn.Tanh}


def _check_positive_int(name, value, minimum=1):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


class MLP(nn.Sequential):
    """A depth-``depth`` fully connected network in standard parameterization.

    Parameters
    ----------
    d_in : input dimension D.
    width : hidden width N (every hidden layer has N units).
    depth : number of weight layers L (``depth=1`` is the linear model f = w.x,
        ``depth=2`` is f(x) = a^T phi(W x)).
    out_dim : number of outputs C.
    activation : ``"linear"``, ``"relu"`` or ``"tanh"``.
    sigma : initialization scale; every weight ~ N(0, sigma^2 / fan_in).
    bias : add a bias to every layer (initialized to zero).

    Being an ``nn.Sequential`` of ``nn.Linear`` layers and elementwise
    activations, it is computed by the exact layerwise NTK
    (:func:`silentlib.ntk`). Input shape (P, D), output shape (P,) when
    ``out_dim == 1`` and (P, C) otherwise.
    """

    def __init__(self, d_in, width, depth, *, out_dim=1, activation="linear",
                 sigma=1.0, bias=False):
        _check_positive_int("d_in", d_in)
        _check_positive_int("width", width)
        _check_positive_int("depth", depth)
        _check_positive_int("out_dim", out_dim)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
        sizes = [d_in] + [width] * (depth - 1) + [out_dim]
        layers = []
        for l in range(depth):
            if l > 0:
                layers.append(ACTIVATIONS[activation]())
            layers.append(nn.Linear(sizes[l], sizes[l + 1], bias=bias))
        super().__init__(*layers)
        self.d_in, self.width, self.depth, self.out_dim = d_in, width, depth, out_dim
        self.activation, self.sigma, self.bias = activation, float(sigma), bias
        self.reset_parameters()

    @property
    def linears(self):
        """The L weight layers, first to last."""
        return [m for m in self if isinstance(m, nn.Linear)]

    @torch.no_grad()
    def reset_parameters(self, generator=None):
        """Redraw W_l ~ N(0, sigma^2/fan_in) and zero the biases."""
        for lin in self.linears:
            std = self.sigma / math.sqrt(lin.in_features)
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=generator) * std)
            if lin.bias is not None:
                lin.bias.zero_()

    def forward(self, x):
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise ValueError(f"expected inputs of shape (P, {self.d_in}), got {tuple(x.shape)}")
        out = super().forward(x)
        return out.squeeze(-1) if self.out_dim == 1 else out

    def extra_repr(self):
        return f"sigma={self.sigma}, activation={self.activation!r}"


def _conv(c_in, c_out, k, sigma):
    conv = nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False)
    with torch.no_grad():
        conv.weight.normal_(0.0, sigma / math.sqrt(c_in * k * k))
    return conv


class _Block(nn.Module):
    """A pre-activation residual block: x + conv(relu(conv(relu(x))))."""

    def __init__(self, c_in, c_out, sigma):
        super().__init__()
        self.conv1 = _conv(c_in, c_out, 3, sigma)
        self.conv2 = _conv(c_out, c_out, 3, sigma)
        self.skip = None if c_in == c_out else _conv(c_in, c_out, 1, sigma)

    def forward(self, x):
        h = self.conv2(torch.relu(self.conv1(torch.relu(x))))
        return h + (x if self.skip is None else self.skip(x))


class WideResNet(nn.Module):
    """The Wide-ResNet of the paper's Figure 1(d, e), in standard parameterization.

    Three groups of ``block_size`` residual blocks with 16k, 32k and 64k
    channels (k = ``widen``), global average pooling and a linear read-out, as
    in neural-tangents' WideResNet example (Novak et al. 2020). Weights are
    N(0, sigma^2/fan_in) with ``sigma`` in the blocks and read-out and
    ``sigma_first`` in the first convolution (the paper: 0.3 and 6.0).
    No batch normalization, so the model is a plain function of its parameters
    and its NTK is well defined. Input (P, channels, H, W); output (P,) or (P, C).
    """

    def __init__(self, *, widen=4, block_size=1, channels=3, out_dim=1,
                 sigma=0.3, sigma_first=6.0):
        super().__init__()
        _check_positive_int("widen", widen)
        _check_positive_int("block_size", block_size)
        _check_positive_int("out_dim", out_dim)
        self.out_dim = out_dim
        widths = [16 * widen, 32 * widen, 64 * widen]
        self.first = _conv(channels, 16, 3, sigma_first)
        blocks, c = [], 16
        for group, w in enumerate(widths):
            for b in range(block_size):
                blocks.append(_Block(c, w, sigma))
                c = w
            if group < 2:
                blocks.append(nn.AvgPool2d(2))
        self.blocks = nn.Sequential(*blocks)
        self.readout = nn.Linear(c, out_dim, bias=False)
        with torch.no_grad():
            self.readout.weight.normal_(0.0, sigma / math.sqrt(c))

    def forward(self, x):
        h = torch.relu(self.blocks(self.first(x))).mean(dim=(2, 3))
        out = self.readout(h)
        return out.squeeze(-1) if self.out_dim == 1 else out
