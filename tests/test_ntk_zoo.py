"""A zoo of hand-built networks, as a researcher would write them.

For every network and every method, ``ntk`` either equals the float64 definition

    K[i, j, a, b] = sum over the model's *unique* trainable parameters theta of
                    d f_a(x1_i) / d theta * d f_b(x2_j) / d theta

computed here by plain autograd (one ``torch.autograd.grad`` per example and output), to 1e-9,
or raises a ValueError / TypeError that says why; and after every call the model is exactly as it
was: the same Parameter objects with the same values and flags, the same buffers, hooks and modes,
still convertible (``.double()``) and trainable by an optimizer that holds the original Parameters.
Block sizes differ from the number of outputs (a batching bug of torch.func shows only then).
"""
import copy
import math
import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize

import silentlib as sl
from silentlib import config
from silentlib.ntk import FallbackWarning, checks, probes

TOL = 1e-9
METHODS = ("auto", "layerwise", "jacobian", "vp", "autograd")


def definition_ntk(model, x1, x2):
    """The NTK by its definition over the unique trainable parameters; (P1, P2, C, C)."""
    params = [p for _, p in model.named_parameters() if p.requires_grad]   # named_parameters deduplicates

    def jac(x):
        rows = []
        for i in range(x.shape[0]):
            out = model(x[i:i + 1].clone()).reshape(-1)
            for a in range(out.shape[0]):
                g = torch.autograd.grad(out[a], params, retain_graph=True, allow_unused=True)
                rows.append(torch.cat([(torch.zeros_like(p) if gi is None else gi).reshape(-1)
                                       for gi, p in zip(g, params)]))
        J = torch.stack(rows)
        return J.reshape(x.shape[0], -1, J.shape[1])

    return torch.einsum("iak,jbk->ijab", jac(x1), jac(x2)).detach()


# ------------------------------------------------------------------------ the networks

class NTKLinear(nn.Linear):
    """NTK parameterization: W x / sqrt(fan_in) + b."""

    def forward(self, x):
        return nn.functional.linear(x, self.weight, self.bias * 0.1) / math.sqrt(self.in_features)


class Square(nn.Module):
    def forward(self, x):
        return x * x


class ScaledReLU(nn.ReLU):
    """A subclass of a known activation with its own forward."""

    def forward(self, x):
        return 2.0 * torch.relu(x) + 0.1 * x


class FixedFeatures(nn.Module):
    """A frozen random projection held as a buffer, then cos."""

    def __init__(self, d_in, d_out):
        super().__init__()
        self.register_buffer("proj", torch.randn(d_in, d_out))

    def forward(self, x):
        return torch.cos(x @ self.proj)


class Residual(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.lin = nn.Linear(width, width)

    def forward(self, x):
        return x + torch.tanh(self.lin(x))


class SequentialWithForward(nn.Sequential):
    def forward(self, x):
        return super().forward(x) * 3.0


class MLPWithForward(sl.MLP):
    def forward(self, x):
        return super().forward(x) + x.sum(dim=1)


class TwoOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(5, 2)

    def forward(self, x):
        out = self.lin(x)
        return out, out


def tied_module():
    shared = nn.Linear(6, 6)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), shared, nn.Tanh(), shared, nn.Tanh(), nn.Linear(6, 2))


def tied_parameter():
    a, b = nn.Linear(5, 5), nn.Linear(5, 5)
    b.weight = a.weight                        # two modules, one weight
    return nn.Sequential(a, nn.Tanh(), b, nn.Tanh(), nn.Linear(5, 1))


def tied_transpose():
    enc, dec = nn.Linear(5, 7), nn.Linear(7, 5, bias=False)
    dec.weight = nn.Parameter(torch.randn(5, 7))

    class AutoEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc, self.dec = enc, dec

        def forward(self, x):                    # decoder tied to the encoder's transpose
            return nn.functional.linear(torch.tanh(self.enc(x)), self.enc.weight.T)[:, :2]

    return AutoEncoder()


def weight_norm():
    return nn.Sequential(parametrizations.weight_norm(nn.Linear(5, 8)), nn.Tanh(), nn.Linear(8, 2))


def weight_norm_old():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lin = nn.utils.weight_norm(nn.Linear(5, 8))
    return nn.Sequential(lin, nn.Tanh(), nn.Linear(8, 2))


def orthogonal():
    return nn.Sequential(parametrizations.orthogonal(nn.Linear(5, 5)), nn.Tanh(), nn.Linear(5, 2))


def spectral_norm_eval():
    return nn.Sequential(parametrizations.spectral_norm(nn.Linear(5, 8)), nn.ReLU(), nn.Linear(8, 1)).eval()


def spectral_norm_train():
    return nn.Sequential(parametrizations.spectral_norm(nn.Linear(5, 8)), nn.ReLU(), nn.Linear(8, 1))


