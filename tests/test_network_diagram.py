"""The network diagram (issue 24.2) against the model itself: each neuron's map is the final model's output at the
drawn grid points (read with hooks of its own), each edge its weight; lanes trained together draw what they draw
alone; a network too large gets no diagram and a reason naming the limit; only the latest diagram is kept. And the
library's weight histograms overlaid (issue 24.6): the figure draws the stored histories."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from app.figures.compare import histogram_overlay_figure
from app.figures.network import NODES_TRACE, network_figure, neuron_figure
from app.records.compare import histogram_at, shared_layers
from app.records.network import network_diagram
from app.records.run import weight_histories
from core.engine.batched import StackedLanes
from core.engine.catalog import load_dataset
from core.engine.config import RunConfig
from core.engine.events import decode_events, encode_events, keep_latest
from core.engine.models import Residual, build_model, weight_layers
from core.engine.neurons import DIAGRAM_MAX_LAYERS, DIAGRAM_MAX_UNITS, NEURON_GRID_SIZE, diagram_problem
from core.engine.train import grid_inputs
from core.serve.jobs import JobManager
from core.serve.store import RunStore
from helpers import of_kind, plotly_values, train_events, train_lanes_events

MOONS = RunConfig(dataset="moons", hidden=(16, 16), epochs=6, lr=0.01, log_every=10)


def _oracle(cfg: RunConfig, weights: dict, xs: np.ndarray, ys: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(each hidden layer's outputs and the class probabilities as [units, ny, nx], the weight matrices) of the model
    built from ``weights``, walked block by block on the grid: a hidden layer's output is what enters the next block."""
    model = build_model(cfg, (2,), load_dataset(cfg.dataset, cfg.data_noise).n_classes)
    model.load_state_dict({name: torch.from_numpy(w) for name, w in weights.items()})
    model.eval()
    h, outputs, blocks = grid_inputs(torch.from_numpy(xs), torch.from_numpy(ys)), [], 0
    with torch.no_grad():
        for module in model:
            if isinstance(module, (nn.Linear, Residual)):
                if blocks:
                    outputs.append(h.clone())
                blocks += 1
            h = module(h)
    outputs.append(h.softmax(dim=1))
    shape = (len(ys), len(xs))
    return ([o.T.reshape(-1, *shape).numpy() for o in outputs],
            [m.weight.detach().numpy() for _, m in weight_layers(model)])


@pytest.mark.parametrize("cfg", [MOONS, MOONS.replace(dataset="spiral", hidden=(8, 8, 8), activation="tanh",
                                                      residual=True, norm="layernorm", dropout=0.1),
                                 MOONS.replace(dataset="blobs", hidden=(12,), norm="batchnorm")],
                         ids=["moons", "spiral-residual-layernorm-dropout", "blobs-batchnorm"])
def test_the_last_diagram_is_the_final_models_neurons_and_weights(cfg):
    end, events = train_events(cfg)
    assert end.status == "finished"
    last = of_kind(events, "boundary")[-1]
    assert last.step == end.step and len(last.map_xs) == len(last.map_ys) == NEURON_GRID_SIZE
    # the same plane as the class regions, coarser
    assert (last.map_xs[0], last.map_xs[-1], last.map_ys[0], last.map_ys[-1]) == pytest.approx(
        (last.xs[0], last.xs[-1], last.ys[0], last.ys[-1]))
    hidden_and_classes, weights = _oracle(cfg, of_kind(events, "weights")[0].weights, last.map_xs, last.map_ys)
    maps = last.neuron_maps
    assert [len(m) for m in maps] == [2, *cfg.hidden, len(end.confusion)]
    gx, gy = np.meshgrid(last.map_xs, last.map_ys)
    np.testing.assert_allclose(maps[0], np.stack([gx, gy]), rtol=1e-6)  # the inputs: x1, x2 at each point
    for drawn, oracle in zip(maps[1:], hidden_and_classes, strict=True):
        np.testing.assert_allclose(drawn, oracle, rtol=1e-4, atol=1e-5)
    for drawn, oracle in zip(last.edge_weights, weights, strict=True):
        np.testing.assert_array_equal(drawn, oracle)
    np.testing.assert_allclose(maps[-1].sum(axis=0), 1.0, atol=1e-5)  # probabilities
    k = len(end.confusion)
    assert end.test_acc > 1 / k and end.test_loss < math.log(k)  # it learned: the maps are of a trained network


