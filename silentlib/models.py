"""Networks in the paper's standard parameterization.

:class:`MLP` is the fully connected network of Sections 3-5, ::

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

from .config import check_int

ACTIVATIONS = {"linear": nn.Identity, "relu": nn.ReLU, "tanh": nn.Tanh}


class MLP(nn.Sequential):
    """A depth-``depth`` fully connected network in standard parameterization.

    ``f(x) = W_L phi(W_{L-1} ... phi(W_1 x))`` with every weight ``(W_l)_ij ~ N(0,
    sigma^2 / fan_in)`` (paper, Sections 3-5): with a homogeneous activation f_0 =
    O(sigma^L) and the initial NTK K_0 = O(sigma^(2L-2)).

    Being an ``nn.Sequential`` of ``nn.Linear`` layers and elementwise activations, it is
    computed by the exact layerwise NTK (:func:`silentlib.ntk.ntk`). Input shape (P, D),
    output shape (P,) when ``out_dim == 1`` and (P, C) otherwise.

    Parameters
    ----------
    d_in : int
        Input dimension D.
    width : int
        Hidden width N (every hidden layer has N units).
    depth : int
        Number of weight layers L (``depth=1`` is the linear model ``f = w . x``,
        ``depth=2`` is ``f(x) = a^T phi(W x)``).
    out_dim : int
        Number of outputs C.
    activation : str
        ``"linear"``, ``"relu"`` or ``"tanh"``.
    sigma : float
        Initialization scale; every weight ~ N(0, sigma^2 / fan_in).
    bias : bool
        Add a bias to every layer (initialized to zero).

    Raises
    ------
    ValueError
        If a size is not a positive integer, the activation is unknown or sigma is not a
        positive finite number.
    """

    def __init__(self, d_in: int, width: int, depth: int, *, out_dim: int = 1, activation: str = "linear",
                 sigma: float = 1.0, bias: bool = False):
        check_int("d_in", d_in)
        check_int("width", width)
        check_int("depth", depth)
        check_int("out_dim", out_dim)
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
    def linears(self) -> list[nn.Linear]:
        """The L weight layers, first to last."""
        return [m for m in self if isinstance(m, nn.Linear)]

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Redraw every ``W_l ~ N(0, sigma^2 / fan_in)`` (from ``generator``, default torch's
        global one) and zero the biases."""
        for lin in self.linears:
            std = self.sigma / math.sqrt(lin.in_features)
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=generator) * std)
            if lin.bias is not None:
                lin.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(P, D) inputs -> (P,) outputs, or (P, C) for ``out_dim = C > 1``.

        Raises ``ValueError`` for inputs of another shape."""
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise ValueError(f"expected inputs of shape (P, {self.d_in}), got {tuple(x.shape)}")
        out = super().forward(x)
        return out.squeeze(-1) if self.out_dim == 1 else out

    def extra_repr(self) -> str:
        """``sigma`` and ``activation``, shown in the module's repr."""
        return f"sigma={self.sigma}, activation={self.activation!r}"


def _conv(c_in, c_out, sigma, stride=1):
    """A bias-free 3x3 convolution (padding 1) with weights N(0, sigma^2 / fan_in)."""
    conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.normal_(0.0, sigma / math.sqrt(c_in * 9))
    return conv


class _Block(nn.Module):
    """neural-tangents' ``WideResnetBlock``: ``conv2(relu(conv1(relu(x)))) + shortcut(x)``.

    ``conv1`` has the block's stride. The shortcut is the identity, or, on the first block of a
    group (``channel_mismatch`` there), a strided 3x3 convolution of the block's input.
    """

    def __init__(self, c_in, c_out, sigma, stride=1, shortcut_conv=False):
        super().__init__()
        self.conv1 = _conv(c_in, c_out, sigma, stride)
        self.conv2 = _conv(c_out, c_out, sigma)
        self.shortcut = _conv(c_in, c_out, sigma, stride) if shortcut_conv else None

    def forward(self, x):
        h = self.conv2(torch.relu(self.conv1(torch.relu(x))))
        return h + (x if self.shortcut is None else self.shortcut(x))


class WideResNet(nn.Module):
    """The Wide-ResNet of the paper's Figure 1(d, e): neural-tangents' ``WideResnet`` example
    (Novak et al. 2020), in standard parameterization, without batch normalization.

    A first 3x3 convolution to 16 channels, three groups of ``block_size`` pre-activation
    residual blocks with 16k, 32k and 64k channels (k = ``widen``), an average pool over the
    whole image and a linear read-out. The first block of each group has a strided 3x3
    convolution as its shortcut; the second and third groups downsample by stride 2 (in that
    block's first convolution and its shortcut). At k = 4, ``block_size`` = 1 and 3 input
    channels this is 1,530,544 parameters. Two details differ from neural-tangents: the pool
    is global for any image size (theirs is an 8x8 window, the same for 32x32 images), and
    padding is 1 on every side (JAX's ``SAME`` pads a stride-2 convolution on one side only).
    Without batch normalization the model is a plain function of its parameters and its NTK is
    well defined (computed by the generic ``"jacobian"`` or ``"vp"`` methods of
    :func:`silentlib.ntk.ntk`). Input (P, channels, H, W); output (P,) or (P, C).

    Parameters
    ----------
    widen : int
        Widening factor k.
    block_size : int
        Residual blocks per group.
    channels : int
        Input channels (3 for CIFAR-10).
    out_dim : int
        Number of outputs C.
    sigma : float
        Weights are ``N(0, sigma^2 / fan_in)`` in the blocks (paper: 0.3) and, the book's
        choice (the paper does not say), in the read-out.
    sigma_first : float
        The same for the first convolution (paper: 6.0).

    Raises
    ------
    ValueError
        If ``widen``, ``block_size`` or ``out_dim`` is not a positive integer.
    """

    def __init__(self, *, widen: int = 4, block_size: int = 1, channels: int = 3, out_dim: int = 1,
                 sigma: float = 0.3, sigma_first: float = 6.0):
        super().__init__()
        check_int("widen", widen)
        check_int("block_size", block_size)
        check_int("out_dim", out_dim)
        self.out_dim = out_dim
        self.first = _conv(channels, 16, sigma_first)
        blocks, c = [], 16
        for w, stride in ((16 * widen, 1), (32 * widen, 2), (64 * widen, 2)):
            blocks.append(_Block(c, w, sigma, stride, shortcut_conv=True))
            blocks += [_Block(w, w, sigma) for _ in range(block_size - 1)]
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.readout = nn.Linear(c, out_dim, bias=False)
        with torch.no_grad():
            self.readout.weight.normal_(0.0, sigma / math.sqrt(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(P, channels, H, W) images -> (P,) outputs, or (P, C) for ``out_dim = C > 1``."""
        h = self.blocks(self.first(x)).mean(dim=(2, 3))
        out = self.readout(h)
        return out.squeeze(-1) if self.out_dim == 1 else out
