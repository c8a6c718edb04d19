"""Loss surface: origin = the trained model's loss, the path ends at the origin, filter normalization, the job."""
from __future__ import annotations

import math

import pytest
import torch

from core.engine.config import ConfigError, RunConfig
from core.engine.events import SurfaceRow, SurfaceStarted, decode_events, encode_events
from core.serve.jobs import JobManager
from core.engine.models import build_model
from core.serve.store import RunStore
from core.lab.surface import (SurfaceConfig, filter_normalized, pca_directions, project, random_directions,
                          run_surface, surface_grid, train_recording, training_subset)
from core.engine.lanes import evaluate

RUN = RunConfig(dataset="digits", hidden=(32,), epochs=2, log_every=10, lr=0.01)


def _surface(cfg: SurfaceConfig):
    events = []
    end = run_surface(cfg, events.append)
    return end, events


@pytest.mark.parametrize("directions", ["pca", "random"])
@pytest.mark.parametrize("norm", ["none", "batchnorm"])
def test_origin_is_the_final_models_loss_and_the_path_ends_there(directions, norm):
    run = RUN.replace(norm=norm)
    cfg = SurfaceConfig(run=run, directions=directions, resolution=7, n_examples=300)
    end, events = _surface(cfg)
    assert end.kind == "finished" and end.status == "finished"
    started, rows = surface_grid(events)
    assert all(r is not None and len(r) == 7 for r in rows)
    # an independent retrain of the same config gives the same final model; its loss on the same subset:
    recorded = train_recording(run)
    x, y = training_subset(run, 300, torch.device("cpu"))
    scores = evaluate(run, recorded.model, x, y)
    expected, acc = scores.loss[0], scores.acc[0]
    assert started.xs[3] == 0 and started.ys[3] == 0
    assert rows[3][3] == pytest.approx(expected, rel=1e-5)
    assert expected < math.log(10)  # the network did learn (10 classes)
    assert started.path[-1] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert started.path_losses[-1] == pytest.approx(expected, rel=1e-5)  # the path's end is the origin
    assert started.path_steps[0] == 0 and started.path_steps[-1] == end.step
    assert len(started.path) == len(started.path_steps) == len(recorded.snapshots)
    # moving off the trained weights by the full span makes the loss worse somewhere along each axis
    assert max(rows[3][0], rows[3][-1]) > rows[3][3] and max(rows[0][3], rows[-1][3]) > rows[3][3]
    assert 0.0 <= started.explained <= 1.0 + 1e-9


def test_filter_normalization_gives_each_filter_its_weights_norm():
    gen = torch.Generator().manual_seed(0)
    for shape in ((16, 9), (8, 3, 3, 3)):
        weight, direction = torch.randn(shape, generator=gen) * 0.3, torch.randn(shape, generator=gen)
        d = filter_normalized(direction, weight)
        assert d.shape == weight.shape
        torch.testing.assert_close(d.reshape(shape[0], -1).norm(dim=1), weight.reshape(shape[0], -1).norm(dim=1))
        # each filter keeps the random direction's orientation
        cos = torch.nn.functional.cosine_similarity(d.reshape(shape[0], -1), direction.reshape(shape[0], -1), dim=1)
        torch.testing.assert_close(cos, torch.ones(shape[0]))
    assert torch.equal(filter_normalized(torch.randn(5), torch.randn(5)), torch.zeros(5))


def test_random_directions_are_filter_normalized_per_parameter():
    model = build_model(RunConfig(arch="cnn", dataset="digits", hidden=(16,)), (1, 8, 8), 10, torch.Generator().manual_seed(0))
    dirs = random_directions(model, seed=1)
    offset = 0
    for p in model.parameters():
        part = dirs[0, offset:offset + p.numel()].reshape(p.shape)
        offset += p.numel()
        if p.dim() > 1:
            torch.testing.assert_close(part.reshape(len(p), -1).norm(dim=1), p.detach().reshape(len(p), -1).norm(dim=1))
        else:
            assert not part.any()
    assert offset == dirs.shape[1]
    assert not torch.allclose(dirs[0], dirs[1])


def test_pca_recovers_a_trajectory_that_lies_in_a_plane():
    gen = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(50, 2, generator=gen, dtype=torch.float64))
    t = torch.linspace(0, 1, 30, dtype=torch.float64)
    coords = torch.stack([3 * (1 - t), torch.sin(4 * t) * (1 - t)], dim=1)  # ends at (0, 0)
    final = torch.randn(50, generator=gen, dtype=torch.float64)
    snapshots = final + coords @ basis.T
    dirs, shares = pca_directions(snapshots)
    assert sum(shares) == pytest.approx(1.0)
    projected, explained, along = project(snapshots, dirs)
    assert explained == pytest.approx(1.0)
    assert sum(along) == pytest.approx(1.0)
    # the projection reproduces every point of the path (up to a rotation within the plane)
    torch.testing.assert_close(projected @ dirs, coords @ basis.T)
    torch.testing.assert_close(projected[-1], torch.zeros(2, dtype=torch.float64))
    # a direction orthogonal to the plane explains nothing
    other = torch.randn(2, 50, generator=gen, dtype=torch.float64)
    other = other - (other @ basis) @ basis.T
    assert project(snapshots, other)[1] == pytest.approx(0.0, abs=1e-12)


def test_surface_job_is_stored_served_again_and_its_events_round_trip(tmp_path):
    cfg = SurfaceConfig(run=RUN.replace(epochs=1), directions="pca", resolution=5, n_examples=200)
    manager = JobManager(RunStore(tmp_path / "runs"))
    key = manager.submit(cfg)
    assert key.startswith("surface-")
    snap = manager.wait(key, timeout=300)
    assert snap.status == "finished", snap.error
    assert sum(isinstance(e, SurfaceRow) for e in snap.events) == 5
    assert manager.store.meta(key)["kind"] == "surface"
    assert cfg.run.key() in manager.store  # the training run is filed under its own key too
    again = JobManager(RunStore(tmp_path / "runs"))
    again.submit(cfg)
    assert again.snapshot(key).from_cache
    events, _ = decode_events(*encode_events(snap.events))
    assert surface_grid(events)[1] == surface_grid(snap.events)[1]
    assert isinstance(next(e for e in events if e.kind == "surface_started"), SurfaceStarted)


def test_bad_surface_settings_are_refused_with_every_problem_named():
    with pytest.raises(ConfigError) as err:
        SurfaceConfig(directions="hessian", resolution=40, n_examples=0)
    assert set(err.value.problems) == {"directions", "resolution", "n_examples"}
    assert SurfaceConfig.from_dict(SurfaceConfig(run=RUN).to_dict()) == SurfaceConfig(run=RUN)
    with pytest.raises(ConfigError, match="Unknown surface setting"):
        SurfaceConfig.from_dict({"colour": "red"})


def test_pca_without_enough_log_points_fails_with_a_clear_message():
    cfg = SurfaceConfig(run=RUN.replace(epochs=1, log_every=100_000), directions="pca", resolution=3, n_examples=50)
    end, _ = _surface(cfg)
    assert end.kind == "failed" and "log more often" in end.message
