"""Many small MLPs trained as one: the lanes of a grid, batched into a few tensors.

Cells that share width, normalization, loss, penalties and optimizer settings form a *stack*;
they may differ in activation, depth and initialization. A *mixed* stack (:class:`MixedStackedLanes`, a
sweep's trials) may differ in width and optimizer settings too: narrower cells are padded with units
whose outputs are forced to zero, and :class:`core.engine.optimizers.LaneRules` updates each cell by its
own rule and knobs. A cell that ends early (pruned, diverged) is cut out (:meth:`StackedLanes.retire`). Layer j of all cells of a stack is
one weight tensor ``[n, out, in]`` (each cell's slice in the ``nn.Linear`` layout), and one
training step of the stack is

- the first layer of every cell as ONE wide matmul (all cells see the same batch x),
- each hidden layer as one batched matmul (``torch.baddbmm``) over the cells,
- normalization over all cells at once (BatchNorm over ``cells * width`` features is exactly
  per-cell BatchNorm; LayerNorm normalizes each cell's own units),
- the activation once per activation group (cells are sorted so that a group is a slice),
- the output layer as one batched matmul, giving logits ``[n, B, K]``.

A cell shallower than the stack's deepest one holds zeros in the layers it does not have; its
logits are read from its own last hidden layer, so those zeros receive exactly zero gradient
and never move. Forward and backward are written out in one autograd Function calling the
same ATen kernels autograd would, without a graph node per op: that is what makes thirty
small models cost a few times one instead of thirty times.

Every cell's loss is its own batch mean and the loop back-propagates their sum, so each cell
gets exactly its own gradient, and an elementwise optimizer (SGD, momentum, Nesterov, Adam,
NAdam, RMSprop) over the stacked tensors is exactly one optimizer per cell. Cells are built by
:func:`core.engine.models.build_model` with their own seeded generator and copied in, so a cell
trained here matches the same config trained alone by :func:`core.engine.train.train` to float
tolerance (tests/test_grid.py checks it).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from core.engine.config import ACTIVATIONS, RunConfig
from core.engine.lanes import EVAL_CHUNK, Scores, data_loss, make_optimizer
from core.engine.optimizers import LaneRules
from core.engine.models import build_model, count_parameters, make_activation, weight_layers
from core.engine.probes import grad_norms, unit_saturation, weight_changes, weight_distribution, weight_penalty

aten = torch.ops.aten
EVAL_FLOATS = 1 << 23  # hidden activations held at once while evaluating (chunks shrink as cells grow)
OPTIMIZER_FIELDS = ("optimizer", "lr", "momentum", "rms_alpha", "rms_momentum", "beta1", "beta2", "weight_decay",
                    "weight_decay_mode", "optimizer_impl", "lr_schedule", "lr_step_every_epochs", "lr_gamma",
                    "warmup_epochs")


def why_not_batched(cfg: RunConfig) -> str | None:
    """Why this config must train on its own (None when it can join a stack)."""
    if cfg.arch != "mlp":
        return "the CNN trains on its own"
    if cfg.dropout > 0:
        return "dropout draws its own random masks per run"
    if cfg.backprop == "by_hand":
        return "the by-hand network trains through its own written-out backward"
    if len(set(cfg.hidden)) > 1:
        return "hidden layers of different widths"
    if "," in cfg.activation:
        return "an activation per layer"
    if cfg.residual:
        return "residual connections"
    return None


def stack_key(cfg: RunConfig, mixed: bool = False) -> tuple:
    """Cells with equal keys share one stack (they may differ in activation, depth and init). ``mixed``:
    they may differ in width (narrower cells padded with units that stay silent; not under LayerNorm,
    which averages over all units) and in optimizer settings too (:class:`core.engine.optimizers.LaneRules`)."""
    width = cfg.hidden[0] if cfg.hidden else 0
    norm = cfg.norm if width else "none"
    if mixed:  # a network without hidden layers reads its logits from x: it cannot share a stack with others
        return (width if norm == "layernorm" or not width else None, norm, cfg.loss, cfg.l1, cfg.l2)
    return (width, norm, cfg.loss, cfg.l1, cfg.l2) + tuple(getattr(cfg, f) for f in OPTIMIZER_FIELDS)


def optimizer_key(cfg: RunConfig) -> tuple:
    return tuple(getattr(cfg, f) for f in OPTIMIZER_FIELDS)


# --- activations: the kernels autograd would call, writing into a given slice -------------------
Kernel = Callable[..., torch.Tensor]


def _activation_kernels(name: str) -> tuple[Kernel, Kernel]:
    """(forward(z, out), backward(grad, z, y, out)) with the settings of core.engine.models' module."""
    module = make_activation(name)
    if name == "sigmoid":
        return (lambda z, out: torch.sigmoid(z, out=out),
                lambda g, z, y, out: aten.sigmoid_backward.grad_input(g, y, grad_input=out))
    if name == "tanh":
        return (lambda z, out: torch.tanh(z, out=out),
                lambda g, z, y, out: aten.tanh_backward.grad_input(g, y, grad_input=out))
    if name == "relu":  # ATen's relu is clamp_min(z, 0)
        return (lambda z, out: torch.clamp_min(z, 0, out=out),
                lambda g, z, y, out: aten.threshold_backward.grad_input(g, y, 0, grad_input=out))
    if name == "leaky_relu":
        slope = module.negative_slope
        return (lambda z, out: aten.leaky_relu.out(z, slope, out=out),
                lambda g, z, y, out: aten.leaky_relu_backward.grad_input(g, z, slope, False, grad_input=out))
    if name == "elu":
        alpha = module.alpha
        return (lambda z, out: aten.elu.out(z, alpha, 1, 1, out=out),
                lambda g, z, y, out: aten.elu_backward.grad_input(g, alpha, 1, 1, False, z, grad_input=out))
    if name == "gelu":
        approx = module.approximate
        return (lambda z, out: aten.gelu.out(z, approximate=approx, out=out),
                lambda g, z, y, out: aten.gelu_backward.grad_input(g, z, approximate=approx, grad_input=out))
    if name == "linear":
        return lambda z, out: out.copy_(z), lambda g, z, y, out: out.copy_(g)
    raise ValueError(f"unknown activation {name!r}")


