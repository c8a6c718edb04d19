"""The loss surface of a trained network over a 2-D plane through its final weights, with its path.

A :class:`SurfaceConfig` names a run and how to span the plane:

- ``random``: two random directions, filter-normalized (Li et al. 2018, "Visualizing the Loss
  Landscape of Neural Nets"): each filter (a row of a linear weight, an output channel of a
  convolution) of a direction is scaled to the norm of the same filter of the weights; biases
  and normalization parameters get zero (the paper's "ignore biasbn").
- ``pca``: the top two principal directions of the recorded weight trajectory (the weights at
  every log point, minus the final weights).

:func:`run_surface` is a job (kind "surface"): it trains the run through the one training loop,
recording flattened weights at each log point for this job only, projects the path onto the
plane, reports the variance the plane explains, then evaluates the data loss on a fixed subset
of training examples at every grid point, a batch of points at once (``torch.func.functional_call``
under ``vmap``), emitting each grid row as it fills.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call

from core.engine import catalog
from core.engine import data as datasets
from core.engine.config import ConfigError, RunConfig
from core.engine.task import TaskConfig, reject_unknown
from core.engine.events import CellEvent, Event, RunFailed, RunFinished, SurfaceRow, SurfaceStarted
from core.engine.lanes import ModuleLanes, data_loss, evaluate
from core.engine.train import resolve_device, train_lanes

DIRECTIONS = ("random", "pca")
MAX_RESOLUTION = 101
MAX_EXAMPLES = 20000
EVAL_FLOATS = 1 << 25  # activations held at once while evaluating a batch of grid points
PCA_MARGIN = 1.25  # the PCA plane's grid covers the projected path times this (times span)


@dataclass(frozen=True)
class SurfaceConfig(TaskConfig):
    """A run and the plane to draw its loss over (see the module docstring)."""

    KIND: ClassVar[str] = "surface"

    run: RunConfig = field(default_factory=RunConfig)
    directions: str = "pca"
    resolution: int = 41  # grid points per axis (odd, so the final weights are a grid point)
    span: float = 1.0  # random: coordinates in [-span, span]; pca: span x the path's extent (x 1.25)
    n_examples: int = 2048
    direction_seed: int = 0

    def __post_init__(self) -> None:
        problems = {}
        if self.directions not in DIRECTIONS:
            problems["directions"] = f"directions = {self.directions!r} is not allowed: one of {', '.join(DIRECTIONS)}"
        if not (isinstance(self.resolution, int) and 3 <= self.resolution <= MAX_RESOLUTION and self.resolution % 2):
            problems["resolution"] = f"resolution = {self.resolution!r}: an odd whole number in [3, {MAX_RESOLUTION}]"
        if not (isinstance(self.span, (int, float)) and 0 < self.span <= 100):
            problems["span"] = f"span = {self.span!r}: a number in (0, 100]"
        if not (isinstance(self.n_examples, int) and 1 <= self.n_examples <= MAX_EXAMPLES):
            problems["n_examples"] = f"n_examples = {self.n_examples!r}: a whole number in [1, {MAX_EXAMPLES}]"
        if not (isinstance(self.direction_seed, int) and self.direction_seed >= 0):
            problems["direction_seed"] = f"direction_seed = {self.direction_seed!r}: a whole number >= 0"
        if problems:
            raise ConfigError(problems)

    @property
    def device(self) -> str:
        return self.run.device

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run.to_dict(), **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                                             if f.name != "run"}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SurfaceConfig":
        data = dict(data)
        run = RunConfig.from_dict(data.pop("run", {}))
        reject_unknown(data, (f.name for f in dataclasses.fields(cls)), "surface")
        return cls(run=run, **data)


# --- recording the trajectory -------------------------------------------------------------------
def flat_parameters(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


class RecordingLanes(ModuleLanes):
    """An ordinary single-model lane that also keeps its flattened weights at every log point."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.snapshots = [flat_parameters(self.model).cpu()]

    def layer_stats(self, probe_x: torch.Tensor, lanes: Sequence[int] = (0,), heatmaps: bool = True) -> list[dict | None]:
        self.snapshots.append(flat_parameters(self.model).cpu())
        return super().layer_stats(probe_x, lanes, heatmaps)