class Doubling(nn.Module):
    def forward(self, w):
        return 2.0 * w


def custom_parametrization():
    lin = nn.Linear(5, 8)
    nn.utils.parametrize.register_parametrization(lin, "weight", Doubling())
    return nn.Sequential(lin, nn.GELU(), nn.Linear(8, 2))


def hooked():
    lin = nn.Linear(5, 8)
    lin.register_forward_hook(lambda m, inp, out: 1.5 * out)
    return nn.Sequential(lin, nn.Tanh(), nn.Linear(8, 2))


def pre_hooked():
    lin = nn.Linear(8, 2)
    lin.register_forward_pre_hook(lambda m, inp: (inp[0] ** 2,))
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), lin)


def hooked_container():
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))
    model.register_forward_hook(lambda m, inp, out: out * inp[0][:, :2])
    return model


def frozen(which):
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
    if which == "first":
        model[0].requires_grad_(False)
    elif which == "last":
        model[4].requires_grad_(False)
    elif which == "middle weight":
        model[2].weight.requires_grad_(False)
    else:  # every bias
        for m in model[::2]:
            m.bias.requires_grad_(False)
    return model


def in_place(act):
    return nn.Sequential(nn.Linear(5, 8), act, nn.Linear(8, 8), copy.deepcopy(act), nn.Linear(8, 2))


class Recurrent(nn.Module):
    """An RNN, GRU or LSTM over sequences of 4 steps of 3 features, read out at the last step."""

    def __init__(self, cell):
        super().__init__()
        self.rnn, self.fc = cell(3, 6, batch_first=True), nn.Linear(6, 2)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][:, -1])


class LSTMCellModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell, self.fc = nn.LSTMCell(5, 6), nn.Linear(6, 2)

    def forward(self, x):
        return self.fc(self.cell(x)[0])


class Tokens(nn.Module):
    """Token ids (P, 3) -> embeddings -> tanh -> linear; with ``cast``, the ids are cast inside forward."""

    def __init__(self, cast=False):
        super().__init__()
        self.emb, self.fc, self.cast = nn.Embedding(10, 4), nn.Linear(12, 2), cast

    def forward(self, ids):
        return self.fc(torch.tanh(self.emb(ids.long() if self.cast else ids).flatten(1)))


class OldStyleSiLU(torch.autograd.Function):
    """x sigmoid(x) with its own backward, in the style torch.func cannot transform (no setup_context)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        s = torch.sigmoid(x)
        return g * (s + x * s * (1 - s))


class CustomFunction(nn.Module):
    def forward(self, x):
        return OldStyleSiLU.apply(x)


class Branching(nn.Module):
    """Control flow on the data: one layer for inputs whose sum is positive, another for the rest."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(5, 2), nn.Linear(5, 2)

    def forward(self, x):
        return torch.cat([self.a(xi[None]) if xi.sum() > 0 else self.b(xi[None]) for xi in x])


class Squeeze(nn.Module):
    def forward(self, x):
        return x.squeeze()


class CausalAttention(nn.Module):
    """A causal TransformerEncoderLayer over sequences of 4 tokens of 8 features, read out at the last."""

    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1], dtype=x.dtype)
        return self.fc(self.layer(x, src_mask=mask, is_causal=True)[:, -1])


class Mask(nn.Module):
    """w -> mask w + (1 - mask) w.detach(): the masked entries are fixed (the parametrization the
    refusal of gradient hooks recommends)."""

    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w):
        return self.mask * w + (1 - self.mask) * w.detach()


def masked_by_parametrization():
    lin = nn.Linear(5, 8)
    parametrize.register_parametrization(lin, "weight", Mask((torch.rand(8, 5) > 0.5).double()))
    return nn.Sequential(lin, nn.Tanh(), nn.Linear(8, 2))


def gradient_hooked():
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))
    mask = torch.rand(8, 5) > 0.5
    model[0].weight.register_hook(lambda g: g * mask)
    return model


def backward_hooked():
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))
    model[0].register_full_backward_hook(lambda m, grad_in, grad_out: None)   # one that only observes
    return model


class CenterBatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(5, 4), nn.Linear(4, 1)

    def forward(self, x):
        h = self.a(x)
        return self.b(h - h.mean(0)).squeeze(-1)


class CumulativeMean(CenterBatch):
    """Causal mixing over the batch: each input minus the mean of those before it and itself."""

    def forward(self, x):
        h = self.a(x)
        n = torch.arange(1, x.shape[0] + 1, dtype=x.dtype).unsqueeze(1)
        return self.b(h - h.cumsum(0) / n)


class BatchAttention(nn.Module):
    """Self-attention across the batch axis (the inputs of a batch are the tokens of one sequence)."""

    def __init__(self):
        super().__init__()
        self.attn, self.fc = nn.MultiheadAttention(5, 1, batch_first=True), nn.Linear(5, 1)

    def forward(self, x):
        return self.fc(self.attn(x[None], x[None], x[None])[0][0])


