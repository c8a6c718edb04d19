"""The 2-D optimizer race: test functions with closed-form gradients, raced by the real update rules.

Each :class:`Surface2D` is a loss f(x, y) with its gradient written out by hand (the tests check
it against autograd). :func:`race` starts every chosen optimizer from the same point and runs
the same :class:`core.engine.optimizers.RuleOptimizer` the engine trains networks with, on a
2-D parameter, for a number of steps; it returns each path and its losses. Pure tensor code:
six optimizers x 500 steps take a fraction of a second, so a page redraws it on every slider move.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from core.engine.optimizers import RuleOptimizer, rule_knobs

Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
MAX_STEPS = 5000
MAX_KAPPA = 1000.0


@dataclass(frozen=True)
class Surface2D:
    """A 2-D loss with its hand-written gradient, a default start and a view box."""

    name: str
    title: str
    formula: str  # LaTeX
    loss: Fn
    grad: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    start: tuple[float, float]
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    minima: tuple[tuple[float, float], ...]


def quadratic(kappa: float = 10.0) -> Surface2D:
    """f = (x^2 + kappa y^2) / 2: curvature 1 along x, kappa along y (condition number kappa)."""
    if not 1.0 <= kappa <= MAX_KAPPA:
        raise ValueError(f"condition number kappa must be in [1, {MAX_KAPPA:g}], got {kappa!r}")
    return Surface2D("quadratic", f"Ill-conditioned quadratic (kappa = {kappa:g})",
                     r"f(x,y) = \tfrac12\,(x^2 + \kappa\,y^2)",
                     lambda x, y: 0.5 * (x * x + kappa * y * y),
                     lambda x, y: (x, kappa * y),
                     (-4.0, 1.5), (-5.0, 5.0), (-2.5, 2.5), ((0.0, 0.0),))


def _rosenbrock_grad(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return -2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)


def _beale_terms(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return 1.5 - x + x * y, 2.25 - x + x * y ** 2, 2.625 - x + x * y ** 3


def _beale(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    a, b, c = _beale_terms(x, y)
    return a * a + b * b + c * c


def _beale_grad(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b, c = _beale_terms(x, y)
    return (2 * a * (y - 1) + 2 * b * (y ** 2 - 1) + 2 * c * (y ** 3 - 1),
            2 * a * x + 4 * b * x * y + 6 * c * x * y ** 2)


ROSENBROCK = Surface2D("rosenbrock", "Rosenbrock's banana valley", r"f(x,y) = (1-x)^2 + 100\,(y-x^2)^2",
                       lambda x, y: (1 - x) ** 2 + 100 * (y - x * x) ** 2, _rosenbrock_grad,
                       (-1.2, 1.0), (-2.0, 2.0), (-1.0, 3.0), ((1.0, 1.0),))
BEALE = Surface2D("beale", "Beale's function",
                  r"f(x,y) = (1.5-x+xy)^2 + (2.25-x+xy^2)^2 + (2.625-x+xy^3)^2",
                  _beale, _beale_grad, (1.0, 1.4), (-4.5, 4.5), (-4.5, 4.5), ((3.0, 0.5),))
# A saddle at the origin, the way out along y leading down to two valleys at y = +-sqrt(2).
SADDLE = Surface2D("saddle", "A saddle point", r"f(x,y) = x^2 - y^2 + \tfrac14\,y^4",
                   lambda x, y: x * x - y * y + 0.25 * y ** 4, lambda x, y: (2 * x, -2 * y + y ** 3),
                   (-2.0, 1e-3), (-2.5, 2.5), (-2.5, 2.5), ((0.0, 2 ** 0.5), (0.0, -2 ** 0.5)))
# An asymmetric double well: a shallow minimum near x = +0.96 and a deeper one near x = -1.036.
TWO_MINIMA = Surface2D("two_minima", "Two minima (a shallow and a deep one)", r"f(x,y) = (x^2-1)^2 + 0.3\,x + y^2",
                       lambda x, y: (x * x - 1) ** 2 + 0.3 * x + y * y,
                       lambda x, y: (4 * x * (x * x - 1) + 0.3, 2 * y),
                       (1.8, 1.2), (-2.0, 2.0), (-1.5, 1.5), ((-1.03558, 0.0), (0.96015, 0.0)))

FUNCTIONS = ("quadratic", "rosenbrock", "beale", "saddle", "two_minima")


def surface(name: str, kappa: float = 10.0) -> Surface2D:
    """The race function called ``name`` (the quadratic takes its condition number)."""
    fixed = {"rosenbrock": ROSENBROCK, "beale": BEALE, "saddle": SADDLE, "two_minima": TWO_MINIMA}
    if name == "quadratic":
        return quadratic(kappa)
    if name not in fixed:
        raise ValueError(f"unknown race function {name!r}; known: {', '.join(FUNCTIONS)}")
    return fixed[name]


@dataclass
class RaceResult:
    """One optimizer's path: ``path[k]`` is the point after k steps (row 0 is the start)."""

    label: str
    path: np.ndarray  # [steps + 1, 2]
    losses: np.ndarray  # [steps + 1]
    diverged_at: int | None  # first step whose point was not finite (the path stops before it)