@dataclass
class Recorded:
    """A trained run with its weight trajectory: ``snapshots[i]`` are the weights at ``steps[i]``."""

    end: Event
    model: nn.Module | None
    snapshots: torch.Tensor  # [points, parameters]
    steps: list[int]


def train_recording(cfg: RunConfig, emit: Callable[[Event], None] = lambda e: None,
                    cancel: threading.Event | None = None) -> Recorded:
    """Train ``cfg`` through the one loop, keeping the weights at step 0 and at every log point."""
    made: list[RecordingLanes] = []
    steps = [0]

    def make_lanes(*args: Any) -> RecordingLanes:
        made.append(RecordingLanes(*args))
        return made[-1]

    def on_event(event: Event) -> None:
        if event.kind == "eval":
            steps.append(event.step)
        emit(event)

    (end,) = train_lanes([cfg], make_lanes, [on_event], cancel, [cfg.key()])
    if not made:
        return Recorded(end, None, torch.zeros(0, 0), [])
    lanes = made[0]
    return Recorded(end, lanes.model, torch.stack(lanes.snapshots), steps[:len(lanes.snapshots)])


# --- the plane ----------------------------------------------------------------------------------
def filter_normalized(direction: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Scale each filter (slice along dim 0) of ``direction`` to the norm of the same filter of
    ``weight``; a 1-D parameter (bias, norm scale/shift) gets a zero direction."""
    if weight.dim() <= 1:
        return torch.zeros_like(weight)
    d = direction.reshape(len(direction), -1)
    w = weight.reshape(len(weight), -1)
    scale = w.norm(dim=1, keepdim=True) / (d.norm(dim=1, keepdim=True) + 1e-10)
    return (d * scale).reshape(weight.shape)


def random_directions(model: nn.Module, seed: int) -> torch.Tensor:
    """Two filter-normalized random directions, flattened like :func:`flat_parameters` ([2, P])."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(2):
        parts = [filter_normalized(torch.randn(p.shape, generator=gen), p.detach().cpu()).reshape(-1)
                 for p in model.parameters()]
        rows.append(torch.cat(parts))
    return torch.stack(rows)


def pca_directions(snapshots: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """The top two principal directions of the trajectory (weights minus the final weights), and the
    share of the trajectory's variance each explains."""
    if len(snapshots) < 3:
        raise ValueError(f"PCA directions need at least 3 recorded weight vectors, got {len(snapshots)}: "
                         "log more often (a smaller log_every) or train longer")
    offsets = snapshots - snapshots[-1]
    centered = offsets - offsets.mean(dim=0)
    _, s, vh = torch.linalg.svd(centered.double(), full_matrices=False)
    total = float((s * s).sum())
    shares = [float(s[k] ** 2) / total if total > 0 else 0.0 for k in range(2)]
    return vh[:2].to(snapshots.dtype), shares


def project(snapshots: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, float, list[float]]:
    """(coords [points, 2] of snapshots - final weights in the (possibly non-orthogonal) basis,
    share of the trajectory's variance in the plane, share along each unit direction)."""
    offsets = (snapshots - snapshots[-1]).double()
    d = directions.double()
    coords = torch.linalg.solve(d @ d.T, d @ offsets.T).T  # least squares: offsets ~ coords @ d
    centered = offsets - offsets.mean(dim=0)
    total = float((centered * centered).sum())
    q, _ = torch.linalg.qr(d.T)  # orthonormal basis of the plane
    inside = float(((centered @ q) ** 2).sum())
    unit = d / d.norm(dim=1, keepdim=True)
    along = [float(((centered @ u) ** 2).sum()) / total if total > 0 else 0.0 for u in unit]
    return coords.to(snapshots.dtype), (inside / total if total > 0 else 0.0), along


def plane_evaluator(cfg: RunConfig, model: nn.Sequential, directions: torch.Tensor, x: torch.Tensor,
                    y: torch.Tensor) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """A function from points [B, 2] to (data loss [B], accuracy [B]) of the model at
    final weights + a * d1 + b * d2, all B points in one vmapped functional call (eval mode).

    When the first weight layer is linear (the MLPs), its output on the fixed inputs is affine in
    (a, b): it is computed once for the weights and once per direction, and every point only
    combines them, F0 + a F1 + b F2, before the rest of the network runs vmapped. That first layer
    (784 x width) is most of an MLP's work, and at (0, 0) the result is the model's own output.
    """
    model.eval()
    device = next(model.parameters()).device
    sizes = [p.numel() for p in model.parameters()]
    named = list(model.named_parameters())
    split = [dict(zip([n for n, _ in named], (t.reshape(p.shape).to(device) for t, (_, p) in
                                                zip(row.split(sizes), named)))) for row in directions]
    center = {n: p.detach() for n, p in named}
    buffers = dict(model.named_buffers())
    first = next(i for i, m in enumerate(model) if isinstance(m, (nn.Linear, nn.Conv2d)))
    if isinstance(model[first], nn.Linear):
        prefix, layer, tail = model[:first], model[first], model[first + 1:]
        with torch.no_grad():
            inputs = prefix(x)
            name = f"{first}."
            affine = [functional_call(layer, {"weight": p[name + "weight"], "bias": p[name + "bias"]}, (inputs,))
                      for p in (center, *split)]
        tail_names = [n for n in center if not n.startswith(name)]

        def at(point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = affine[0] + point[0] * affine[1] + point[1] * affine[2]
            params = {n: center[n] + point[0] * split[0][n] + point[1] * split[1][n] for n in tail_names}
            logits = functional_call(tail, (params, buffers), (h,))
            return data_loss(cfg, logits, y), (logits.argmax(dim=1) == y).float().mean()
    else:
        def at(point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            params = {n: c + point[0] * split[0][n] + point[1] * split[1][n] for n, c in center.items()}
            logits = functional_call(model, (params, buffers), (x,))
            return data_loss(cfg, logits, y), (logits.argmax(dim=1) == y).float().mean()

    batched = torch.vmap(at)

    @torch.no_grad()
    def evaluate_points(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return batched(points.to(device, x.dtype))

    return evaluate_points


def training_subset(cfg: RunConfig, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random subset of ``n`` training examples (float features, labels) of the run's split."""
    ds = catalog.load_dataset(cfg.dataset, cfg.data_noise)
    train_idx, _ = datasets.split_indices(len(ds.y), cfg.val_fraction, cfg.seed)
    pick = train_idx[torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(cfg.seed + 3))[:n]]
    return datasets.batch_features(ds.x[pick]).to(device), ds.y[pick].to(device)


def points_per_batch(model: nn.Module, n_examples: int, resolution: int) -> int:
    """How many grid points to evaluate at once so their activations stay within EVAL_FLOATS."""
    acts = sum(m.out_features for m in model.modules() if isinstance(m, nn.Linear))
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            acts += m.out_channels * 28 * 28  # at most a full-size feature map per channel
    return max(1, min(resolution * resolution, EVAL_FLOATS // max(1, 3 * acts * n_examples)))


def grid_axes(cfg: SurfaceConfig, coords: torch.Tensor) -> tuple[list[float], list[float]]:
    """The grid's coordinates along each direction, symmetric about 0 (the final weights)."""
    half = cfg.resolution // 2
    if cfg.directions == "random":
        extents = [cfg.span, cfg.span]
    else:
        extents = [cfg.span * PCA_MARGIN * float(coords[:, k].abs().max()) or cfg.span for k in range(2)]
    return [[extent * i / half for i in range(-half, half + 1)] for extent in extents]


# --- the job ------------------------------------------------------------------------------------
def run_surface(cfg: SurfaceConfig, emit: Callable[[Event], None], cancel: threading.Event | None = None,
                file_run: Callable[[str, RunConfig, list[Event]], None] | None = None) -> RunFinished | RunFailed:
    """Train, span the plane, then evaluate the loss grid row by row (see the module docstring)."""
    t0 = time.perf_counter()
    cancel = cancel or threading.Event()
    run_events: list[Event] = []

    def on_run_event(event: Event) -> None:
        run_events.append(event)
        emit(CellEvent(0, "training", event))

    def fail(message: str, kind: str = "SurfaceFailed") -> RunFailed:
        end = RunFailed(0, message, kind, time.perf_counter() - t0)
        emit(end)
        return end

    recorded = train_recording(cfg.run, on_run_event, cancel)
    end = recorded.end
    if end.kind == "failed":
        return fail(f"training failed: {end.message}", end.error_type)
    if end.status != "finished":
        if end.status == "cancelled":
            finished = RunFinished("cancelled", end.step, end.epoch, time.perf_counter() - t0, end.reason)
            emit(finished)
            return finished
        return fail(f"the run {end.status} ({end.reason}); a loss surface needs a trained network", "RunDiverged")
    if file_run is not None:  # the trained network is a run of its own (the job manager files it)
        try:
            file_run(cfg.run.key(), cfg.run, run_events)
        except Exception:  # the surface's own record still holds the run's events
            pass
    try:
        model, snapshots = recorded.model, recorded.snapshots
        if cfg.directions == "random":
            directions = random_directions(model, cfg.direction_seed)
        else:
            directions, _ = pca_directions(snapshots)
        coords, explained, along = project(snapshots, directions)
    except ValueError as exc:
        return fail(str(exc))
    device = resolve_device(cfg.run.device)
    x, y = training_subset(cfg.run, cfg.n_examples, device)
    final_loss = evaluate(cfg.run, model, x, y).loss[0]
    xs, ys = grid_axes(cfg, coords)
    evaluate_points = plane_evaluator(cfg.run, model, directions, x, y)
    n = cfg.resolution
    per_batch = points_per_batch(model, len(y), n)
    path_losses = torch.cat([evaluate_points(chunk)[0].cpu() for chunk in coords.float().split(per_batch)])
    emit(SurfaceStarted(key=cfg.key(), directions=cfg.directions, xs=xs, ys=ys, path=coords.tolist(),
                        path_steps=recorded.steps, path_losses=path_losses.tolist(), explained=explained,
                        explained_by_direction=along, n_examples=len(y), final_loss=final_loss))
    grid = torch.tensor([[a, b] for b in ys for a in xs])  # row-major: row j is ys[j]
    losses, accs = torch.empty(n * n), torch.empty(n * n)
    next_row = 0
    for start in range(0, n * n, per_batch):
        if cancel.is_set():
            finished = RunFinished("cancelled", end.step, end.epoch, time.perf_counter() - t0,
                                   f"cancelled after {next_row} of {n} rows")
            emit(finished)
            return finished
        loss, acc = evaluate_points(grid[start:start + per_batch])
        losses[start:start + len(loss)], accs[start:start + len(loss)] = loss.cpu(), acc.cpu()
        while next_row < n and (next_row + 1) * n <= start + len(loss):
            row = slice(next_row * n, (next_row + 1) * n)
            emit(SurfaceRow(next_row, losses[row].tolist(), accs[row].tolist()))
            next_row += 1
    finished = RunFinished("finished", end.step, end.epoch, time.perf_counter() - t0,
                           f"{n} x {n} points on {len(y)} training examples", train_loss=final_loss,
                           val_loss=end.val_loss, val_acc=end.val_acc, test_loss=end.test_loss, test_acc=end.test_acc)
    emit(finished)
    return finished


def surface_grid(events: Sequence[Event]) -> tuple[SurfaceStarted | None, list[list[float] | None]]:
    """The plane and the loss rows received so far (None for rows not filled yet)."""
    started = next((e for e in events if isinstance(e, SurfaceStarted)), None)
    rows: list[list[float] | None] = [None] * (len(started.ys) if started else 0)
    for e in events:
        if isinstance(e, SurfaceRow) and e.row < len(rows):
            rows[e.row] = e.losses
    return started, rows
