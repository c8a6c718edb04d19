"""Server caps on jobs (cost, memory, queue, finished-job memory) and clear CLI messages (issue 14 items 2, 9)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import core.lab.grid
from core.serve import budget
from core.__main__ import main
from core.engine.config import RunConfig
from core.engine.events import LayerStats, StepLosses
from core.lab.grid import GridConfig
from core.serve.budget import Refused
from core.serve.jobs import JobManager
from core.engine.models import build_model, count_parameters
from core.serve.store import RunStore


@pytest.fixture
def idle_manager(isolated_cache):
    """A manager with no workers: submitted jobs stay queued (what a busy server looks like)."""
    return JobManager(RunStore(isolated_cache / "runs"), workers={"cpu": 0, "cuda": 0})


@pytest.mark.parametrize("cfg", [RunConfig(hidden=(32, 16)), RunConfig(hidden=(), norm="batchnorm"),
                                 RunConfig(hidden=(8, 8, 8), norm="layernorm"), RunConfig(arch="cnn", hidden=(12,)),
                                 RunConfig(arch="cnn", hidden=(5,), norm="batchnorm")])
def test_parameter_count_matches_the_built_model(cfg):
    params, _ = budget.count_parameters(cfg, (1, 8, 8), 10)
    assert params == count_parameters(build_model(cfg, (1, 8, 8), 10))


def test_a_huge_network_is_refused_naming_the_cap_and_the_estimate(idle_manager):
    with pytest.raises(Refused, match=r"GRADIENT_LAB_MAX_JOB_MEMORY_MB.*|.*MB of memory") as info:
        idle_manager.submit(RunConfig(hidden=(4096,) * 20))
    assert "GRADIENT_LAB_MAX_JOB_MEMORY_MB" in str(info.value) and "parameters" in str(info.value)
    assert idle_manager.counts() == {"queued": 0, "running": 0}


def test_cost_cap_comes_from_the_environment(idle_manager, monkeypatch):
    cfg = RunConfig(hidden=(64, 64), epochs=10)
    est = budget.estimate(cfg)
    monkeypatch.setenv("GRADIENT_LAB_MAX_JOB_COST", str(est.cost / 2))
    with pytest.raises(Refused, match="GRADIENT_LAB_MAX_JOB_COST") as info:
        idle_manager.submit(cfg)
    assert f"{est.cost:.3g}" in str(info.value)
    monkeypatch.setenv("GRADIENT_LAB_MAX_JOB_COST", str(est.cost * 2))
    assert idle_manager.submit(cfg) == cfg.key()
    # cost grows with epochs as parameters x examples x epochs
    assert budget.estimate(cfg.replace(epochs=20)).cost == pytest.approx(2 * est.cost)


def test_a_grid_is_refused_on_the_sum_of_its_cells_before_it_is_planned(idle_manager, monkeypatch):
    base = RunConfig(hidden=(1024, 1024), epochs=1)
    one = budget.estimate(base)
    monkeypatch.setenv("GRADIENT_LAB_MAX_JOB_MEMORY_MB", str((2.5 * one.model_bytes + one.data_bytes) / 2**20))
    planned = []
    monkeypatch.setattr(core.lab.grid, "plan_family", lambda cells: planned.append(cells))
    assert idle_manager.submit(base) == base.key()  # one cell fits
    grid = GridConfig(base=base, activations=("relu", "tanh", "sigmoid", "gelu"))
    with pytest.raises(Refused, match="GRADIENT_LAB_MAX_JOB_MEMORY_MB"):
        idle_manager.submit(grid)
    assert planned == []


def test_queue_is_bounded_per_session_and_in_total(idle_manager, monkeypatch):
    monkeypatch.setenv("GRADIENT_LAB_MAX_QUEUED_PER_SESSION", "2")
    monkeypatch.setenv("GRADIENT_LAB_MAX_QUEUED", "3")
    cfgs = [RunConfig(seed=i, epochs=1) for i in range(5)]
    idle_manager.submit(cfgs[0], session="alice")
    idle_manager.submit(cfgs[1], session="alice")
    assert idle_manager.submit(cfgs[0], session="bob") == cfgs[0].key()  # joining a live job is free
    with pytest.raises(Refused, match="GRADIENT_LAB_MAX_QUEUED_PER_SESSION = 2"):
        idle_manager.submit(cfgs[2], session="alice")
    idle_manager.submit(cfgs[2], session="bob")
    with pytest.raises(Refused, match="GRADIENT_LAB_MAX_QUEUED = 3"):
        idle_manager.submit(cfgs[3], session="carol")
    assert idle_manager.cancel(cfgs[2].key())
    assert idle_manager.counts()["queued"] == 3  # the cancelled one ends when a worker takes it


def test_finished_jobs_in_memory_are_bounded_by_bytes(isolated_cache, monkeypatch):
    limit_mb = 3
    monkeypatch.setenv("GRADIENT_LAB_MAX_DONE_JOBS_MB", str(limit_mb))
    store = RunStore(isolated_cache / "runs")
    heat = np.random.default_rng(0).random((4096, 64), dtype=np.float32)  # 1 MB per run
    for i in range(8):
        store.put(f"run-{i}", {}, [StepLosses(1, [1.0]), LayerStats(1, 0.5, ["fc1"], [0.1], [0.01], [0.001], [None],
                                                                      [heat])])
    manager = JobManager(store)
    for i in range(8):
        assert manager.snapshot(f"run-{i}").n_events == 2
        assert manager.memory_bytes() <= limit_mb * 2**20
    assert manager.memory_bytes() >= 2 * heat.nbytes  # it still keeps what fits


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_a_clear_refusal(idle_manager, isolated_cache, capsys):
    with pytest.raises(Refused, match="no CUDA GPU"):
        idle_manager.submit(RunConfig(device="cuda"))
    assert main(["run", "--preset", "A-sigmoid-depth", "--set", "device=cuda", "--set", "dataset=digits",
                 "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "Traceback" not in err


def test_cli_names_an_unknown_setting_and_lists_the_known_ones(isolated_cache, capsys):
    assert main(["run", "--preset", "A-sigmoid-depth", "--set", "nosuch=1"]) == 2
    err = capsys.readouterr().err
    assert "Unknown setting 'nosuch'" in err and "batch_size" in err and "hidden" in err


@pytest.mark.parametrize("setting,expected", [("hidden", "each width must be in [1, 4096]"),
                                              ("epochs", "out of range: allowed [1, 200]"),
                                              ("lr", "out of range: allowed (0, 1000]")])
def test_a_5000_digit_number_gets_the_range_message(isolated_cache, capsys, setting, expected):
    assert main(["run", "--preset", "A-sigmoid-depth", "--set", f"{setting}={'9' * 5000}"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "4300" not in err and len(err) < 400
