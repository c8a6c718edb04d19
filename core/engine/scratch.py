"""An MLP written out by hand: every layer's forward with its backward beside it, no autograd.

The network is the engine's plain MLP (``arch="mlp"``, no norm, no dropout) with sigmoid, tanh
or ReLU, a softmax cross-entropy or MSE (softmax vs one-hot) output, and L1/L2 penalties on
the weight matrices (not the biases), exactly as ``core.engine.lanes.data_loss`` and ``penalty``
define them. Gradients are the chain rule applied layer by layer from the output down.

For the gradient-check lesson a layer can carry a planted bug in its backward (:data:`BUGS`).
:class:`ScratchLanes` lets the engine's one training loop train this network
(``RunConfig.backprop="by_hand"``) with the update rules written out in :mod:`core.engine.optimizers`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from core.engine import optimizers as rules
from core.engine.config import BY_HAND_ACTIVATIONS, RunConfig, by_hand_problem
from core.engine.lanes import ModuleLanes
from core.engine.models import weight_layers


# Planted backward bugs, selectable per weight layer (index into the linear layers, 0 = first):
#   missing_activation_derivative: the hidden activation after this layer passes the gradient through
#       without multiplying by f'(z) (taints this layer and every layer below it);
#   transposed_weight: this layer's weight gradient is computed as x^T delta instead of delta^T x
#       (only fits a square weight matrix; elsewhere the shapes would not even match);
#   mean_sum_mismatch: this layer sums its gradient over the batch although the loss is a batch mean
#       (N times too large; only this layer).
BUGS = ("missing_activation_derivative", "transposed_weight", "mean_sum_mismatch")


class Linear:
    """z = x W^T + b, with W [out, in] and b [out] (the tensors of an ``nn.Linear``, shared)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, bug: str | None = None):
        self.weight, self.bias, self.bug = weight, bias, bug
        self.x: torch.Tensor | None = None
        self.grad_weight: torch.Tensor | None = None
        self.grad_bias: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.x = x
        return x @ self.weight.T + self.bias

    def backward(self, dz: torch.Tensor) -> torch.Tensor:
        """dL/dz [N, out] -> dL/dx [N, in]; stores dL/dW = dz^T x and dL/db = sum_n dz."""
        self.grad_weight = dz.T @ self.x
        self.grad_bias = dz.sum(dim=0)
        if self.bug == "transposed_weight":
            self.grad_weight = self.x.T @ dz  # [in, out]: the bug
        elif self.bug == "mean_sum_mismatch":
            self.grad_weight, self.grad_bias = self.grad_weight * len(dz), self.grad_bias * len(dz)
        return dz @ self.weight


class Sigmoid:
    """y = 1 / (1 + e^-z); dy/dz = y (1 - y)."""

    def __init__(self, bug: str | None = None):
        self.bug, self.y = bug, None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.y = torch.sigmoid(z)
        return self.y

    def backward(self, dy: torch.Tensor) -> torch.Tensor:
        return dy if self.bug == "missing_activation_derivative" else dy * self.y * (1 - self.y)


class Tanh:
    """y = tanh z; dy/dz = 1 - y^2."""

    def __init__(self, bug: str | None = None):
        self.bug, self.y = bug, None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.y = torch.tanh(z)
        return self.y

    def backward(self, dy: torch.Tensor) -> torch.Tensor:
        return dy if self.bug == "missing_activation_derivative" else dy * (1 - self.y * self.y)


class ReLU:
    """y = max(z, 0); dy/dz = 1 where z > 0, else 0 (0 at the kink z = 0, as PyTorch)."""

    def __init__(self, bug: str | None = None):
        self.bug, self.positive = bug, None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.positive = z > 0
        return z * self.positive

    def backward(self, dy: torch.Tensor) -> torch.Tensor:
        return dy if self.bug == "missing_activation_derivative" else dy * self.positive


ACTIVATIONS = {"sigmoid": Sigmoid, "tanh": Tanh, "relu": ReLU}
assert tuple(ACTIVATIONS) == BY_HAND_ACTIVATIONS