class Noise(nn.Module):
    def forward(self, x):
        return x + 0.1 * torch.randn_like(x)


def token_ids(P, g):
    return torch.randint(0, 10, (P, 3), generator=g)


def inputs(shape, P, g):
    """P inputs: ``shape(P, g)`` when it makes them (token ids), else Gaussian ones of that shape."""
    return shape(P, g) if callable(shape) else torch.randn((P,) + shape, generator=g)


def randomized(model, seed):
    """Non-zero biases and a fixed seed, in float64."""
    torch.manual_seed(seed)
    model = model.double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.3 * torch.randn_like(p))
    return model


# (name, factory, input shape, expectation for the layerwise method: None where it is exact, else a
#  regular expression of the reason it must give; auto must then fall back to jacobian and be right)
ZOO = [
    ("tied module", tied_module, (5,), "same module"),
    ("tied parameter", tied_parameter, (5,), "same tensor"),
    ("tied transpose (custom module)", tied_transpose, (5,), "not an nn.Sequential"),
    ("NTK-parameterized Linear subclass", lambda: nn.Sequential(NTKLinear(5, 8), nn.ReLU(), NTKLinear(8, 2)),
     (5,), "subclass of nn.Linear with its own forward"),
    ("weight_norm", weight_norm, (5,), "parametrized"),
    ("weight_norm (old hook API)", weight_norm_old, (5,), "hooks"),
    ("orthogonal", orthogonal, (5,), "parametrized"),
    ("spectral_norm, eval", spectral_norm_eval, (5,), "parametrized"),
    ("custom parametrization", custom_parametrization, (5,), "parametrized"),
    ("forward hook", hooked, (5,), "hooks"),
    ("forward pre-hook", pre_hooked, (5,), "hooks"),
    ("forward hook on the Sequential itself", hooked_container, (5,), "hooks"),
    ("ReLU(inplace)", lambda: in_place(nn.ReLU(inplace=True)), (5,), None),
    ("LeakyReLU(inplace)", lambda: in_place(nn.LeakyReLU(0.1, inplace=True)), (5,), None),
    ("ELU(inplace)", lambda: in_place(nn.ELU(inplace=True)), (5,), None),
    ("SiLU(inplace)", lambda: in_place(nn.SiLU(inplace=True)), (5,), None),
    ("Hardtanh(inplace)", lambda: in_place(nn.Hardtanh(-0.5, 0.5, inplace=True)), (5,), None),
    ("Mish(inplace)", lambda: in_place(nn.Mish(inplace=True)), (5,), None),
    ("ReLU6, SELU, CELU, Softplus(beta=2), GELU(tanh)", lambda: nn.Sequential(
        nn.Linear(5, 8), nn.ReLU6(), nn.Linear(8, 8), nn.SELU(), nn.Linear(8, 8), nn.CELU(0.7),
        nn.Linear(8, 8), nn.Softplus(beta=2.0), nn.Linear(8, 8), nn.GELU(approximate="tanh"), nn.Linear(8, 2)),
     (5,), None),
    ("leading Tanh", lambda: nn.Sequential(nn.Tanh(), nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2)), (5,), None),
    ("leading in-place ReLU", lambda: nn.Sequential(nn.ReLU(inplace=True), nn.Linear(5, 8), nn.ELU(inplace=True),
                                                    nn.Linear(8, 1)), (5,), None),
    ("trailing Tanh", lambda: nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3), nn.Tanh()), (5,), None),
    ("custom activation module", lambda: nn.Sequential(nn.Linear(5, 8), Square(), nn.Linear(8, 2)), (5,),
     "Square.*not nn.Linear"),
    ("subclass of ReLU with its own forward", lambda: nn.Sequential(nn.Linear(5, 8), ScaledReLU(), nn.Linear(8, 2)),
     (5,), "subclass of nn.ReLU with its own forward"),
    ("PReLU (an activation with a parameter)", lambda: nn.Sequential(nn.Linear(5, 8), nn.PReLU(8), nn.Linear(8, 2)),
     (5,), "PReLU"),
    ("buffer-holding module", lambda: nn.Sequential(FixedFeatures(5, 8), nn.Linear(8, 2)), (5,), "FixedFeatures"),
    ("Identity and Flatten between layers", lambda: nn.Sequential(
        nn.Linear(5, 8), nn.Identity(), nn.Tanh(), nn.Flatten(), nn.Linear(8, 2), nn.Identity()), (5,), None),
    ("Flatten of image inputs", lambda: nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 2)),
     (3, 2, 2), None),
    ("Linear on a sequence axis", lambda: nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Flatten(), nn.Linear(18, 2)),
     (3, 4), "axes"),
    ("Flatten(0)", lambda: nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 1), nn.Flatten(0)), (5,),
     "Flatten"),
    ("dropout in eval mode", lambda: nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Dropout(0.3),
                                                   nn.Linear(8, 2)).eval(), (5,), None),
    ("frozen first layer", lambda: frozen("first"), (5,), None),
    ("frozen last layer", lambda: frozen("last"), (5,), None),
    ("frozen middle weight, bias trains", lambda: frozen("middle weight"), (5,), None),
    ("frozen biases", lambda: frozen("biases"), (5,), None),
    ("nested Sequentials", lambda: nn.Sequential(nn.Sequential(nn.Linear(5, 8), nn.Tanh()),
                                                 nn.Sequential(nn.Sequential(nn.Linear(8, 8), nn.ReLU()),
                                                               nn.Linear(8, 3))), (5,), None),
    ("residual block", lambda: nn.Sequential(nn.Linear(5, 6), Residual(6), nn.Linear(6, 2)), (5,), "Residual"),
    ("LayerNorm", lambda: nn.Sequential(nn.Linear(5, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 2)), (5,),
     "LayerNorm"),
    ("Sequential subclass with its own forward", lambda: SequentialWithForward(nn.Linear(5, 4), nn.Tanh(),
                                                                                nn.Linear(4, 2)), (5,),
     "SequentialWithForward"),
    ("MLP subclass with its own forward", lambda: MLPWithForward(5, 6, 3, activation="tanh"), (5,), "MLPWithForward"),
    ("silentlib MLP, 3 outputs", lambda: sl.MLP(5, 7, 3, out_dim=3, activation="relu", bias=True), (5,), None),
    ("CNN", lambda: nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2)),
     (2, 4, 4), "Conv2d"),
    ("RNN", lambda: Recurrent(nn.RNN), (4, 3), "Recurrent"),
    ("GRU", lambda: Recurrent(nn.GRU), (4, 3), "Recurrent"),
    ("LSTM", lambda: Recurrent(nn.LSTM), (4, 3), "Recurrent"),
    ("LSTMCell", LSTMCellModel, (5,), "LSTMCellModel"),
    ("Embedding of token ids", Tokens, token_ids, "Tokens"),
    ("Embedding, ids cast inside forward", lambda: Tokens(cast=True), lambda P, g: token_ids(P, g).int(), "Tokens"),
    ("custom autograd.Function without vmap support",
     lambda: nn.Sequential(nn.Linear(5, 8), CustomFunction(), nn.Linear(8, 2)), (5,), "CustomFunction"),
    ("control flow on the data", Branching, (5,), "Branching"),
    (".squeeze() head, one output", lambda: nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 1), Squeeze()),
     (5,), "Squeeze"),
    (".squeeze() head, three outputs", lambda: nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3), Squeeze()),
     (5,), "Squeeze"),
    ("causal TransformerEncoderLayer", CausalAttention, (4, 8), "CausalAttention"),
    ("gradient mask as a parametrization", masked_by_parametrization, (5,), "parametrized"),
    ("batch norm in eval mode", lambda: nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Tanh(),
                                                     nn.Linear(4, 2)).eval(), (5,), "BatchNorm1d"),
]