def test_every_log_interval_draws_the_network_and_earlier_diagrams_are_not_the_last():
    _, events = train_events(MOONS)
    boundaries, evals = of_kind(events, "boundary"), of_kind(events, "eval")
    assert [b.step for b in boundaries] == [e.step for e in evals if e.step % MOONS.log_every == 0 or e is evals[-1]]
    assert len(boundaries) > 2
    assert all(b.neuron_maps is not None for b in boundaries)
    assert not np.allclose(boundaries[0].edge_weights[0], boundaries[-1].edge_weights[0])  # it moved while training


def test_lanes_trained_together_draw_the_diagram_each_draws_alone():
    configs = [MOONS, MOONS.replace(lr=0.03, hidden=(8, 8)), MOONS.replace(hidden=(32,))]
    ends, lanes = train_lanes_events(configs, StackedLanes, live_boundary=True)
    assert all(e.status == "finished" for e in ends)
    for cfg, together in zip(configs[:2], lanes):
        alone = of_kind(train_events(cfg)[1], "boundary")[-1]
        drawn = of_kind(together, "boundary")[-1]
        for a, b in zip(drawn.neuron_maps + drawn.edge_weights, alone.neuron_maps + alone.edge_weights, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    assert of_kind(lanes[2], "boundary")[-1].neuron_maps is None  # too wide to draw: its regions only
    assert of_kind(lanes[2], "boundary")[-1].pred is not None


def test_a_network_too_large_gets_no_diagram_and_a_reason_naming_the_limit():
    wide = MOONS.replace(hidden=(DIAGRAM_MAX_UNITS + 1,), epochs=1)
    deep = MOONS.replace(hidden=(4,) * (DIAGRAM_MAX_LAYERS + 1), epochs=1)
    for cfg in (wide, deep):
        problem = diagram_problem(cfg)
        assert f"at most {DIAGRAM_MAX_LAYERS} hidden layers of at most {DIAGRAM_MAX_UNITS} units" in problem
        assert f"{cfg.depth} hidden layer" in problem
        boundaries = of_kind(train_events(cfg)[1], "boundary")
        assert boundaries and all(b.neuron_maps is None and b.pred is not None for b in boundaries)
    assert "2-D toy set" in diagram_problem(RunConfig(dataset="digits", hidden=(8,)))
    assert diagram_problem(MOONS.replace(hidden=(DIAGRAM_MAX_UNITS,) * DIAGRAM_MAX_LAYERS)) == ""
    assert network_diagram(of_kind(train_events(wide)[1], "boundary")[-1], wide.to_dict(), ["a", "b"]) is None


def test_only_the_latest_diagram_is_kept_and_it_survives_the_store_encoding():
    _, events = train_events(MOONS.replace(epochs=2))
    thinned = keep_latest(events, "boundary")
    boundaries = of_kind(events, "boundary")
    assert len(thinned) == len(boundaries) - 1
    assert all(b.neuron_maps is None and b.edge_weights is None and b.map_xs is None for b in boundaries[:-1])
    decoded, _ = decode_events(*encode_events(events))
    last, kept = of_kind(decoded, "boundary")[-1], boundaries[-1]
    for a, b in zip(last.neuron_maps + last.edge_weights, kept.neuron_maps + kept.edge_weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_stored_run_keeps_the_final_diagram_only_and_it_is_the_stored_weights_own(isolated_cache):
    manager = JobManager(RunStore(isolated_cache / "runs"))
    key = manager.submit(MOONS)
    assert manager.wait(key, timeout=120).status == "finished"
    events = manager.store.get(key).events
    boundaries = of_kind(events, "boundary")
    assert [b.neuron_maps is not None for b in boundaries] == [False] * (len(boundaries) - 1) + [True]
    last = boundaries[-1]
    hidden_and_classes, _ = _oracle(MOONS, of_kind(events, "weights")[0].weights, last.map_xs, last.map_ys)
    for drawn, oracle in zip(last.neuron_maps[1:], hidden_and_classes, strict=True):
        np.testing.assert_allclose(drawn, oracle, rtol=1e-4, atol=1e-5)


def test_the_figures_draw_the_maps_and_weights_the_run_recorded():
    end, events = train_events(MOONS.replace(hidden=(6, 5), epochs=2))
    last = of_kind(events, "boundary")[-1]
    diagram = network_diagram(last, MOONS.to_dict(), ["upper moon", "lower moon"])
    fig = network_figure(diagram, selected=(1, 2)).to_plotly_json()
    maps = [plotly_values(t["z"]) for t in fig["data"] if t["type"] == "heatmap"]
    flat = [m for column in last.neuron_maps for m in column]
    assert len(maps) == len(flat) == 2 + 6 + 5 + 2
    for drawn, recorded in zip(maps, flat):
        np.testing.assert_allclose(drawn, recorded, atol=5e-5)
    nodes = next(t for t in fig["data"] if t.get("name") == NODES_TRACE)
    assert [tuple(c) for c in nodes["customdata"]] == [(c, j) for c, m in enumerate(last.neuron_maps)
                                                       for j in range(len(m))]
    edges = next(t for t in fig["data"] if t.get("name") == "weights")
    drawn = {(c, to, fro): w for w, c, to, fro in edges["customdata"]}
    assert drawn == {(c, to, fro): float(w[to, fro]) for c, w in enumerate(last.edge_weights)
                     for to in range(w.shape[0]) for fro in range(w.shape[1])}
    assert len(fig["layout"]["shapes"]) == 1  # the selected neuron outlined
    large = neuron_figure(diagram, 2, 3).to_plotly_json()["data"][0]
    np.testing.assert_allclose(plotly_values(large["z"]), last.neuron_maps[2][3], atol=5e-5)
    assert diagram.labels[-1] == ["P(upper moon)", "P(lower moon)"] and diagram.neuron(9, 0) is None


def test_the_library_overlay_draws_each_runs_stored_histogram_of_the_layer():
    runs = [train_events(MOONS.replace(hidden=(8,), epochs=2, lr=lr))[1] for lr in (0.01, 0.3)]
    histories = [weight_histories(events) for events in runs]
    assert shared_layers(histories) == ["fc1", "fc2"]
    for at, t in ((1.0, -1), (0.0, 0)):
        picked = [(i, f"run {i}", histogram_at(next(h for h in hs if h.layer == "fc2"), at))
                  for i, hs in enumerate(histories)]
        fig = histogram_overlay_figure("fc2", picked, "at the last log point").to_plotly_json()
        assert len(fig["data"]) == 2
        for trace, hs in zip(fig["data"], histories):
            history = next(h for h in hs if h.layer == "fc2")
            counts = history.counts[:, t]
            np.testing.assert_allclose(plotly_values(trace["customdata"]), counts / counts.sum())
            np.testing.assert_allclose(plotly_values(trace["y"]), counts / counts.sum() / np.diff(history.edges))
            assert (plotly_values(trace["y"]) * np.diff(history.edges)).sum() == pytest.approx(1.0)  # a density
            np.testing.assert_allclose(plotly_values(trace["x"]), (history.edges[:-1] + history.edges[1:]) / 2)
            assert str(history.steps[t]) in trace["hovertemplate"].replace(",", "")