_KERNELS = {name: _activation_kernels(name) for name in ACTIVATIONS}
MAX_INFERENCE_WORKSPACES = 8  # evaluation batch sizes a stack keeps tensors for (full batches and each split's remainder)


class _Workspace:
    """The hidden tensors [n, W, B] of a stack for one batch size, with the slice of every
    activation group's cells that are still active at each layer made once. A training step
    writes its forward here and reads it back in its backward, so the hot path allocates
    (almost) nothing and never re-slices. Rows of cells past their depth stay exactly zero."""

    def __init__(self, stack: "_Stack", batch: int, device: torch.device, keep: bool = True):
        """``keep``: every layer has its own tensors (for a backward or a probe); otherwise two
        alternate (an inference pass; stale rows of finished cells only meet their zero weights)."""
        shape, D = (stack.n, stack.W, batch), stack.D

        def tensors(count: int) -> list[torch.Tensor]:
            made = [torch.zeros(shape, device=device) for _ in range(count if keep else min(count, 2))]
            return [made[j % len(made)] for j in range(count)]

        self.shape, self.device, self.stack = shape, device, stack
        self.z = tensors(D)  # pre-activation (before the norm)
        self.a = self.z if stack.norm == "none" else tensors(D)
        self.y = tensors(D)  # post-activation
        # per layer: (forward kernel, input slice, output slice) of each group with active cells
        self.forward_calls = [[(kernels[0], self.a[j][s:e], self.y[j][s:e])
                               for kernels, (s, e) in zip(stack.kernels[j], stack.active[j])] for j in range(D)]
        self.final = self.y[-1] if stack.uniform else torch.zeros(shape, device=device)
        self.z0_flat = self.z[0].view(stack.n * stack.W, batch)
        self.y_t = [t.transpose(1, 2) for t in self.y]
        self.final_t = self.final.transpose(1, 2)
        self._grads: tuple | None = None
        self.step = 0  # which forward the tensors hold

    def grads(self) -> tuple:
        """(dL/dh per layer, dL/da per layer, dL/dfinal, and per layer the (backward kernel, dL/dh,
        a, y, dL/da) slices of each group with active cells), made on first use."""
        if self._grads is None:
            stack, D = self.stack, len(self.z)
            gh = [torch.zeros(self.shape, device=self.device) for _ in self.z]
            ga = [torch.zeros(self.shape, device=self.device) for _ in self.z]
            calls = [[(kernels[1], gh[j][s:e], self.a[j][s:e], self.y[j][s:e], ga[j][s:e])
                      for kernels, (s, e) in zip(stack.kernels[j], stack.active[j])] for j in range(D)]
            self._grads = (gh, ga, torch.zeros(self.shape, device=self.device), calls)
        return self._grads