# where torch.func fails on a model (raises, or computes a kernel that fails its check against plain
# autograd), a method chosen explicitly must refuse saying so (or be right anyway), and auto must fall back
# to plain autograd per example with a FallbackWarning; for every other model auto must not warn
TRANSFORM_FAILURES = {
    ("PReLU (an activation with a parameter)", "jacobian"): r"vmap\(jacrev\)",
    **{(name, m): "torch.func" for name in ("RNN", "GRU", "LSTM", "LSTMCell",
                                            "custom autograd.Function without vmap support",
                                            "control flow on the data") for m in ("jacobian", "vp")},
    ("causal TransformerEncoderLayer", "vp"): "not implemented",
}
FALLS_BACK = {name for name, m in TRANSFORM_FAILURES if m == "jacobian"}

REFUSED = [
    # (name, factory, input shape, regular expression of the refusal for every method, (P1, P2 or None))
    ("two outputs (a tuple)", TwoOutputs, (5,), "one tensor", (4, None)),
    ("spectral_norm in training mode", spectral_norm_train, (5,), "changes its buffers", (4, None)),
    ("batch norm in training mode", lambda: nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)),
     (5,), "BatchNorm1d in training mode", (4, None)),
    ("batch norm without running statistics, in eval mode", lambda: nn.Sequential(
        nn.Linear(5, 4), nn.BatchNorm1d(4, track_running_stats=False), nn.Linear(4, 1)).eval(),
     (5,), "without running statistics", (4, None)),
    ("dropout in training mode", lambda: nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.5), nn.Linear(8, 1)),
     (5,), "Dropout in training mode: it is random", (4, None)),
    ("dropout in training mode, one input", lambda: nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.5), nn.Linear(8, 1)),
     (5,), "Dropout in training mode: it is random", (1, None)),
    ("noise in forward", lambda: nn.Sequential(nn.Linear(5, 8), Noise(), nn.Linear(8, 1)), (5,), "it is random",
     (4, None)),
    ("noise in forward, one input", lambda: nn.Sequential(nn.Linear(5, 8), Noise(), nn.Linear(8, 1)), (5,),
     "it is random", (1, None)),
    ("mean over the batch", CenterBatch, (5,), "mixes examples", (4, None)),
    ("mean over the batch, x1 of one input", CenterBatch, (5,), "mixes examples", (1, 4)),
    ("mean over the batch, x2 of one input", CenterBatch, (5,), "mixes examples", (4, 1)),
    ("mean over the batch, one input", CenterBatch, (5,), "mixes examples", (1, None)),
    ("cumulative mean over the batch", CumulativeMean, (5,), "mixes examples", (4, None)),
    ("attention across the batch", BatchAttention, (5,), "mixes examples", (4, None)),
    ("gradient hook on a parameter", gradient_hooked, (5,), r"parameter 0\.weight has a gradient hook", (4, None)),
    ("backward hook on a module", backward_hooked, (5,), r"0 \(Linear\) has a backward hook", (4, None)),
]