def softmax(z: torch.Tensor) -> torch.Tensor:
    """e^z / sum e^z per row, shifted by the row maximum so nothing overflows."""
    e = (z - z.max(dim=1, keepdim=True).values).exp()
    return e / e.sum(dim=1, keepdim=True)


class SoftmaxCrossEntropy:
    """Per example -log softmax(z)_y (softmax applied once, here); the loss is the batch mean."""

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-example losses [N]."""
        shifted = z - z.max(dim=1, keepdim=True).values
        log_p = shifted - shifted.exp().sum(dim=1, keepdim=True).log()
        self.p, self.y = log_p.exp(), y
        return -log_p.gather(1, y[:, None])[:, 0]

    def backward(self) -> torch.Tensor:
        """d(mean loss)/dz = (softmax(z) - onehot(y)) / N."""
        grad = self.p.clone()
        grad[torch.arange(len(self.y), device=grad.device), self.y] -= 1
        return grad / len(self.y)


class SoftmaxMSE:
    """Per example mean_c (softmax(z)_c - onehot(y)_c)^2; the loss is the batch mean."""

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.p = softmax(z)
        self.target = torch.zeros_like(self.p)
        self.target[torch.arange(len(y), device=z.device), y] = 1
        return ((self.p - self.target) ** 2).mean(dim=1)

    def backward(self) -> torch.Tensor:
        """dL/dp = 2 (p - t) / (N C), then through the softmax Jacobian: p * (dL/dp - <dL/dp, p>)."""
        n, c = self.p.shape
        dp = 2 * (self.p - self.target) / (n * c)
        return self.p * (dp - (dp * self.p).sum(dim=1, keepdim=True))


LOSSES = {"cross_entropy": SoftmaxCrossEntropy, "mse": SoftmaxMSE}


class ScratchMLP:
    """Linear -> activation -> ... -> Linear -> softmax loss, plus l1 sum|W| + l2 sum W^2.

    ``weights[i]`` / ``biases[i]`` are used in place (not copied), so an optimizer that updates
    them in place trains this network. ``bugs`` maps a linear-layer index to one of :data:`BUGS`.
    """

    def __init__(self, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], activation: str,
                 loss: str = "cross_entropy", l1: float = 0.0, l2: float = 0.0,
                 bugs: Mapping[int, str] | None = None):
        if activation not in ACTIVATIONS:
            raise ValueError(f"the by-hand network supports {', '.join(ACTIVATIONS)}, not {activation!r}")
        if loss not in LOSSES:
            raise ValueError(f"the by-hand network supports the losses {', '.join(LOSSES)}, not {loss!r}")
        bugs = dict(bugs or {})
        check_bugs(bugs, [tuple(w.shape) for w in weights])
        self.l1, self.l2 = l1, l2
        self.linears = [Linear(w, b, bugs.get(i) if bugs.get(i) != "missing_activation_derivative" else None)
                        for i, (w, b) in enumerate(zip(weights, biases))]
        self.activations = [ACTIVATIONS[activation](bugs.get(i) if bugs.get(i) == "missing_activation_derivative"
                                                    else None) for i in range(len(self.linears) - 1)]
        self.loss_fn = LOSSES[loss]()

    @classmethod
    def from_model(cls, model: nn.Module, cfg: RunConfig, bugs: Mapping[int, str] | None = None) -> "ScratchMLP":
        """The by-hand twin of a plain MLP built by :func:`core.engine.models.build_model` (shares its tensors)."""
        problem = by_hand_problem(cfg, training=False)
        if problem:
            raise ValueError(problem)
        layers = [m for _, m in weight_layers(model)]
        return cls([m.weight.detach() for m in layers], [m.bias.detach() for m in layers], cfg.activation,
                   cfg.loss, cfg.l1, cfg.l2, bugs)

    @property
    def parameters(self) -> list[torch.Tensor]:
        """W1, b1, W2, b2, ... (the order of ``nn.Sequential.parameters()``)."""
        return [t for layer in self.linears for t in (layer.weight, layer.bias)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [N, classes] for inputs of any shape [N, ...] (flattened first)."""
        h = x.reshape(len(x), -1)
        for linear, act in zip(self.linears, self.activations):
            h = act.forward(linear.forward(h))
        return self.linears[-1].forward(h)

    def penalty(self) -> torch.Tensor:
        total = torch.zeros((), dtype=self.linears[0].weight.dtype, device=self.linears[0].weight.device)
        for layer in self.linears:
            if self.l1:
                total = total + self.l1 * layer.weight.abs().sum()
            if self.l2:
                total = total + self.l2 * (layer.weight * layer.weight).sum()
        return total

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(total = mean data loss + penalty, mean data loss, logits); remembers what backward needs."""
        logits = self.forward(x)
        data = self.loss_fn.forward(logits, y).mean()
        return data + self.penalty(), data, logits

    def backward(self) -> list[torch.Tensor]:
        """Gradients of the last :meth:`loss`'s total, in :attr:`parameters` order."""
        grad = self.loss_fn.backward()
        grad = self.linears[-1].backward(grad)
        for linear, act in zip(reversed(self.linears[:-1]), reversed(self.activations)):
            grad = linear.backward(act.backward(grad))
        out = []
        for layer in self.linears:
            gw = layer.grad_weight
            if self.l1:
                gw = gw + self.l1 * layer.weight.sign()
            if self.l2:
                gw = gw + 2 * self.l2 * layer.weight
            out += [gw, layer.grad_bias]
        return out

    def gradients(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(total loss, its gradients in :attr:`parameters` order) on one batch."""
        total, _, _ = self.loss(x, y)
        return total, self.backward()


def check_bugs(bugs: Mapping[int, str], weight_shapes: Sequence[tuple[int, ...]]) -> None:
    """Raise ValueError with a clear message for a bug that does not fit its layer."""
    n = len(weight_shapes)
    for index, bug in bugs.items():
        if bug not in BUGS:
            raise ValueError(f"unknown planted bug {bug!r}; choose one of {', '.join(BUGS)}")
        if not 0 <= index < n:
            raise ValueError(f"layer {index + 1} does not exist: the network has {n} weight layers")
        if bug == "missing_activation_derivative" and index == n - 1:
            raise ValueError("the output layer fc{n} has no activation after it (the softmax belongs to the loss); "
                             "plant a missing activation derivative in a hidden layer")
        rows, cols = weight_shapes[index]
        if bug == "transposed_weight" and rows != cols:
            raise ValueError(f"a transposed weight gradient only fits a square layer; fc{index + 1} is "
                             f"{rows}x{cols}, where the shapes would not even match")


class _ByHandBackward(torch.autograd.Function):
    """Lets the engine's loop call ``total.backward()`` on the by-hand network.

    Only the hook: its forward runs the written-out forward (autograd records nothing inside) and
    its backward returns the written-out gradients, scaled by the incoming gradient.
    """

    @staticmethod
    def forward(ctx, net: ScratchMLP, x: torch.Tensor, y: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        total, data, logits = net.loss(x, y)
        ctx.net = net
        net.last = (data, logits)
        return total

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor):
        return (None, None, None, *[grad_total * g for g in ctx.net.backward()])


class ScratchLanes(ModuleLanes):
    """The Lanes of a ``backprop="by_hand"`` run (see :class:`core.engine.lanes.Lanes`): one plain MLP with the
    engine's initialization, trained through the by-hand forward/backward and the from-scratch
    update rules of :mod:`core.engine.optimizers`; the probes are the engine's, on the same weights."""

    def __init__(self, configs: list[RunConfig], input_shape: tuple[int, ...], n_classes: int, device: torch.device):
        problem = by_hand_problem(configs[0])
        if problem:
            raise ValueError(problem)
        super().__init__(configs, input_shape, n_classes, device)
        self.net = ScratchMLP.from_model(self.model, self.cfg)
        self.params = list(self.model.parameters())
        self.optimizers = [rules.with_schedule(rules.from_config(self.cfg, self.params), self.cfg)]

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        total = _ByHandBackward.apply(self.net, x, y, *self.params)
        data, logits = self.net.last
        return total, data, (logits.argmax(dim=1) == y).sum()

    @torch.no_grad()
    def penalties(self) -> list[float]:
        return [float(self.net.penalty())]

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward(x).unsqueeze(0)
