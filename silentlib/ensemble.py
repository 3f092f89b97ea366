"""Many networks of one architecture trained as one: their parameters as the rows of one tensor.

An :class:`Ensemble` of B models holds the trainable parameters of model b, flattened, as row b of
``theta`` (B, n); while it is bound, every model's parameters are views of its row, so the models
always show the current state (for the records, their NTKs and observables). Its gradient field
:meth:`Ensemble.loss_and_grad` gives every model's square loss (paper, eq. 4)::

    L_b(theta_b) = 1/(2P) sum_mu |f_b(x^mu) - y^mu|^2

and its gradient, (B,) and (B, n), in one pass: ``torch.func.functional_call`` of the first model
with each row's parameters, vectorized over the rows by ``torch.func.vmap`` (one batched matrix
product per layer instead of B small ones). Row b's loss and gradient are model b's alone, equal
to rounding to those of the model trained by itself.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, vmap


class Ensemble:
    """B models of one architecture with their trainable parameters as the rows of ``theta`` (B, n).

    Made from the models, it binds them (their parameters become views of ``theta``'s rows, in
    ``named_parameters`` order); :meth:`release` gives each model its own storage back.

    Parameters
    ----------
    models : list of torch.nn.Module
        The networks, on one device, with trainable parameters of one dtype. More than one must
        share their architecture: the same trainable parameter names and shapes, equal frozen
        parameters and buffers, and a forward pass that is the first model's with their own
        parameters (checked on ``x``).
    x : torch.Tensor
        (P, ...) the training inputs, shared by every model.
    y : torch.Tensor
        (P,) or (P, C) the targets, shared by every model.

    Raises
    ------
    ValueError
        If a model has no trainable parameters, or the models do not share an architecture
        (naming the first difference): train such models one by one.
    """

    def __init__(self, models: list[nn.Module], x: torch.Tensor, y: torch.Tensor):
        self.models, self.x, self.y = list(models), x, y
        self.template = self.models[0]
        named = [[(k, p) for k, p in m.named_parameters() if p.requires_grad] for m in self.models]
        if not named[0]:
            raise ValueError("the model has no trainable parameters")
        self.names = [k for k, _ in named[0]]
        self.shapes = [p.shape for _, p in named[0]]
        self.sizes = [p.numel() for _, p in named[0]]
        for b, pairs in enumerate(named[1:], 1):
            _check_same_parameters(b, pairs, named[0])
        if len({p.dtype for _, p in named[0]}) > 1:
            raise ValueError("the trainable parameters must share one dtype, got "
                             f"{sorted({str(p.dtype) for _, p in named[0]})}")
        self.theta = torch.stack([torch.cat([p.detach().reshape(-1) for _, p in pairs]) for pairs in named])
        self.params = [[p for _, p in pairs] for pairs in named]
        self._bind()
        self.evaluations = 0   # gradient evaluations of the whole ensemble (one per row each)
        if len(self.models) > 1:
            self._check_same_function()

    def __len__(self) -> int:
        return len(self.models)

    def _rows(self, row: torch.Tensor) -> dict[str, torch.Tensor]:
        """{name: view} of one flat row (n,) as the template's parameters."""
        return {k: v.view(s) for k, v, s in zip(self.names, row.split(self.sizes), self.shapes)}

    def _bind(self):
        for b, params in enumerate(self.params):
            for p, v in zip(params, self._rows(self.theta[b]).values()):
                p.data = v

    def release(self) -> None:
        """Give every model's parameters their own storage again (their current values)."""
        for params in self.params:
            for p in params:
                p.data = p.data.clone()

    def _loss_one(self, row: torch.Tensor) -> torch.Tensor:
        out = functional_call(self.template, self._rows(row), (self.x,))
        return 0.5 * (out - self.y).pow(2).sum() / self.x.shape[0]

    def outputs(self, theta: torch.Tensor) -> torch.Tensor:
        """(B', P) or (B', P, C): the outputs on ``x`` with the parameters ``theta`` (B', n), one row each."""
        if theta.shape[0] == 1:
            return functional_call(self.template, self._rows(theta[0]), (self.x,))[None]
        return vmap(lambda row: functional_call(self.template, self._rows(row), (self.x,)))(theta)

    def loss_and_grad(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss L and its gradient at each row of ``theta`` (B', n), rows of the ensemble's
        parameters (all B of them, or those of the networks still training).

        Returns
        -------
        tuple
            ``(loss, grad)``: (B',) and (B', n), detached.
        """
        if len(self.models) == 1 and theta.data_ptr() == self.theta.data_ptr() and theta.shape == self.theta.shape:
            return self._own_loss_and_grad()
        theta = theta.detach().requires_grad_(True)
        loss = self._loss_one(theta[0])[None] if theta.shape[0] == 1 else vmap(self._loss_one)(theta)
        grad, = torch.autograd.grad(loss.sum(), theta)
        self.evaluations += 1
        return loss.detach(), grad

    def _own_loss_and_grad(self):
        """:meth:`loss_and_grad` of a single bound model at its own parameters, through its own forward
        and their gradients (no ``functional_call``: a third less time a step for the book's small networks)."""
        out = self.template(self.x)
        loss = 0.5 * (out - self.y).pow(2).sum() / self.x.shape[0]
        grads = torch.autograd.grad(loss, self.params[0], allow_unused=True, materialize_grads=True)
        self.evaluations += 1
        return loss.detach()[None], torch.cat([g.reshape(-1) for g in grads])[None]

    def _check_same_function(self):
        """Each model's own forward on x equals the template's with that model's parameters."""
        with torch.no_grad():
            stacked = self.outputs(self.theta)
            for b, model in enumerate(self.models[1:], 1):
                own = model(self.x)
                tol = 1e3 * torch.finfo(own.dtype).eps
                if not torch.allclose(stacked[b], own, rtol=tol, atol=tol * float(own.abs().max()) + 1e-300):
                    raise ValueError(
                        f"models[{b}] does not compute what models[0] computes with its parameters (another "
                        f"activation or structure?); only networks of one architecture train together: "
                        f"train it separately")


def _check_same_parameters(b, pairs, first):
    names = [k for k, _ in pairs]
    if names != [k for k, _ in first]:
        raise ValueError(f"models[{b}] has the trainable parameters {names}, models[0] has "
                         f"{[k for k, _ in first]}; only networks of one architecture train together")
    for (k, p), (_, q) in zip(pairs, first):
        if p.shape != q.shape or p.dtype != q.dtype or p.device != q.device:
            raise ValueError(f"models[{b}].{k} is {tuple(p.shape)} {p.dtype} on {p.device}, models[0].{k} is "
                             f"{tuple(q.shape)} {q.dtype} on {q.device}; only networks of one architecture "
                             f"train together")