# ------------------------------------------------------------------------ the model left untouched

def snapshot(model):
    """Everything about the model an ntk call must leave as it was."""
    return {
        "params": [(n, p, p.detach().clone(), p.requires_grad, type(p))
                   for n, p in model.named_parameters(remove_duplicate=False)],
        "buffers": [(n, b, b.clone()) for n, b in model.named_buffers(remove_duplicate=False)],
        "modes": [(n, m.training) for n, m in model.named_modules(remove_duplicate=False)],
        "hooks": [(n, len(m._forward_hooks), len(m._forward_pre_hooks))
                  for n, m in model.named_modules(remove_duplicate=False)],
        "attrs": [(n, k, v) for n, m in model.named_modules(remove_duplicate=False)
                  for k, v in vars(m).items() if torch.is_tensor(v)],
        "grads": [p.grad for p in model.parameters()],
    }


def assert_unchanged(model, before, x):
    after = snapshot(model)
    assert [n for n, *_ in after["params"]] == [n for n, *_ in before["params"]]
    for (n, p, value, rg, cls), (_, q, _, rg2, cls2) in zip(before["params"], after["params"]):
        assert q is p, f"{n} is no longer the original Parameter"
        assert type(q) is cls, f"{n} is a {type(q).__name__} now"
        assert torch.equal(q.detach(), value) and rg2 == rg, n
    for (n, b, value), (_, c, _) in zip(before["buffers"], after["buffers"]):
        assert c is b and torch.equal(c, value), f"buffer {n} changed"
    assert after["modes"] == before["modes"] and after["hooks"] == before["hooks"]
    for (n, k, v), (n2, k2, v2) in zip(before["attrs"], after["attrs"]):
        assert (n, k) == (n2, k2) and v2 is v, f"{n}.{k} was replaced"
    assert all(g is None for g in after["grads"]), "ntk left gradients in .grad"


def assert_still_trainable(model, x):
    """An optimizer holding the original Parameters still trains the model, and .double() works."""
    model.double()
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    out_before = model(x.clone()).detach()
    opt = torch.optim.SGD(params, lr=0.1)
    loss = model(x.clone()).pow(2).sum()
    loss.backward()
    opt.step()
    assert any(p.grad is not None for p in params)
    assert any(not torch.equal(p.detach(), b) for p, b in zip(params, before)), "the step changed nothing"
    assert not torch.equal(model(x.clone()).detach(), out_before)


def as4(K):
    return K if K.ndim == 4 else K[:, :, None, None]


# ------------------------------------------------------------------------ the tests

@pytest.fixture(scope="module")
def definitions():
    return {}


