"""The numeric check: central finite differences (J(θ+ε) − J(θ−ε)) / 2ε of the training objective
(``core.engine.lanes.data_loss`` + ``penalty``) on a fixed batch, for every entry of small layers or a seeded
sample of a large layer's entries, compared with backprop (autograd, or the by-hand backward of
``core.engine.scratch``) as ‖g_num − g_bp‖ / (‖g_num‖ + ‖g_bp‖) per layer. The perturbed evaluations are
batched: ``torch.func.functional_call`` under ``vmap``.
"""
from __future__ import annotations

import copy
from typing import Iterator, Mapping

import torch
from torch import nn
from torch.func import functional_call, vmap

from core.engine import catalog
from core.engine import data as datasets
from core.engine.config import RunConfig, by_hand_problem
from core.engine.models import InvertedDropout, build_model, set_dropout_generator
from core.engine.scratch import ScratchMLP, check_bugs
from core.engine.lanes import data_loss, penalty
from core.lab.gradcheck.kinks import move_to_kinks, near_kinks
from core.lab.gradcheck.result import GradCheck, LayerCheck

DEFAULT_EPS = 1e-6
DEFAULT_MAX_ENTRIES = 12_000  # per layer; above it a seeded sample is checked
DEFAULT_EXAMPLES = 32
DEFAULT_MAX_MACS = 2e10  # multiply-adds of all perturbed forwards together (a few seconds on a CPU core)
PAIRS_PER_LAYER = 150  # (numeric, analytic) pairs kept per layer for a scatter
MEMORY_BUDGET = 2**23  # elements per vmap chunk (64 MiB of float64)
CHECK_CHUNK = 2048  # entries perturbed together at most (each twice)
MISTAKES = ("perturb_copy",)
DROPOUT_MODULES = (nn.Dropout, InvertedDropout)
NORM_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


def layer_groups(model: nn.Module) -> list[tuple[str, list[str]]]:
    """(layer name, its parameter names) in forward order: fcK / convK for weight layers, bnK / lnK
    for the normalization after weight layer K."""
    groups, k = [], 0
    for name, module in model.named_modules():
        own = [f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False)]
        if not own:
            continue
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            k += 1
            label = f"{'conv' if isinstance(module, nn.Conv2d) else 'fc'}{k}"
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            label = f"bn{k}"
        elif isinstance(module, NORM_MODULES):
            label = f"ln{k}"
        else:
            label = name
        groups.append((label, own))
    return groups


def check_batch(cfg: RunConfig, n_examples: int = DEFAULT_EXAMPLES) -> tuple[torch.Tensor, torch.Tensor, tuple, int]:
    """(x, y, input shape, classes): the first ``n_examples`` training examples of the config's split."""
    ds = catalog.load_dataset(cfg.dataset, cfg.data_noise)
    train_idx, _ = datasets.split_indices(len(ds.y), cfg.val_fraction, cfg.seed)
    idx = train_idx[:max(2, min(n_examples, len(train_idx)))]
    return datasets.batch_features(ds.x[idx]), ds.y[idx], ds.input_shape, ds.n_classes


class _Objective(nn.Module):
    """The training objective as a module, so functional_call swaps the weights the penalty reads too."""

    def __init__(self, cfg: RunConfig, model: nn.Module):
        super().__init__()
        self.cfg, self.model = cfg, model

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = data_loss(self.cfg, self.model(x), y)
        pen = penalty(self.cfg, self.model)
        return total + pen if pen is not None else total


def _prepare(model: nn.Module, dtype: torch.dtype, dropout_active: bool, seed: int) -> nn.Module:
    """A copy in ``dtype`` and training mode; BatchNorm uses batch statistics and updates no running
    statistics; dropout is off unless ``dropout_active`` (then each evaluation draws a new mask)."""
    model = copy.deepcopy(model).to(dtype=dtype)
    model.train()
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            module.track_running_stats = False
            module.running_mean = module.running_var = module.num_batches_tracked = None
        if isinstance(module, DROPOUT_MODULES) and not dropout_active:
            module.eval()
    set_dropout_generator(model, torch.Generator().manual_seed(seed))
    for p in model.parameters():
        p.requires_grad_(True)
    return model



