"""A zoo of hand-built networks, as a researcher would write them.

For every network and every method, ``ntk`` either equals the float64 definition

    K[i, j, a, b] = sum over the model's *unique* trainable parameters theta of
                    d f_a(x1_i) / d theta * d f_b(x2_j) / d theta

computed here by plain autograd (one ``torch.autograd.grad`` per example and output), to 1e-9,
or raises a ValueError / TypeError that says why; and after every call the model is exactly as it
was: the same Parameter objects with the same values and flags, the same buffers, hooks and modes,
still convertible (``.double()``) and trainable by an optimizer that holds the original Parameters.
"""
import copy
import math
import re
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

import silentlib as sl
from silentlib.ntk import checks

TOL = 1e-9
METHODS = ("auto", "layerwise", "jacobian", "vp")


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
]

# where torch.func itself differentiates wrongly (torch 2.13: vmap(jacrev) through PReLU's weight), the
# method must either be right anyway or refuse, saying that its check against plain autograd failed;
# auto then falls back to a method that passes the check
TRANSFORM_FAILURES = {("PReLU (an activation with a parameter)", "jacobian")}

REFUSED = [
    # (name, factory, input shape, method -> regular expression of the refusal, for every method)
    ("two outputs (a tuple)", TwoOutputs, (5,), "one tensor"),
    ("spectral_norm in training mode", spectral_norm_train, (5,), "changes its buffers"),
    ("batch norm in training mode", lambda: nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)),
     (5,), "training mode"),
    ("dropout in training mode", lambda: nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.5), nn.Linear(8, 1)),
     (5,), "random|training mode"),
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


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name,factory,shape,layerwise_reason", ZOO, ids=[z[0] for z in ZOO])
def test_zoo(name, factory, shape, layerwise_reason, method, definitions):
    seed = sum(map(ord, name))
    torch.manual_seed(seed)
    model = randomized(factory(), seed)
    g = torch.Generator().manual_seed(seed)
    x1, x2 = torch.randn((5,) + shape, generator=g), torch.randn((3,) + shape, generator=g)
    inputs = (x1.clone(), x2.clone())
    if name not in definitions:
        definitions[name] = [definition_ntk(model, x1, x1), definition_ntk(model, x1, x2)]
    before = snapshot(model)
    for (a, b), ref in zip([(x1, None), (x1, x2)], definitions[name]):
        assert float(ref.abs().max()) > 0
        if method == "layerwise" and layerwise_reason is not None:
            with pytest.raises(ValueError, match=f"method='layerwise'.*{layerwise_reason}"):
                sl.ntk(model, a, b, method=method)
        else:
            try:
                K = sl.ntk(model, a, b, method=method, block_size=2)
            except ValueError as e:
                if (name, method) not in TRANSFORM_FAILURES:
                    raise
                assert "failed its check against plain autograd" in str(e)
                assert_unchanged(model, before, x1)
                continue
            err = float((as4(K) - ref).abs().max() / ref.abs().max())
            assert err < TOL, f"{name}, {method}: relative error {err:.1e}"
            assert K.dtype == torch.float64 and as4(K).shape == ref.shape
        assert_unchanged(model, before, x1)
    assert torch.equal(x1, inputs[0]) and torch.equal(x2, inputs[1]), "ntk overwrote its inputs"
    assert_still_trainable(model, x1)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name,factory,shape,reason", REFUSED, ids=[z[0] for z in REFUSED])
def test_refused_with_a_reason(name, factory, shape, reason, method):
    model = randomized(factory(), 0)
    x = torch.randn((4,) + shape)
    before = snapshot(model)
    if method == "layerwise":   # refused earlier, for not being a plain stack, or for the same reason
        reason = f"{reason}|method='layerwise'"
    with pytest.raises((ValueError, TypeError), match=reason):
        sl.ntk(model, x, method=method)
    assert_unchanged(model, before, x)


def test_a_wrong_transform_is_caught_not_returned(monkeypatch):
    """A kernel that a (deliberately broken) Jacobian gets wrong by 1e-3 is refused, naming the check;
    auto recomputes it with vp and is right."""
    generic = __import__("importlib").import_module("silentlib.ntk.generic")
    features = generic.jacobian_features

    def off_by_a_little(*args):
        return [J * (1 + 1e-3) for J in features(*args)]

    monkeypatch.setattr(generic, "jacobian_features", off_by_a_little)
    model = randomized(nn.Sequential(nn.Linear(5, 8), Square(), nn.Linear(8, 2)), 1)
    x = torch.randn(6, 5)
    with pytest.raises(ValueError, match="method='jacobian' computed failed its check"):
        sl.ntk(model, x, method="jacobian")
    ref = definition_ntk(model, x, x)
    assert float((sl.ntk(model, x) - ref).abs().max() / ref.abs().max()) < TOL


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
        plan = sl.ntk_plan(model, torch.randn((3,) + shape, dtype=next(model.parameters()).dtype))
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