def block_for(C):
    """A block size that differs from the number of outputs C, and from the number of inputs."""
    return 2 if C != 2 else 3


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name,factory,shape,layerwise_reason", ZOO, ids=[z[0] for z in ZOO])
def test_zoo(name, factory, shape, layerwise_reason, method, definitions):
    seed = sum(map(ord, name))
    torch.manual_seed(seed)
    model = randomized(factory(), seed)
    g = torch.Generator().manual_seed(seed)
    x1, x2 = inputs(shape, 5, g), inputs(shape, 3, g)
    saved = (x1.clone(), x2.clone())
    if name not in definitions:
        definitions[name] = [definition_ntk(model, x1, x1), definition_ntk(model, x1, x2)]
    before = snapshot(model)
    for (a, b), ref in zip([(x1, None), (x1, x2)], definitions[name]):
        assert float(ref.abs().max()) > 0
        if method == "layerwise" and layerwise_reason is not None:
            with pytest.raises(ValueError, match=f"method='layerwise'.*{layerwise_reason}"):
                sl.ntk(model, a, b, method=method)
        elif (name, method) in TRANSFORM_FAILURES:
            with pytest.raises(ValueError, match=f"method='{method}' cannot compute.*{TRANSFORM_FAILURES[name, method]}"):
                sl.ntk(model, a, b, method=method, block_size=block_for(ref.shape[2]))
        else:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", FallbackWarning)
                K = sl.ntk(model, a, b, method=method, block_size=block_for(ref.shape[2]))
            fell_back = [w for w in caught if issubclass(w.category, FallbackWarning)]
            assert bool(fell_back) == (method == "auto" and name in FALLS_BACK), [str(w.message) for w in fell_back]
            err = float((as4(K) - ref).abs().max() / ref.abs().max())
            assert err < TOL, f"{name}, {method}: relative error {err:.1e}"
            assert K.dtype == torch.float64 and as4(K).shape == ref.shape
        assert_unchanged(model, before, x1)
    assert torch.equal(x1, saved[0]) and torch.equal(x2, saved[1]), "ntk overwrote its inputs"
    if x1.is_floating_point():
        assert_still_trainable(model, x1)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name,factory,shape,reason,sizes", REFUSED, ids=[z[0] for z in REFUSED])
def test_refused_with_a_reason(name, factory, shape, reason, sizes, method):
    model = randomized(factory(), 0)
    P1, P2 = sizes
    x1, x2 = torch.randn((P1,) + shape), None if P2 is None else torch.randn((P2,) + shape)
    before = snapshot(model)
    if method == "layerwise":   # refused earlier, for not being a plain stack, or for the same reason
        reason = f"{reason}|method='layerwise'"
    with pytest.raises((ValueError, TypeError), match=reason):
        sl.ntk(model, x1, x2, method=method)
    assert_unchanged(model, before, x1)


class MixesFromThreeInputs(CenterBatch):
    """Mixes the batch only from three inputs on: the probe of two inputs cannot see it, the check can."""

    def forward(self, x):
        h = self.a(x)
        return self.b(h - h.mean(0) if x.shape[0] >= 3 else h).squeeze(-1)


def test_mixing_the_probe_misses_is_caught_by_the_check_and_refused():
    model = randomized(MixesFromThreeInputs(), 5)
    x = torch.randn(6, 5)
    before = snapshot(model)
    with pytest.raises(ValueError, match="no method computes this model's NTK exactly.*did not see"), \
            pytest.warns(FallbackWarning):
        sl.ntk(model, x, block_size=4)
    with pytest.raises(ValueError, match="method='autograd' cannot compute.*failed its check.*did not see"):
        sl.ntk(model, x, method="autograd", block_size=4)
    assert_unchanged(model, before, x)


def test_the_probe_takes_its_second_input_from_x1_or_x2_and_keeps_token_ids_in_range():
    x1, x2 = torch.randn(1, 5), torch.randn(3, 5)
    assert torch.equal(probes.probe_inputs(x1, x2), torch.cat([x1, x2[:1]]))
    assert torch.equal(probes.probe_inputs(torch.cat([x1, x1]), x2), torch.cat([x1, x2[:1]]))  # not a copy
    assert torch.equal(probes.probe_inputs(x1, None), torch.cat([x1, 2 * x1 + 1]))
    ids = torch.tensor([[3, 7, 0]])
    z = probes.probe_inputs(ids, None)
    assert z.dtype == ids.dtype and torch.equal(z[1], torch.tensor([4, 0, 1])) and int(z.max()) <= 7
    mask = torch.tensor([[True, False]])
    assert torch.equal(probes.probe_inputs(mask, None)[1], ~mask[0])


def test_a_wrong_transform_is_caught_not_returned(monkeypatch):
    """A kernel that a (deliberately broken) Jacobian gets wrong by 1e-3 is refused, naming the check;
    auto recomputes it per example with plain autograd, says so, and is right."""
    generic = __import__("importlib").import_module("silentlib.ntk.generic")
    features = generic.jacobian_features

    def off_by_a_little(*args):
        return [J * (1 + 1e-3) for J in features(*args)]

    monkeypatch.setattr(generic, "jacobian_features", off_by_a_little)
    model = randomized(nn.Sequential(nn.Linear(5, 8), Square(), nn.Linear(8, 2)), 1)
    x = torch.randn(6, 5)
    with pytest.raises(ValueError, match="method='jacobian' cannot compute.*failed its check against plain autograd"):
        sl.ntk(model, x, method="jacobian")
    ref = definition_ntk(model, x, x)
    with pytest.warns(FallbackWarning, match="failed its check.*per example with plain autograd"):
        K = sl.ntk(model, x)
    assert float((K - ref).abs().max() / ref.abs().max()) < TOL