def race(fn: Surface2D, start: Sequence[float], racers: Mapping[str, Mapping[str, Any]], steps: int,
         dtype: torch.dtype = torch.float64) -> list[RaceResult]:
    """Run each racer ``{label: {"optimizer": name, "lr": ..., knobs}}`` from ``start`` for ``steps`` steps.

    The knobs are RunConfig's names (momentum, rms_alpha, rms_momentum, beta1, beta2); each
    optimizer reads its own. The gradient is the function's closed form, set as ``p.grad``.
    """
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be in [1, {MAX_STEPS}], got {steps!r}")
    labels = list(racers)
    # Every racer's point is one row of `points`, and its gradient one row of `grads`: the rule
    # updates its row in place, and one gradient call per step serves all racers.
    points = torch.tensor([[float(start[0]), float(start[1])]] * len(labels), dtype=dtype)
    grads = torch.empty_like(points)
    optimizers = []
    for i, label in enumerate(labels):
        spec = dict(racers[label])
        name = spec.pop("optimizer")
        p = points[i]
        p.grad = grads[i]
        optimizers.append(RuleOptimizer([p], name, **rule_knobs(name, **spec)))
    path = torch.empty(steps + 1, len(labels), 2, dtype=dtype)
    path[0] = points
    x, y = points[:, 0], points[:, 1]  # views: they follow the points as they move
    with torch.no_grad():
        for k in range(1, steps + 1):
            torch.stack(fn.grad(x, y), dim=1, out=grads)
            for optimizer in optimizers:
                optimizer.update()
            path[k] = points
    out = []
    for i, label in enumerate(labels):
        own = path[:, i]
        finite = torch.isfinite(own).all(dim=1)
        diverged_at = None if bool(finite.all()) else int((~finite).nonzero()[0])
        own = own[:diverged_at] if diverged_at is not None else own
        out.append(RaceResult(label, own.numpy(), fn.loss(own[:, 0], own[:, 1]).numpy(), diverged_at))
    return out


def loss_grid(fn: Surface2D, n: int = 121, x_range: tuple[float, float] | None = None,
              y_range: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xs, ys, f[ys, xs]) on an n x n grid over the function's view box (for contours)."""
    xs = torch.linspace(*(x_range or fn.x_range), n, dtype=torch.float64)
    ys = torch.linspace(*(y_range or fn.y_range), n, dtype=torch.float64)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return xs.numpy(), ys.numpy(), fn.loss(gx, gy).numpy()


def optimal_gd(kappa: float, mu: float = 1.0) -> tuple[float, float]:
    """(step, rate) of gradient descent on a quadratic with curvatures mu..kappa*mu: 2/(L+mu), (k-1)/(k+1)."""
    big = kappa * mu
    return 2.0 / (big + mu), (kappa - 1) / (kappa + 1)


def optimal_heavy_ball(kappa: float, mu: float = 1.0) -> tuple[float, float, float]:
    """(step, momentum, rate) of Polyak's heavy ball: 4/(sqrt L + sqrt mu)^2, rate^2, (sqrt k - 1)/(sqrt k + 1)."""
    big = kappa * mu
    rate = (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)
    return 4.0 / (math.sqrt(big) + math.sqrt(mu)) ** 2, rate * rate, rate


# Choices for the race's controls (the knobs' own ranges come from core.engine.config's Knob metadata).
LEARNING_RATES = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
KAPPAS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
ADAPTIVE = ("rmsprop", "adam", "nadam")  # step sizes in parameter units, not gradient units
DEFAULT_STEPS = 300


def default_lrs(name: str) -> tuple[float, float]:
    """(SGD-family lr, adaptive lr) that make a readable race on function ``name``."""
    return {"quadratic": (0.05, 0.1), "rosenbrock": (1e-3, 0.05), "beale": (0.005, 0.05),
            "saddle": (0.02, 0.02), "two_minima": (0.05, 0.05)}[name]