def _analytic(cfg: RunConfig, model: nn.Module, objective: _Objective, x: torch.Tensor, y: torch.Tensor,
              backprop: str, bugs: Mapping[int, str]) -> dict[str, torch.Tensor]:
    names = [n for n, _ in model.named_parameters()]
    if backprop == "by_hand":
        net = ScratchMLP.from_model(model, cfg, bugs)
        with torch.no_grad():
            _, grads = net.gradients(x, y)
        return dict(zip(names, grads))
    grads = torch.autograd.grad(objective(x, y), list(model.parameters()))
    return {n: g.detach() for n, g in zip(names, grads)}


def _entries(numel: int, max_entries: int | None, generator: torch.Generator) -> torch.Tensor:
    if max_entries is None or numel <= max_entries:
        return torch.arange(numel)
    return torch.randperm(numel, generator=generator)[:max_entries].sort().values


def forward_cost(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(elements of every layer's output, multiply-adds of the Linear/Conv layers) of one forward of ``x``."""
    sizes, macs = [], []

    def hook(module: nn.Module, _inputs, out: torch.Tensor) -> None:
        sizes.append(out.numel())
        if isinstance(module, nn.Linear):
            macs.append(out.numel() * module.in_features)
        elif isinstance(module, nn.Conv2d):
            macs.append(out.numel() * module.weight[0].numel())

    hooks = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return sum(sizes), sum(macs)


def numeric_gradient(objective: _Objective, params: dict[str, torch.Tensor], name: str, entries: torch.Tensor,
                     x: torch.Tensor, y: torch.Tensor, eps: float, *, batched: bool = True,
                     perturb_copy: bool = False, dropout_active: bool = False, act_size: int = 0) -> torch.Tensor:
    """Central differences of the objective for the given flat entries of parameter ``name``.

    ``batched``: all 2k perturbed evaluations through functional_call under vmap, in chunks;
    otherwise the naive loop (one in-place perturbation and forward at a time).
    ``perturb_copy`` reproduces a classic mistake: the perturbation goes to a copy of the weights
    while the loss is still computed with the model's own weights."""
    base = params[name]
    if not batched:
        out = torch.empty(len(entries), dtype=base.dtype)
        flat = base.view(-1)
        with torch.no_grad():
            for j, i in enumerate(entries.tolist()):
                original = flat[i].item()
                copy_ = flat.clone() if perturb_copy else flat
                copy_[i] = original + eps
                plus = objective(x, y)
                copy_[i] = original - eps
                minus = objective(x, y)
                copy_[i] = original
                out[j] = (plus - minus) / (2 * eps)
        return out

    def loss_at(p: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        return functional_call(objective, {**params, name: base if perturb_copy else p}, (inputs, y))

    per_eval = base.numel() + act_size
    chunk = max(1, min(CHECK_CHUNK, MEMORY_BUDGET // max(per_eval, 1)))
    # With dropout on, the inputs are batched too (an expanded view), so every evaluation draws its own
    # mask even in layers the perturbation does not reach.
    batched_loss = vmap(loss_at, in_dims=(0, 0 if dropout_active else None),
                        randomness="different" if dropout_active else "error")
    out = []
    with torch.no_grad():
        for start in range(0, len(entries), chunk):
            idx = entries[start:start + chunk]
            k = len(idx)
            perturbed = base.detach().reshape(1, -1).repeat(2 * k, 1)
            rows = torch.arange(k)
            perturbed[rows, idx] += eps
            perturbed[rows + k, idx] -= eps
            inputs = x.expand(2 * k, *x.shape) if dropout_active else x
            losses = batched_loss(perturbed.reshape(2 * k, *base.shape), inputs)
            if losses.dim() == 0:  # a loss that does not depend on the perturbation (perturb_copy)
                losses = losses.expand(2 * k)
            out.append((losses[:k] - losses[k:]) / (2 * eps))
    return torch.cat(out)


def entry_caps(sizes: Mapping[str, int], max_entries: int | None, max_total: float | None) -> dict[str, int]:
    """Entries to check per tensor: at most ``max_entries`` each and ``max_total`` in all, small tensors
    first (a tensor that needs less than its share leaves the rest to the larger ones)."""
    caps, left = {}, max_total
    order = sorted(sizes, key=lambda n: sizes[n])
    for i, name in enumerate(order):
        cap = sizes[name] if max_entries is None else min(sizes[name], max_entries)
        if left is not None:
            cap = max(1, min(cap, int(left / (len(order) - i))))
            left -= cap
        caps[name] = cap
    return caps


def relative_difference(numeric: torch.Tensor, analytic: torch.Tensor) -> float:
    """‖g_num − g_bp‖ / (‖g_num‖ + ‖g_bp‖), in float64 (0 when both are zero)."""
    numeric, analytic = numeric.double(), analytic.double()
    denominator = numeric.norm() + analytic.norm()
    return float((numeric - analytic).norm() / denominator) if denominator > 0 else 0.0


def check_gradients(cfg: RunConfig, *, model: nn.Module | None = None, eps: float = DEFAULT_EPS,
                    dtype: torch.dtype = torch.float64, dropout_active: bool = False, at_kinks: bool = False,
                    backprop: str | None = None, bugs: Mapping[int, str] | None = None, mistake: str | None = None,
                    max_entries: int | None = DEFAULT_MAX_ENTRIES, max_macs: float | None = DEFAULT_MAX_MACS,
                    n_examples: int = DEFAULT_EXAMPLES,
                    batch: tuple[torch.Tensor, torch.Tensor] | None = None, sample_seed: int = 0,
                    batched: bool = True) -> GradCheck:
    """Check the config's gradients at its initialization (or of ``model``), layer by layer.

    ``backprop``: "autograd" or "by_hand" (default: the config's); ``bugs`` (by_hand only): linear
    layer index -> a planted bug of :data:`core.engine.scratch.BUGS`; ``mistake="perturb_copy"``: perturb a
    copy of the weights, not the model. ``batch`` replaces the config's first training examples.
    A parameter tensor with more than ``max_entries`` entries, or more than its share of ``max_macs``
    (multiply-adds of all perturbed forwards; None = no limit), is checked on a seeded sample.
    """
    backprop = backprop or cfg.backprop
    bugs = dict(bugs or {})
    if not eps > 0:
        raise ValueError(f"ε must be positive, got {eps}")
    if mistake is not None and mistake not in MISTAKES:
        raise ValueError(f"unknown mistake {mistake!r}; known: {', '.join(MISTAKES)}")
    if backprop not in ("autograd", "by_hand"):
        raise ValueError(f"backprop must be autograd or by_hand, got {backprop!r}")
    if backprop == "by_hand":
        problem = by_hand_problem(cfg, training=False)
        if problem:
            raise ValueError(problem)
    elif bugs:
        raise ValueError("planted bugs live in the by-hand backward: choose backprop by_hand to plant one")
    if batch is None:
        x, y, input_shape, n_classes = check_batch(cfg, n_examples)
    else:
        x, y = batch
        input_shape, n_classes = tuple(x.shape[1:]), int(y.max()) + 1
    notes = []
    if model is None:
        model = build_model(cfg, input_shape, n_classes, torch.Generator().manual_seed(cfg.seed))
        where = "initialization"
    else:
        where = "the model handed in"
    model = _prepare(model, dtype, dropout_active, sample_seed)
    x = x.to(dtype)
    has_dropout = any(isinstance(m, DROPOUT_MODULES) for m in model.modules())
    if has_dropout and not dropout_active:
        notes.append("Dropout is switched off while checking (it would draw a new mask for every evaluation).")
    if dropout_active:
        notes.append("Dropout is ON while checking: every evaluation draws a new mask, so the finite differences "
                     "measure noise, not the gradient." if has_dropout else
                     "The dropout switch is on, but this config has no dropout: nothing changes.")
    if any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in model.modules()):
        notes.append("BatchNorm is checked as it trains: with the check batch's own statistics.")
    if at_kinks:
        placed = move_to_kinks(cfg, model, x)
        notes.append(f"{placed} hidden pre-activations were moved onto the ReLU kink (z = 0 on the first example): "
                     "there the central difference averages the two one-sided slopes; backprop uses slope 0.")
    close, pre_activations = near_kinks(model, x, 10 * eps)
    if close and not at_kinks:
        notes.append(f"{close} of {pre_activations} ReLU pre-activations lie within 10ε of the kink at 0: a "
                     "perturbation may cross it there, and layers feeding them can read above 1e-7 (fewer "
                     "examples or another seed move them away).")
    if backprop == "by_hand":
        check_bugs(bugs, [tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Linear)])
    objective = _Objective(cfg, model)
    analytic = _analytic(cfg, model, objective, x, y, backprop, bugs)
    params = {f"model.{n}": p.detach() for n, p in model.named_parameters()}
    act_size, macs = forward_cost(model, x)
    caps = entry_caps({n: p.numel() for n, p in model.named_parameters()}, max_entries,
                      None if max_macs is None else max_macs / (2 * max(macs, 1)))
    generator = torch.Generator().manual_seed(sample_seed)
    rows, pairs, all_num, all_bp = [], [], [], []
    for label, names in layer_groups(model):
        nums, bps, checked, total = [], [], 0, 0
        for name in names:
            p = params[f"model.{name}"]
            entries = _entries(p.numel(), caps[name], generator)
            if batched:
                num = numeric_gradient(objective, params, f"model.{name}", entries, x, y, eps, batched=True,
                                       perturb_copy=mistake == "perturb_copy", dropout_active=dropout_active,
                                       act_size=act_size)
            else:
                num = numeric_gradient(objective, {k[6:]: v for k, v in params.items()}, name, entries, x, y, eps,
                                       batched=False, perturb_copy=mistake == "perturb_copy")
            nums.append(num.double())
            bps.append(analytic[name].reshape(-1)[entries].double())
            checked += len(entries)
            total += p.numel()
        num, bp = torch.cat(nums), torch.cat(bps)
        all_num.append(num)
        all_bp.append(bp)
        rows.append(LayerCheck(label, names, checked, total, relative_difference(num, bp), float(num.norm()),
                               float(bp.norm())))
        keep = torch.randperm(len(num), generator=generator)[:PAIRS_PER_LAYER]
        pairs += [{"layer": label, "numeric": a, "analytic": b} for a, b in zip(num[keep].tolist(), bp[keep].tolist())]
    if any(r.sampled for r in rows):
        notes.append(f"Sampled {sum(r.checked for r in rows)} of {sum(r.total for r in rows)} entries (seed "
                     f"{sample_seed}): at most {max_entries} per parameter tensor"
                     + (f", and {int(max_macs / 2 / max(macs, 1)):,} entries in all, since each perturbed forward "
                        f"costs {macs:,} multiply-adds." if max_macs is not None else "."))
    settings = {"dtype": str(dtype).replace("torch.", ""), "eps": eps, "dropout_active": dropout_active,
                "at_kinks": at_kinks, "backprop": backprop, "bugs": {str(k): v for k, v in bugs.items()},
                "mistake": mistake, "where": where, "examples": len(y), "batched": batched, "seed": cfg.seed,
                "has_dropout": has_dropout}
    return GradCheck(rows, pairs, relative_difference(torch.cat(all_num), torch.cat(all_bp)), settings, notes)



def check_seeds(cfg: RunConfig, seeds: int, **kwargs) -> Iterator[GradCheck]:
    """:func:`check_gradients` of the config at ``seeds`` initializations, seeds ``cfg.seed``, ``cfg.seed + 1``, ...
    (each seed its own initial weights and check batch; each result's settings name its seed)."""
    for seed in range(cfg.seed, cfg.seed + seeds):
        yield check_gradients(cfg.replace(seed=seed), **kwargs)