def test_the_check_covers_the_last_block_too(monkeypatch):
    """The check looks at a few inputs spread over x1 and x2, so a transform that is wrong only in the
    last block (here the last of three) is caught as well."""
    generic = __import__("importlib").import_module("silentlib.ntk.generic")
    features = generic.jacobian_features
    model = randomized(nn.Sequential(nn.Linear(5, 8), Square(), nn.Linear(8, 2)), 2)
    x1, x2 = torch.randn(9, 5), torch.randn(7, 5)

    def wrong_at_the_end(model_, params, x, idx, group):
        J, = features(model_, params, x, idx, group)
        last = any(torch.equal(x[-1], xs[-1]) for xs in (x1, x2))
        return [J * (1 + 1e-3) if last else J]

    monkeypatch.setattr(generic, "jacobian_features", wrong_at_the_end)
    for x2_ in (None, x2):
        with pytest.raises(ValueError, match="failed its check"):
            sl.ntk(model, x1, x2_, method="jacobian", block_size=3)


def test_prelu_is_caught_when_the_block_size_equals_the_outputs():
    """With as many inputs per block as outputs, torch 2.13's vmap(jacrev) does not fail on PReLU's weight
    but returns a wrong Jacobian: the check catches it, and auto falls back."""
    torch.manual_seed(3)
    model = randomized(nn.Sequential(nn.Linear(5, 6), nn.PReLU(6), nn.Linear(6, 2)), 3)
    x = torch.randn(6, 5)
    ref = definition_ntk(model, x, x)
    with pytest.raises(ValueError, match=r"method='jacobian' cannot compute.*vmap\(jacrev\)"):
        sl.ntk(model, x, method="jacobian", block_size=2)
    with pytest.warns(FallbackWarning, match=r"vmap\(jacrev\)"):
        K = sl.ntk(model, x, block_size=2)
    assert float((K - ref).abs().max() / ref.abs().max()) < TOL


SELECTIONS = [  # (outputs=, the indices it selects, whether the kernel keeps its output axes)
    ([1, 1], [1, 1], True), ([2, 0, 2], [2, 0, 2], True), (2, [2], False), (np.int64(1), [1], False),
    (slice(1, None), [1, 2], True), (np.array([True, False, True]), [0, 2], True), ([True, False, True], [0, 2], True),
    (torch.tensor([0, 2]), [0, 2], True), (np.array([1, 0]), [1, 0], True), ((0,), [0], True),
]


@pytest.mark.parametrize("method", METHODS)
def test_outputs_select_the_definitions_blocks(method):
    """Every form of outputs= (repeated indices included) gives K[:, :, idx][:, :, :, idx] of the definition,
    with blocks that differ from the number of selected outputs."""
    torch.manual_seed(4)
    model = randomized(nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)), 4)
    x1, x2 = torch.randn(5, 5), torch.randn(4, 5)
    for a, b in ((x1, None), (x1, x2)):
        full = definition_ntk(model, a, a if b is None else b)
        for outputs, idx, axes in SELECTIONS:
            K = sl.ntk(model, a, b, method=method, outputs=outputs, block_size=len(idx) + 1)
            ref = full[:, :, idx][:, :, :, idx]
            assert K.shape == (ref.shape if axes else ref.shape[:2]), (outputs, method)
            err = float((as4(K) - ref).abs().max() / ref.abs().max())
            assert err < TOL, (outputs, method, err)


def test_outputs_and_block_size_are_checked():
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x = torch.randn(4, 5)
    for bad in ([0.7, 1.2], 1.0, "0", [[0, 1]], None.__class__):
        with pytest.raises(TypeError, match="outputs must be an int, a slice, a sequence of ints or a boolean mask"):
            sl.ntk(model, x, outputs=bad)
    for bad in (3, [0, 3], [-1], [], slice(5, 7), np.array([], dtype=int)):
        with pytest.raises(ValueError, match=r"outputs must select indices in 0\.\.2"):
            sl.ntk(model, x, outputs=bad)
    with pytest.raises(ValueError, match=r"boolean mask outputs= needs one entry per output \(3\), got 2"):
        sl.ntk(model, x, outputs=np.array([True, False]))
    for good in (np.int64(2), np.int32(3), 2):
        assert sl.ntk_plan(model, x, block_size=good).block_size == int(good)
    for bad in (True, 2.0, 0, np.float64(2)):
        with pytest.raises(ValueError, match="block_size"):
            sl.ntk(model, x, block_size=bad)


