"""The 2-D race: hand-written gradients against autograd, and the convergence rates theory gives on a quadratic."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.lab import race as r
from core.engine.optimizers import RULES


@pytest.mark.parametrize("name", r.FUNCTIONS)
def test_closed_form_gradients_match_autograd(name):
    fn = r.surface(name, kappa=37.0)
    gen = torch.Generator().manual_seed(0)
    lo = torch.tensor([fn.x_range[0], fn.y_range[0]], dtype=torch.float64)
    hi = torch.tensor([fn.x_range[1], fn.y_range[1]], dtype=torch.float64)
    points = lo + (hi - lo) * torch.rand(200, 2, generator=gen, dtype=torch.float64)
    x, y = points[:, 0].clone().requires_grad_(), points[:, 1].clone().requires_grad_()
    fn.loss(x, y).sum().backward()
    gx, gy = fn.grad(x.detach(), y.detach())
    torch.testing.assert_close(gx, x.grad, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(gy, y.grad, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("name", r.FUNCTIONS)
def test_known_minima_have_zero_gradient(name):
    fn = r.surface(name)
    for mx, my in fn.minima:
        gx, gy = fn.grad(torch.tensor(mx, dtype=torch.float64), torch.tensor(my, dtype=torch.float64))
        assert abs(float(gx)) < 1e-3 and abs(float(gy)) < 1e-3


def _measured_rate(path: np.ndarray, first: int, last: int) -> float:
    """Per-step contraction of the distance to the minimum (the origin), from the iterates."""
    dist = np.linalg.norm(path, axis=1)
    return (dist[last] / dist[first]) ** (1.0 / (last - first))


@pytest.mark.parametrize("kappa", [10.0, 100.0])
def test_gradient_descent_with_the_optimal_step_converges_at_kappa_minus_1_over_kappa_plus_1(kappa):
    fn = r.quadratic(kappa)
    step, rate = r.optimal_gd(kappa)
    (res,) = r.race(fn, (1.0, 1.0), {"gd": {"optimizer": "sgd", "lr": step}}, steps=400)
    assert _measured_rate(res.path, 100, 400) == pytest.approx(rate, rel=1e-3)
    # a slightly different step is slower: the optimum is a real optimum
    (worse,) = r.race(fn, (1.0, 1.0), {"gd": {"optimizer": "sgd", "lr": 0.8 * step}}, steps=400)
    assert _measured_rate(worse.path, 100, 400) > rate + 1e-3


@pytest.mark.parametrize("kappa", [10.0, 100.0])
def test_heavy_ball_with_optimal_parameters_converges_at_sqrt_kappa_rate(kappa):
    fn = r.quadratic(kappa)
    step, mom, rate = r.optimal_heavy_ball(kappa)
    steps = min(600, int(120 / -math.log(rate)))  # long, but the distance stays far above float64's floor
    (res,) = r.race(fn, (1.0, 1.0), {"hb": {"optimizer": "momentum", "lr": step, "momentum": mom}}, steps=steps)
    # the optimal heavy ball has a double eigenvalue: distance ~ k * rate^k, so measure over a long stretch
    measured = _measured_rate(res.path, steps // 2, steps)
    assert measured == pytest.approx(rate, abs=0.01 * (1 - rate) + 2e-3)
    gd_rate = r.optimal_gd(kappa)[1]
    assert measured < gd_rate  # momentum beats the best plain gradient descent


def test_race_runs_every_rule_from_the_same_start_and_reports_divergence():
    fn = r.surface("rosenbrock")
    racers = {name: {"optimizer": name, "lr": 1e-3} for name in RULES}
    racers["too fast"] = {"optimizer": "sgd", "lr": 0.5}
    results = r.race(fn, fn.start, racers, steps=200)
    assert [res.label for res in results] == [*RULES, "too fast"]
    for res in results[:-1]:
        assert res.diverged_at is None and res.path.shape == (201, 2) and np.allclose(res.path[0], fn.start)
        assert res.losses[-1] < res.losses[0]
        assert res.losses == pytest.approx(fn.loss(torch.from_numpy(res.path[:, 0]),
                                                   torch.from_numpy(res.path[:, 1])).numpy())
    blown = results[-1]
    assert blown.diverged_at is not None and len(blown.path) == blown.diverged_at


def test_bad_race_input_is_refused_with_a_message():
    with pytest.raises(ValueError, match="kappa"):
        r.quadratic(0.5)
    with pytest.raises(ValueError, match="unknown race function"):
        r.surface("himmelblau")
    with pytest.raises(ValueError, match="steps"):
        r.race(r.SADDLE, (0.0, 0.0), {"sgd": {"optimizer": "sgd", "lr": 0.1}}, steps=0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        r.race(r.SADDLE, (0.0, 0.0), {"x": {"optimizer": "lbfgs", "lr": 0.1}}, steps=3)


def test_loss_grid_is_the_function_on_the_grid():
    xs, ys, z = r.loss_grid(r.BEALE, n=11)
    assert z.shape == (11, 11)
    assert z[3, 7] == pytest.approx(float(r.BEALE.loss(torch.tensor(xs[7]), torch.tensor(ys[3]))))
    assert math.isclose(xs[0], r.BEALE.x_range[0]) and math.isclose(ys[-1], r.BEALE.y_range[1])
