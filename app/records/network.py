"""A run's network diagram as a page draws it: the latest log point's neuron maps and weights, named.

Pure (no Streamlit): from the :class:`core.engine.events.DecisionBoundary` a run view keeps (core.engine.neurons
fills its diagram fields for a network small enough to draw).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class NetworkDiagram:
    """Columns of neurons (inputs, each hidden layer, the classes), each neuron's map on ``xs`` by ``ys`` and the
    weight matrix [out, in] between each column and the next."""

    step: int
    xs: np.ndarray
    ys: np.ndarray
    maps: list[np.ndarray]  # per column [units, ny, nx]
    weights: list[np.ndarray]  # per pair of columns [units of the next, units of this]
    titles: list[str]  # per column
    labels: list[list[str]]  # per column, per neuron

    def neuron(self, column: int, unit: int) -> tuple[str, np.ndarray] | None:
        """(label, map) of one neuron (None when the diagram has no such neuron)."""
        if 0 <= column < len(self.maps) and 0 <= unit < len(self.maps[column]):
            return self.labels[column][unit], self.maps[column][unit]
        return None


def network_diagram(boundary, config: dict, classes: list[str]) -> NetworkDiagram | None:
    """The diagram a boundary event carries (None without one: a network too large, or a run stored before)."""
    if boundary is None or getattr(boundary, "neuron_maps", None) is None:
        return None
    maps, weights = list(boundary.neuron_maps), list(boundary.edge_weights)
    depth = len(maps) - 2
    activation = config.get("activation", "")
    activations = list(activation) if isinstance(activation, (list, tuple)) else [activation] * depth
    titles = ["inputs"] + [f"layer {k + 1}" + (f" · {activations[k]}" if k < len(activations) else "")
                           for k in range(depth)] + ["class probabilities"]
    labels = [["x₁", "x₂"]] + [[f"layer {k + 1}, unit {j + 1}" for j in range(len(maps[k + 1]))] for k in range(depth)]
    labels.append([f"P({classes[c]})" if c < len(classes) else f"P(class {c})" for c in range(len(maps[-1]))])
    return NetworkDiagram(boundary.step, np.asarray(boundary.map_xs), np.asarray(boundary.map_ys), maps, weights,
                          titles, labels)