def test_a_model_on_the_meta_device_is_planned_not_computed(monkeypatch):
    """ntk_plan needs shapes only, so a model on the meta device (no weights) gets the plan its materialized
    copy gets; ntk says why it cannot compute."""
    monkeypatch.setattr(config, "free_memory", lambda dev: 2**24)
    for make, shape in ((lambda: nn.Sequential(nn.Linear(5, 64), nn.Tanh(), nn.Linear(64, 3)), (5,)),
                        (lambda: nn.Sequential(nn.Conv2d(2, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3)),
                         (2, 4, 4))):
        with torch.device("meta"):
            meta = make().double()
        real = make().double()
        x = torch.randn((300,) + shape)
        for method in ("auto", "jacobian", "vp"):
            assert sl.ntk_plan(meta, x, method=method) == sl.ntk_plan(real, x, method=method), method
        with pytest.raises(ValueError, match="meta device.*ntk_plan can plan its kernel but ntk cannot compute it"):
            sl.ntk(meta, x)


def test_a_model_too_large_is_refused_after_one_forward_pass_of_two_inputs(monkeypatch):
    """The working memory is planned from the probe's one forward pass (of two inputs), so a model too large
    is refused before the mixing probe and before anything is computed; the advice fits the method."""
    monkeypatch.setattr(config, "free_memory", lambda dev: 2**21)
    model = nn.Sequential(nn.Linear(10, 20_000), Square(), nn.Linear(20_000, 3)).double()
    seen = []
    model[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))

    def never(*args, **kwargs):
        raise AssertionError("computed before the plan refused")

    monkeypatch.setattr(probes, "check_mixing", never)
    generic = __import__("importlib").import_module("silentlib.ntk.generic")
    perexample = __import__("importlib").import_module("silentlib.ntk.perexample")
    monkeypatch.setattr(generic, "jacobian_features", never)
    monkeypatch.setattr(generic, "vp_block", never)
    monkeypatch.setattr(perexample, "jacobian_rows", never)
    x = torch.randn(64, 10)
    for method in ("auto", "jacobian", "vp", "autograd"):
        seen.clear()
        with pytest.raises(ValueError, match="working memory even for one input at a time") as err:
            sl.ntk(model, x, method=method)
        assert seen == [2], seen                       # one forward pass, of the two probe inputs
        message = str(err.value)
        assert "fewer outputs at a time (outputs=[...])" in message
        assert ("method='jacobian', which splits the parameters" in message) == (method == "vp"), message
    seen.clear()
    with pytest.raises(ValueError, match="working memory"):
        sl.ntk(model, x, method="vp", outputs=[0])     # one output: the advice is the other method only
    assert seen == [2]


def test_layerwise_refusal_names_the_module():
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), NTKLinear(8, 2))
    with pytest.raises(ValueError, match=re.escape("model[2] (NTKLinear)")):
        sl.ntk(model, torch.randn(3, 5), method="layerwise")


def test_auto_takes_layerwise_exactly_where_it_is_exact():
    """auto's choice, seen from outside: the plan it makes names the method."""
    exact = nn.Sequential(nn.Linear(5, 8), nn.ReLU(inplace=True), nn.Linear(8, 2))
    assert sl.ntk_plan(exact, torch.randn(3, 5)).method == "layerwise"
    for _, factory, shape, reason in ZOO:
        model = factory()
        x = inputs(shape, 3, torch.Generator().manual_seed(0))
        plan = sl.ntk_plan(model, x.to(next(model.parameters()).dtype) if x.is_floating_point() else x)
        assert plan.method == ("layerwise" if reason is None else "jacobian"), (type(model).__name__, reason)


def test_a_plain_stacks_output_shape_is_read_from_its_layers():
    """For the plain stacks (layerwise exact), ntk reads the output shape from the layers instead of
    a forward pass; it must be the shape the forward pass gives, and None where the input does not fit."""
    stacks = [(factory(), shape) for _, factory, shape, reason in ZOO if reason is None]
    stacks += [(sl.MLP(5, 7, depth, out_dim=C), (5,)) for depth in (1, 3) for C in (1, 4)]
    for model, shape in stacks:
        layers, reason = checks.plain_stack(model, 1 + len(shape))
        assert reason is None
        x = torch.randn((3,) + shape, dtype=next(model.parameters()).dtype)
        assert checks.stack_output_shape(model, layers, x) == model(x[:1].clone()).shape, model
        wider = torch.randn((3,) + shape[:-1] + (shape[-1] + 1,), dtype=x.dtype)
        assert checks.stack_output_shape(model, layers, wider) is None, model


def test_a_stack_whose_layer_sizes_do_not_chain_is_reported_by_its_forward_pass():
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(7, 2))
    assert checks.stack_output_shape(model, checks.plain_stack(model)[0], torch.randn(3, 5)) is None
    with pytest.raises(ValueError, match=r"cannot be evaluated on x1 of shape \(3, 5\)"):
        sl.ntk(model, torch.randn(3, 5))
