"""The network diagram of a 2-D set (issue 24.2): every neuron's activation over the input plane, every weight.

At each log point the loop (core.engine.train) adds to a lane's :class:`core.engine.events.DecisionBoundary` the
maps of its neurons on a coarse grid covering the same plane as the class regions (``map_xs`` by ``map_ys``) and
its weight matrices (the diagram's edges). A neuron's map is its output in eval mode: the inputs themselves, each
hidden unit as the next weight layer reads it (after its norm, activation and any residual sum), each class's
softmax probability. Only networks small enough to draw get one (:func:`diagram_problem`).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from core.engine.config import TOY_DATASETS, RunConfig
from core.engine.models import build_model, weight_layers

DIAGRAM_MAX_LAYERS = 8  # hidden layers the diagram draws at most
DIAGRAM_MAX_UNITS = 16  # units per hidden layer the diagram draws at most
NEURON_GRID_SIZE = 20  # points per side of each neuron's map (the class regions' plane, coarser)
DIAGRAM_LIMIT = (f"the network diagram draws multilayer perceptrons on a 2-D toy set with at most "
                 f"{DIAGRAM_MAX_LAYERS} hidden layers of at most {DIAGRAM_MAX_UNITS} units each")


def diagram_problem(cfg: RunConfig) -> str:
    """Why ``cfg``'s network gets no diagram, naming the limit ("" when it gets one)."""
    if cfg.dataset not in TOY_DATASETS:
        return f"No network diagram: {DIAGRAM_LIMIT}, and {cfg.dataset} is not one of them ({', '.join(TOY_DATASETS)})."
    if cfg.arch != "mlp":
        return f"No network diagram: {DIAGRAM_LIMIT}; this is a {cfg.arch.upper()}."
    if cfg.depth > DIAGRAM_MAX_LAYERS or max(cfg.hidden, default=0) > DIAGRAM_MAX_UNITS:
        return (f"No network diagram for this network: {DIAGRAM_LIMIT}, and it has {cfg.depth} hidden "
                f"layer{'s' if cfg.depth != 1 else ''} of up to {max(cfg.hidden, default=0)} units. "
                "Every other chart is drawn as usual.")
    return ""


class NeuronMaps:
    """Per drawable lane, a copy of its network kept in eval mode; :meth:`diagram` loads the lane's weights into it
    and reads every neuron on the grid in one forward."""

    def __init__(self, configs: list[RunConfig], xs: torch.Tensor, ys: torch.Tensor, inputs: torch.Tensor,
                 n_classes: int, device: torch.device):
        self.xs, self.ys, self.inputs = xs.cpu().numpy(), ys.cpu().numpy(), inputs
        self.models: list[nn.Module | None] = [
            None if diagram_problem(c) else build_model(c, (2,), n_classes).to(device).eval() for c in configs]
        shape = (len(self.ys), len(self.xs))
        self.input_maps = inputs.T.reshape(2, *shape).cpu().numpy().astype(np.float32)
        self.readers = [_reader(m) for m in self.models]
        # each drawn model's parameters and buffers by state_dict name: a lane's weights are copied straight in
        # (load_state_dict's checks and hooks cost as much as the forward itself at every log point)
        self.targets = [m.state_dict(keep_vars=True) if m is not None else None for m in self.models]

    @property
    def any(self) -> bool:
        return any(m is not None for m in self.models)

    @torch.no_grad()
    def diagram(self, lane: int, state: dict[str, torch.Tensor]) -> dict | None:
        """Lane ``lane``'s diagram for its weights ``state`` (its model's state_dict): the DecisionBoundary fields
        map_xs, map_ys, neuron_maps ([units, ny, nx] per layer, inputs first, class probabilities last) and
        edge_weights ([out, in] per weight layer); None when the lane is not drawn."""
        model = self.models[lane]
        if model is None:
            return None
        targets = self.targets[lane]
        for name, value in state.items():
            targets[name].copy_(value)
        seen, weights = self.readers[lane]
        seen.clear()
        probs = torch.softmax(model(self.inputs), dim=1)
        shape = (len(self.ys), len(self.xs))
        hidden = [h.T.reshape(-1, *shape) for h in seen]
        maps = [self.input_maps] + [m.cpu().numpy() for m in hidden + [probs.T.reshape(-1, *shape)]]
        return {"map_xs": self.xs, "map_ys": self.ys, "neuron_maps": maps,
                "edge_weights": [w.detach().cpu().numpy().copy() for w in weights]}


def _reader(model: nn.Module | None) -> tuple[list[torch.Tensor], list[torch.Tensor]] | None:
    """(what each weight layer after the first reads in a forward: the hidden layers' outputs, in order; the weight
    matrices), the first filled by hooks that stay on ``model``."""
    if model is None:
        return None
    seen: list[torch.Tensor] = []
    layers = [m for _, m in weight_layers(model)]
    for layer in layers[1:]:
        layer.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    return seen, [layer.weight for layer in layers]