class _Stack:
    """The cells of one stack, their stacked parameters, and the hand-written forward/backward."""

    def __init__(self, cfgs: list[RunConfig], input_shape: tuple[int, ...], n_classes: int, device: torch.device,
                 source: tuple["_Stack", list[int]] | None = None):
        """``source``: (a stack, the cells of it to keep): the new stack continues those cells (their current
        weights, BatchNorm statistics and starting weights), cut to the width and depth they still need."""
        self.cfg = cfgs[0]  # norm, loss and penalties are shared (see stack_key)
        self.cfgs, self.input_shape = cfgs, input_shape
        self.n = n = len(cfgs)
        self.depths = [c.depth for c in cfgs]
        self.widths = [c.hidden[0] if c.hidden else 0 for c in cfgs]
        self.D = D = max(self.depths)
        self.W = W = max(self.widths)
        self.K = n_classes
        self.IN = IN = math.prod(input_shape)
        self.norm = self.cfg.norm if D else "none"
        self.training = True

        self.origin: list[tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]] = []  # see kept()
        if source is None:
            w, b, gamma, beta, running, wo, bo = self._build(cfgs)
        else:
            w, b, gamma, beta, running, wo, bo = self._cut_from(*source)

        def param(t: torch.Tensor) -> nn.Parameter:
            return nn.Parameter(t.to(device))

        self.w, self.b = [param(t) for t in w], [param(t) for t in b]
        self.wo, self.bo = param(wo), param(bo)
        if self.norm != "none":
            self.gamma, self.beta = [param(t) for t in gamma], [param(t) for t in beta]
        else:
            self.gamma, self.beta = [], []
        self.running = [(m.flatten().to(device), v.flatten().to(device)) for m, v in running] \
            if self.norm == "batchnorm" else []  # (flatten copies a cut, non-contiguous view)
        self.params = [*self.w, *self.b, *self.gamma, *self.beta, self.wo, self.bo]
        # views used every step, made once (the optimizer updates the parameters in place)
        self.b_col = [t.unsqueeze(2) for t in self.b]  # [n, W, 1]
        self.w_t = [t.transpose(1, 2) for t in self.w]  # [n, in, W]
        self.w0_flat = self.w[0].view(n * W, IN).detach() if D else None
        self.b0_col = self.b[0].view(n * W, 1).detach() if D else None
        self.wo_t, self.bo_row = self.wo.transpose(1, 2), self.bo.unsqueeze(1)
        self.weights = [*self.w, self.wo]  # the weight matrices, layer by layer (what the stats describe)
        if source is None:
            self.initial = [t.detach().clone() for t in self.weights]
            self.previous = [t.clone() for t in self.initial]
        else:
            old, keep = source
            cuts = self._weight_cuts(keep, old.device)
            self.initial = [cut(t) for cut, t in zip(cuts, [*old.initial[:D], old.initial[-1]])]
            self.previous = [cut(t) for cut, t in zip(cuts, [*old.previous[:D], old.previous[-1]])]
            olds = [*old.w[:D], *old.b[:D], *old.gamma[:D], *old.beta[:D], old.wo, old.bo]
            self.origin = list(zip(olds, self._param_cuts(keep, old.device)))

        # activation groups: cells arrive sorted by activation, so each group is a slice
        self.groups: list[tuple[int, int, str]] = []
        for c, cfg in enumerate(cfgs):
            if self.groups and self.groups[-1][2] == cfg.activation:
                self.groups[-1] = (self.groups[-1][0], c + 1, cfg.activation)
            else:
                self.groups.append((c, c + 1, cfg.activation))
        if len({g[2] for g in self.groups}) != len(self.groups):
            raise ValueError("cells of a stack must be sorted by activation")
        # cells arrive deepest first within a group: at layer j a group's active cells are a prefix
        if any(self.depths[c] < self.depths[c + 1] for s, e, _ in self.groups for c in range(s, e - 1)):
            raise ValueError("cells of an activation group must come deepest first")
        self.active = [[(s, s + sum(1 for c in range(s, e) if self.depths[c] > j)) for s, e, _ in self.groups]
                       for j in range(D)]
        self.kernels = [[_KERNELS[name] for (_, _, name), (s, e) in zip(self.groups, self.active[j]) if e > s]
                        for j in range(D)]
        self.active = [[(s, e) for s, e in layer if e > s] for layer in self.active]
        self.device = device
        self.workspaces: dict[int, _Workspace] = {}  # by training batch size (the last batch may be smaller)
        self.inference_workspaces: dict[int, _Workspace] = {}  # by evaluation batch size (at log points)
        # Narrower cells: their padded units have zero weights in, and outputs forced to zero (sigmoid(0) is
        # not 0), so those units add nothing to any sum forward, get exactly zero gradient in and out, and
        # never move (weight decay and every rule leave a zero with zero gradient at zero).
        self.same_width = len(set(self.widths)) == 1
        self.unit_mask = None if self.same_width else \
            (torch.arange(W).view(1, W) < torch.tensor(self.widths).view(n, 1)).to(device, torch.float32).view(n, W, 1)
        # cells shallower than D read their logits from their own last layer
        self.uniform = len(set(self.depths)) == 1
        self.ends_here: dict[int, torch.Tensor] = {}  # mixed depths: per hidden layer where cells end, which ones
        if not self.uniform:
            depth = torch.tensor(self.depths, device=device)
            self.ends_here = {j: (depth == j + 1).view(n, 1, 1) for j in set(d - 1 for d in self.depths)}

    def _build(self, cfgs: list[RunConfig]) -> tuple:
        """The stacked tensors of fresh cells, each built by build_model with its own seeded generator."""
        n, W, D, K, IN, input_shape, n_classes = self.n, self.W, self.D, self.K, self.IN, self.input_shape, self.K
        models = [build_model(c, input_shape, n_classes, torch.Generator().manual_seed(c.seed)) for c in cfgs]
        w = [torch.zeros(n, W, IN if j == 0 else W) for j in range(D)]
        b = [torch.zeros(n, W) for _ in range(D)]
        gamma = [torch.ones(n, W) for _ in range(D)]
        beta = [torch.zeros(n, W) for _ in range(D)]
        running = [(torch.zeros(n, W), torch.ones(n, W)) for _ in range(D)]
        wo, bo = torch.zeros(n, K, W if D else IN), torch.zeros(n, K)
        self.bn_momentum, self.norm_eps = 0.1, 1e-5
        self.described = []
        with torch.no_grad():
            for c, (cfg, model) in enumerate(zip(cfgs, models)):
                layers = weight_layers(model)
                self.described.append((count_parameters(cfg, input_shape, n_classes), [name for name, _ in layers],
                                       [list(m.weight.shape) for _, m in layers]))
                # a narrower cell fills the top-left corner; its padded units keep zero weights in and out
                for j, (_, layer) in enumerate(layers[:-1]):
                    out, fan_in = layer.weight.shape
                    w[j][c, :out, :fan_in], b[j][c, :out] = layer.weight, layer.bias
                wo[c, :, :layers[-1][1].weight.shape[1]], bo[c] = layers[-1][1].weight, layers[-1][1].bias
                norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.LayerNorm))]
                for j, m in enumerate(norms):
                    units = m.weight.shape[0]
                    gamma[j][c, :units], beta[j][c, :units] = m.weight, m.bias
                    self.norm_eps = m.eps
                    if isinstance(m, nn.BatchNorm1d):
                        running[j][0][c, :units], running[j][1][c, :units] = m.running_mean, m.running_var
                        self.bn_momentum = m.momentum

        return w, b, gamma, beta, running, wo, bo

    def _weight_cuts(self, keep: list[int], device: torch.device) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """Per weight matrix of this stack, what cuts it out of the same layer of a stack with more cells."""
        index = torch.tensor(keep, device=device)
        shapes = [(self.W, self.IN if j == 0 else self.W) for j in range(self.D)] + \
                 [(self.K, self.W if self.D else self.IN)]
        return [lambda t, o=o, i=i: t.detach()[index][:, :o, :i].contiguous() for o, i in shapes]

    def _param_cuts(self, keep: list[int], device: torch.device) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """Per entry of ``params``, what cuts it (or a tensor shaped like it) out of a stack with more cells."""
        index = torch.tensor(keep, device=device)
        weights = self._weight_cuts(keep, device)
        units = [lambda t: t.detach()[index][:, :self.W].contiguous()] * self.D
        norms = units * 2 if self.norm != "none" else []
        return [*weights[:-1], *units, *norms, weights[-1], lambda t: t.detach()[index].contiguous()]

    def _cut_from(self, old: "_Stack", keep: list[int]) -> tuple:
        """The stacked tensors of cells ``keep`` of ``old``, as they are now."""
        D = self.D
        cuts = self._param_cuts(keep, old.device)
        olds = [*old.w[:D], *old.b[:D], *old.gamma[:D], *old.beta[:D], old.wo, old.bo]
        made = [cut(t) for cut, t in zip(cuts, olds)]
        w, b = made[:D], made[D:2 * D]
        gamma, beta = (made[2 * D:3 * D], made[3 * D:4 * D]) if self.norm != "none" else ([], [])
        index = torch.tensor(keep, device=old.device)
        running = [(m.view(old.n, old.W)[index][:, :self.W], v.view(old.n, old.W)[index][:, :self.W])
                   for m, v in old.running[:D]]
        self.described = [old.described[k] for k in keep]
        self.bn_momentum, self.norm_eps = old.bn_momentum, old.norm_eps
        return w, b, gamma, beta, running, made[-2], made[-1]

    def kept(self, keep: list[int]) -> "_Stack":
        """A stack of cells ``keep`` of this one (a lane that left stops costing anything); ``origin`` pairs each
        of its parameters with the one it was cut from and the cut (for the optimizer's buffers)."""
        return _Stack([self.cfgs[k] for k in keep], self.input_shape, self.K, self.device, source=(self, keep))

    @torch.no_grad()
    def cell_state(self, c: int) -> dict[str, torch.Tensor]:
        """Cell c's weights as the state_dict of the nn.Module :func:`build_model` makes for its config
        (the copy-in of ``__init__`` read backwards)."""
        model = build_model(self.cfgs[c], self.input_shape, self.K)
        layers = weight_layers(model)
        for j, (_, layer) in enumerate(layers[:-1]):
            out, fan_in = layer.weight.shape
            layer.weight.copy_(self.w[j][c, :out, :fan_in])
            layer.bias.copy_(self.b[j][c, :out])
        layers[-1][1].weight.copy_(self.wo[c, :, :layers[-1][1].weight.shape[1]])
        layers[-1][1].bias.copy_(self.bo[c])
        norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.LayerNorm))]
        for j, m in enumerate(norms):
            units = m.weight.shape[0]
            m.weight.copy_(self.gamma[j][c, :units])
            m.bias.copy_(self.beta[j][c, :units])
            if isinstance(m, nn.BatchNorm1d):
                mean, var = self.running[j]
                m.running_mean.copy_(mean.view(self.n, self.W)[c, :units])
                m.running_var.copy_(var.view(self.n, self.W)[c, :units])
        return model.state_dict()

    # --- normalization ------------------------------------------------------------------------
    def _norm(self, j: int, z: torch.Tensor, out: torch.Tensor) -> tuple:
        """Normalize z into ``out``; returns what the backward needs."""
        n, W, B = z.shape
        if self.norm == "batchnorm":  # [1, n*W, B]: statistics per feature over the batch, as BatchNorm1d
            flat = z.view(1, n * W, B)
            mean, var = self.running[j]
            normed, save_mean, save_invstd = torch.native_batch_norm(
                flat, self.gamma[j].view(-1), self.beta[j].view(-1), mean, var, self.training,
                self.bn_momentum, self.norm_eps)
            out.copy_(normed.view(n, W, B))
            return flat, save_mean, save_invstd
        # layernorm: each cell's W units of each example
        centered = z - z.mean(dim=1, keepdim=True)
        rstd = torch.rsqrt(centered.square().mean(dim=1, keepdim=True) + self.norm_eps)
        xhat = centered * rstd
        torch.addcmul(self.beta[j].unsqueeze(2), xhat, self.gamma[j].unsqueeze(2), out=out)
        return xhat, rstd

    def _norm_backward(self, j: int, g: torch.Tensor, saved: tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, W, B = g.shape
        if self.norm == "batchnorm":
            flat, save_mean, save_invstd = saved
            mean, var = self.running[j]
            gz, ggamma, gbeta = aten.native_batch_norm_backward(
                g.reshape(1, n * W, B), flat, self.gamma[j].view(-1), mean, var, save_mean, save_invstd,
                True, self.norm_eps, [True, True, True])
            return gz.view(n, W, B), ggamma.view(n, W), gbeta.view(n, W)
        xhat, rstd = saved
        gx = g * self.gamma[j].unsqueeze(2)
        gz = rstd * (gx - gx.mean(dim=1, keepdim=True) - xhat * (gx * xhat).mean(dim=1, keepdim=True))
        return gz, (g * xhat).sum(dim=2), g.sum(dim=2)

    # --- forward / backward ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor, cache: dict | None = None, step: bool = False) -> torch.Tensor:
        """Logits [n, B, K] for a batch x (flattened to [B, IN]).

        ``cache`` receives the hidden tensors; ``step`` (a training step, followed by its backward)
        keeps them in the persistent workspace of this batch size instead of fresh tensors."""
        x = x.flatten(1)
        n, D, K, B = self.n, self.D, self.K, x.shape[0]
        if D == 0:
            logits = torch.addmm(self.bo.view(1, n * K), x, self.wo.view(n * K, self.IN).t())
            if cache is not None:
                cache.update(x=x)
            return logits.view(B, n, K).transpose(0, 1).contiguous()
        if step:
            ws = self.workspaces.get(B) or self.workspaces.setdefault(B, _Workspace(self, B, self.device))
            ws.step += 1
        elif cache is None:  # inference: nothing outlives the call, so the next one of this batch size reuses them
            ws = self.inference_workspaces.get(B)
            if ws is None:
                if len(self.inference_workspaces) >= MAX_INFERENCE_WORKSPACES:
                    self.inference_workspaces.clear()
                ws = self.inference_workspaces[B] = _Workspace(self, B, self.device, keep=False)
        else:
            ws = _Workspace(self, B, self.device)
        saved = [None] * D
        for j in range(D):
            if j == 0:  # all cells see the same x: one wide matmul
                torch.addmm(self.b0_col, self.w0_flat, x.t(), out=ws.z0_flat)
            else:
                torch.baddbmm(self.b_col[j], self.w[j], ws.y[j - 1], out=ws.z[j])
            if self.norm != "none":
                saved[j] = self._norm(j, ws.z[j], ws.a[j])
            for kernel, a, y in ws.forward_calls[j]:
                kernel(a, y)
            if self.unit_mask is not None:
                ws.y[j].mul_(self.unit_mask)
            if not self.uniform and j in self.ends_here:  # cells whose last hidden layer this is read out here
                torch.where(self.ends_here[j], ws.y[j], ws.final, out=ws.final)
        logits = torch.baddbmm(self.bo_row, ws.final_t, self.wo_t)
        if cache is not None:
            cache.update(x=x, ws=ws, saved=saved, step=ws.step)
        return logits

    def backward(self, g: torch.Tensor, cache: dict) -> list[torch.Tensor]:
        """Gradients of all ``params`` given dLoss/dlogits [n, B, K] of the latest training forward."""
        n, W, D, K = self.n, self.W, self.D, self.K
        x = cache["x"]
        B = x.shape[0]
        if D == 0:
            gwo = g.transpose(0, 1).reshape(B, n * K).t().mm(x).view(n, K, self.IN)
            return [gwo, g.sum(dim=1)]
        ws: _Workspace = cache["ws"]
        if ws.step != cache["step"]:
            raise RuntimeError("a stack's backward must follow its own training forward")
        gh, ga, g_final, backward_calls = ws.grads()
        gt = g.transpose(1, 2)  # [n, K, B]
        gwo = torch.bmm(gt, ws.final_t)
        gbo = g.sum(dim=1)
        gw, gb = [None] * D, [None] * D
        ggamma, gbeta = [None] * D, [None] * D
        for j in reversed(range(D)):
            if j == D - 1 and self.uniform:
                torch.bmm(self.wo_t, gt, out=gh[j])  # [n, W, B]
            elif j == D - 1:  # the top layer is read out by the deepest cells only
                torch.bmm(self.wo_t, gt, out=g_final)
                torch.mul(g_final, self.ends_here[j], out=gh[j])
            elif j in self.ends_here:  # cells whose last hidden layer this is get the output's gradient
                torch.where(self.ends_here[j], g_final, gh[j], out=gh[j])
            for kernel, gp, ap, yp, out in backward_calls[j]:
                kernel(gp, ap, yp, out)
            if self.norm != "none":
                gz, ggamma[j], gbeta[j] = self._norm_backward(j, ga[j], cache["saved"][j])
            else:
                gz = ga[j]
            gb[j] = gz.sum(dim=2)
            if j == 0:
                gw[0] = gz.view(n * W, B).mm(x).view(n, W, self.IN)
            else:
                gw[j] = torch.bmm(gz, ws.y_t[j - 1])
                torch.bmm(self.w_t[j], gz, out=gh[j - 1])
        if self.norm == "none":
            return [*gw, *gb, gwo, gbo]
        return [*gw, *gb, *ggamma, *gbeta, gwo, gbo]

    @torch.no_grad()
    def hidden_states(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Post-activation outputs [n, W, B] of every hidden layer (in the current mode)."""
        cache: dict = {}
        self.forward(x, cache)
        return list(cache["ws"].y) if self.D else []

    def cell_weights(self, c: int, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Cell c's slice ``[1, out, in]`` of each of its layers' stacked weight tensors (layers it has, and
        the output layer), without the padding of a narrower cell."""
        d, width = self.depths[c], self.widths[c]
        shapes = [(width, self.IN if j == 0 else width) for j in range(d)] + [(self.K, width if d else self.IN)]
        layers = list(range(d)) + [len(tensors) - 1]
        return [tensors[j][c:c + 1, :out, :fan_in] for j, (out, fan_in) in zip(layers, shapes)]

    def penalty(self) -> torch.Tensor | None:
        """Per cell lambda1 * sum|w| + lambda2 * sum w^2 over its weight matrices (zeros add nothing)."""
        return weight_penalty(self.weights, self.cfg.l1, self.cfg.l2)


class _StackFunction(torch.autograd.Function):
    """One autograd node for a whole stack: forward and backward by hand (see the module docstring)."""

    @staticmethod
    def forward(ctx, stack: _Stack, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        cache: dict = {}
        logits = stack.forward(x, cache, step=True)
        ctx.stack, ctx.cache = stack, cache
        return logits

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        grads = ctx.stack.backward(g.contiguous(), ctx.cache)
        ctx.cache = None
        return (None, None, *grads)


class StackedLanes:
    """The lanes of one lockstep group of batchable configs (see :func:`core.engine.train.train_lanes`)."""

    mixed = False  # stacks by stack_key(cfg, mixed): see MixedStackedLanes

    @classmethod
    def stack_groups(cls, configs: list[RunConfig]) -> list[list[int]]:
        """Indices of ``configs`` per stack, in the stack's order: activation groups, deepest cells first."""
        by_key: dict[tuple, list[int]] = {}
        for i, cfg in enumerate(configs):
            by_key.setdefault(stack_key(cfg, cls.mixed), []).append(i)
        for lanes in by_key.values():  # activation groups become slices, deepest cells first within a group
            lanes.sort(key=lambda i: (ACTIVATIONS.index(configs[i].activation), -configs[i].depth))
        return list(by_key.values())

    @classmethod
    def stacked_order(cls, configs: list[RunConfig]) -> list[int]:
        """Indices of ``configs`` as the stacks lay them out end to end: lanes handed over in this order
        need no per-step reordering."""
        return [i for lanes in cls.stack_groups(configs) for i in lanes]

    def __init__(self, configs: list[RunConfig], input_shape: tuple[int, ...], n_classes: int, device: torch.device):
        for cfg in configs:
            reason = why_not_batched(cfg)
            if reason:
                raise ValueError(f"{cfg.key()} cannot be batched: {reason}")
        self.configs = list(configs)
        self.n = len(configs)
        self.n_classes = n_classes
        self.device = device
        self.lanes_of = self.stack_groups(self.configs)  # per stack, the lane of each of its cells
        self.stacks = [_Stack([configs[i] for i in lanes], input_shape, n_classes, device) for lanes in self.lanes_of]
        self.described = {lane: stack.described[p] for stack, lanes in zip(self.stacks, self.lanes_of)
                          for p, lane in enumerate(lanes)}
        self.retired: set[int] = set()  # lanes that left (see retire)
        self._arrange()
        # one optimizer per distinct optimizer setting, over the stacked tensors; a stack whose cells differ
        # in optimizer settings gets one per-lane update (LaneRules)
        by_opt: dict[tuple, list[_Stack]] = {}
        self.optimizers: list[torch.optim.Optimizer] = []
        for stack in self.stacks:
            settings = {optimizer_key(c) for c in stack.cfgs}
            if len(settings) == 1:
                by_opt.setdefault(settings.pop(), []).append(stack)
            else:
                self.optimizers.append(LaneRules(stack.params, stack.cfgs))
        self.optimizers += [make_optimizer(group[0].cfg, [p for s in group for p in s.params])
                            for group in by_opt.values()]

    def _arrange(self) -> None:
        """Where each lane's values sit in the stacks' outputs laid end to end (a lane that left reads a
        filler row appended after them), and each lane's layers in the [layers, cells] gradient-norm tables."""
        order = [lane for lanes in self.lanes_of for lane in lanes]
        position = {lane: p for p, lane in enumerate(order)}
        self.gather = None if order == list(range(self.n)) else \
            torch.tensor([position.get(i, len(order)) for i in range(self.n)], device=self.device)
        self.cell: dict[int, tuple[_Stack, int]] = {}
        index_of: dict[int, list[int]] = {}
        offset = 0
        for stack, lanes in zip(self.stacks, self.lanes_of):
            for p, lane in enumerate(lanes):
                self.cell[lane] = (stack, p)
                index_of[lane] = [offset + j * stack.n + p for j in range(stack.depths[p])] + \
                                 [offset + stack.D * stack.n + p]
            offset += (stack.D + 1) * stack.n
        self.grad_index = torch.tensor([i for lane in range(self.n)
                                        for i in index_of.get(lane, [offset] * len(self.described[lane][1]))],
                                       device=self.device)
        widest = max(max(s.W, s.K) * s.n for s in self.stacks)
        self.eval_chunk = max(256, min(EVAL_CHUNK, EVAL_FLOATS // widest))

    def retire(self, lane: int) -> None:
        """Lane ``lane`` has ended (pruned, diverged, cancelled): its cell leaves its stack, which goes on
        cut to the cells left (their weights and optimizer buffers as they are), so it costs nothing more.
        Its values read as NaN (counts 0) from now on. The last live lane stays (the run ends with it)."""
        if lane not in self.cell or len(self.cell) == 1:
            return
        stack, p = self.cell[lane]
        k = self.stacks.index(stack)
        keep = [q for q in range(stack.n) if q != p]
        self.retired.add(lane)
        moved: dict[int, tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]] = {}
        if keep:
            self.stacks[k] = smaller = stack.kept(keep)
            self.lanes_of[k] = [other for other in self.lanes_of[k] if other != lane]
            moved = {id(old): (new, cut) for new, (old, cut) in zip(smaller.params, smaller.origin)}
        else:
            del self.stacks[k], self.lanes_of[k]
        self._arrange()
        self.optimizers = [opt for opt in (_moved_optimizer(opt, moved, stack, keep) for opt in self.optimizers)
                           if opt is not None]

    # --- what the loop calls ---------------------------------------------------------------------
    def describe(self, lane: int) -> tuple[int, list[str], list[list[int]]]:
        """(number of parameters, layer names, weight shapes) of a lane, as its nn.Module has them."""
        return self.described[lane]

    def train(self, mode: bool = True) -> None:
        for stack in self.stacks:
            stack.training = mode

    @contextmanager
    def _eval_mode(self):
        was = [s.training for s in self.stacks]
        self.train(False)
        try:
            yield
        finally:
            for stack, mode in zip(self.stacks, was):
                stack.training = mode

    def _cat(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """Per-stack tensors (cells first) -> one tensor in lane order."""
        if self.retired:
            filler = parts[0][:1].detach()
            parts = [*parts, torch.full_like(filler, math.nan) if filler.is_floating_point() else torch.zeros_like(filler)]
        t = parts[0] if len(parts) == 1 else torch.cat(parts)
        return t if self.gather is None else t[self.gather]

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per lane: total loss (with the graph), data loss, correct count."""
        totals, datas, corrects = [], [], []
        B = x.shape[0]
        for stack in self.stacks:
            logits = _StackFunction.apply(stack, x, *stack.params)
            # classes as dim 1 of [n, K, B]: far faster on the CPU than [n * B, K] with its short last dim
            data = data_loss(stack.cfg, logits.transpose(1, 2), y.expand(stack.n, B), reduction="none").mean(dim=1)
            pen = stack.penalty()
            totals.append(data + pen if pen is not None else data)
            datas.append(data)
            with torch.no_grad():
                corrects.append((logits.argmax(dim=2) == y).sum(dim=1))
        return self._cat(totals), self._cat(datas), self._cat(corrects)

    @torch.no_grad()
    def grad_norms(self) -> torch.Tensor:
        """This step's gradient norm of every lane's weight matrices, lane after lane (before the update)."""
        tables = [grad_norms([w.grad for w in s.weights]).flatten() for s in self.stacks]
        if self.retired:
            tables.append(torch.full((1,), math.nan, device=self.device))
        return (tables[0] if len(tables) == 1 else torch.cat(tables))[self.grad_index]

    @torch.no_grad()
    def penalties(self) -> list[float]:
        pens = []
        for stack in self.stacks:
            pen = stack.penalty()
            pens.append(pen if pen is not None else torch.zeros(stack.n, device=self.device))
        return self._cat(pens).tolist()

    @torch.no_grad()
    def layer_stats(self, probe_x: torch.Tensor, lanes: Sequence[int], heatmaps: bool = True) -> list[dict | None]:
        """For the given lanes (others None) the LayerStats fields besides step/epoch/layers/grad_norm,
        as a single run has them. Lanes not asked for (e.g. diverged ones) are skipped."""
        out: list[dict | None] = [None] * self.n
        wanted = set(lanes)
        with self._eval_mode():
            for stack, stack_lanes in zip(self.stacks, self.lanes_of):
                self._stack_stats(stack, stack_lanes, wanted, probe_x, heatmaps, out)
        return out

    def _stack_stats(self, stack: _Stack, lanes: list[int], wanted: set[int], probe_x: torch.Tensor, heatmaps: bool,
                     out: list[dict | None]) -> None:
        if not stack.same_width:
            self._padded_stack_stats(stack, lanes, wanted, probe_x, heatmaps, out)
            return
        change, delta, maps = weight_changes(stack.weights, stack.initial, stack.previous, heatmaps)
        # saturated (sigmoid, tanh) or dead (ReLU) share of each hidden layer's units; None for other activations
        sat = torch.full((max(stack.D, 1), stack.n), float("nan"), device=self.device)
        measured = [False] * stack.n
        for j, h in enumerate(stack.hidden_states(probe_x)):
            for s, e, name in stack.groups:
                share = unit_saturation(name, h[s:e].transpose(1, 2))  # [cells, batch, units]
                if share is not None:
                    sat[j, s:e] = share
                    measured[s:e] = [True] * (e - s)
        change_t, delta_t, sat_t = change.tolist(), delta.tolist(), sat.tolist()
        last = len(stack.weights) - 1
        for p, lane in enumerate(lanes):
            if lane not in wanted:
                continue
            d = stack.depths[p]
            layers = list(range(d)) + [last]
            near_zero, absmax, bounds, hists = weight_distribution([stack.weights[j][p] for j in layers])
            out[lane] = dict(
                weight_change=[change_t[j][p] for j in layers], weight_delta=[delta_t[j][p] for j in layers],
                saturation=[sat_t[j][p] if measured[p] else None for j in range(d)] + [None],
                heatmaps=[maps[j][p] for j in layers] if heatmaps else [], near_zero=near_zero,
                weight_absmax=absmax, weight_hist=hists, hist_bound=bounds)

    def _padded_stack_stats(self, stack: _Stack, lanes: list[int], wanted: set[int], probe_x: torch.Tensor,
                            heatmaps: bool, out: list[dict | None]) -> None:
        """:meth:`_stack_stats` for a stack of mixed widths: each cell measured on its own slices (means,
        shares and pooled maps over its own units, not the padding)."""
        hidden = stack.hidden_states(probe_x)
        for p, lane in enumerate(lanes):
            weights = stack.cell_weights(p, stack.weights)
            change, delta, maps = weight_changes(weights, stack.cell_weights(p, stack.initial),
                                                 stack.cell_weights(p, stack.previous), heatmaps)
            if lane not in wanted:
                continue
            activation, d, width = stack.cfgs[p].activation, stack.depths[p], stack.widths[p]
            shares = [unit_saturation(activation, h[p:p + 1, :width].transpose(1, 2)) for h in hidden[:d]]
            near_zero, absmax, bounds, hists = weight_distribution([w[0] for w in weights])
            out[lane] = dict(
                weight_change=change[:, 0].tolist(), weight_delta=delta[:, 0].tolist(),
                saturation=[float(s[0]) if s is not None else None for s in shares] + [None],
                heatmaps=[m[0] for m in maps] if heatmaps else [], near_zero=near_zero,
                weight_absmax=absmax, weight_hist=hists, hist_bound=bounds)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, keep_predictions: bool = False) -> Scores:
        """Per lane scores over a whole split, in eval mode."""
        N = len(y)
        if N == 0:
            return Scores([float("nan")] * self.n, [float("nan")] * self.n, [float("nan")] * self.n, None)
        loss_sum = [torch.zeros(s.n, device=self.device) for s in self.stacks]
        ce_sum = [torch.zeros(s.n, device=self.device) for s in self.stacks]
        correct = [torch.zeros(s.n, device=self.device, dtype=torch.long) for s in self.stacks]
        preds: list[list[torch.Tensor]] = [[] for _ in self.stacks]
        with self._eval_mode():
            for start in range(0, N, self.eval_chunk):
                xb, yb = x[start:start + self.eval_chunk], y[start:start + self.eval_chunk]
                for k, stack in enumerate(self.stacks):
                    logits, targets = stack.forward(xb).transpose(1, 2), yb.expand(stack.n, len(yb))
                    loss = data_loss(stack.cfg, logits, targets, reduction="none").sum(dim=1)
                    loss_sum[k] += loss
                    ce_sum[k] += loss if stack.cfg.loss == "cross_entropy" else \
                        F.cross_entropy(logits, targets, reduction="none").sum(dim=1)
                    pred = logits.argmax(dim=1)
                    correct[k] += (pred == yb).sum(dim=1)
                    if keep_predictions:
                        preds[k].append(pred)
        losses = [v / N for v in self._cat(loss_sum).tolist()]
        accs = [v / N for v in self._cat(correct).tolist()]
        ces = [v / N for v in self._cat(ce_sum).tolist()]
        kept = list(self._cat([torch.cat(p, dim=1) for p in preds])) if keep_predictions else None
        return Scores(losses, accs, ces, kept)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """[n, N, K] logits of every lane in eval mode."""
        with self._eval_mode():
            return self._cat([s.forward(x) for s in self.stacks])

    def state_dict(self, lane: int) -> dict[str, torch.Tensor]:
        """Lane's weights as the state_dict its config's nn.Module would have."""
        stack, p = self.cell[lane]
        return stack.cell_state(p)


def _moved_optimizer(optimizer: torch.optim.Optimizer, moved: dict, old: _Stack,
                     keep: list[int]) -> torch.optim.Optimizer | None:
    """``optimizer`` itself when none of its parameters moved; else the same optimizer over the parameters
    that replace them (``moved``: id of an old parameter -> (its cut-down successor, the cut)), carrying
    every buffer cut the same way; None when nothing is left to update (a stack that emptied)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    old_ids = {id(p) for p in old.params}
    if not any(id(p) in old_ids for p in params):
        return optimizer
    kept = [moved[id(p)][0] if id(p) in moved else p for p in params if id(p) in moved or id(p) not in old_ids]
    if not kept:
        return None
    if isinstance(optimizer, LaneRules):
        successor = LaneRules(kept, [optimizer.configs[q] for q in keep])
        successor.t, successor.mu_prod = optimizer.t, [optimizer.mu_prod[q] for q in keep]
        successor.lrs = [optimizer.lrs[q] for q in keep]
    else:
        successor = make_optimizer(optimizer.param_groups[0]["schedule_config"], kept)
        successor.param_groups[0]["lr"] = optimizer.param_groups[0]["lr"]
    for p in params:
        state = optimizer.state.get(p)
        if not state or (id(p) in old_ids and id(p) not in moved):
            continue
        new, cut = moved.get(id(p), (p, None))
        successor.state[new] = {name: cut(v) if cut is not None and isinstance(v, torch.Tensor) and v.shape == p.shape
                                else v for name, v in state.items()}
    return successor


class MixedStackedLanes(StackedLanes):
    """Stacks that also mix widths and optimizer settings (``stack_key(cfg, mixed=True)``): a sweep's trials,
    which differ in everything Optuna picks, train as one stack per data stream."""

    mixed = True
