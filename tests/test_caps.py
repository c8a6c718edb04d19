"""Server caps on jobs (cost, memory, queue, finished-job memory) and clear CLI messages (issue 14 items 2, 9)."""
from __future__ import annotations

import time

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
from core.engine.models import build_model
from core.engine import data as datasets
from core.lab.gradcheck.options import CheckOptions
from core.lab.gradcheck.task import GradCheckConfig
from core.lab.sweep.space import Dist, SweepConfig, data_shape
from core.serve import cobatch
from core.serve.store import RunStore


@pytest.fixture
def idle_manager(isolated_cache):
    """A manager with no workers: submitted jobs stay queued (what a busy server looks like)."""
    return JobManager(RunStore(isolated_cache / "runs"), workers={"cpu": 0, "cuda": 0})


DIGITS_SWEEP = SweepConfig(RunConfig(dataset="digits", epochs=2, hidden=(16,)),
                           (Dist("arch", "categorical", ("mlp", "cnn")), Dist("norm", "categorical", ("none", "batchnorm")),
                            Dist("width", "int", (), 8, 64)), "random", trials=6)


def test_a_sweeps_cost_counts_the_parameters_of_the_networks_it_builds():
    shape = data_shape(DIGITS_SWEEP.base)
    built = [DIGITS_SWEEP.base.replace(**point) for point in ({"arch": a, "norm": n, "hidden": (w,)}
             for a in ("mlp", "cnn") for n in ("none", "batchnorm") for w in (8, 64))]
    for cfg in built:  # one trial of each corner of the space: 6 x parameters x examples x epochs
        one = DIGITS_SWEEP.replace(base=cfg, space=(Dist("lr", "categorical", (0.01, 0.1)),))  # lr costs nothing
        params = sum(p.numel() for p in build_model(cfg, shape.input_shape, shape.n_classes).parameters())
        assert one.trial_cost(shape) == pytest.approx(6 * params * shape.n_train * cfg.epochs / 1e9)


def test_the_job_manager_refuses_a_sweep_over_its_cap(idle_manager, monkeypatch):
    cost = DIGITS_SWEEP.cost(data_shape(DIGITS_SWEEP.base))
    monkeypatch.setenv("GRADIENT_LAB_MAX_SWEEP_COST", str(cost / 2))
    with pytest.raises(Refused, match=r"above this server's cap .*\(GRADIENT_LAB_MAX_SWEEP_COST\)"):
        idle_manager.submit(DIGITS_SWEEP)
    assert idle_manager.counts() == {"queued": 0, "running": 0}
    monkeypatch.setenv("GRADIENT_LAB_MAX_SWEEP_COST", str(cost * 2))
    assert budget.check_sweep(DIGITS_SWEEP) == pytest.approx(cost)
    assert idle_manager.submit(DIGITS_SWEEP) == DIGITS_SWEEP.key()
    assert idle_manager.counts()["queued"] == 1


@pytest.mark.parametrize("name", ["GRADIENT_LAB_MAX_JOB_COST", "GRADIENT_LAB_MAX_SWEEP_COST", "GRADIENT_LAB_MAX_COBATCH",
                                  "GRADIENT_LAB_MAX_QUEUED"])
@pytest.mark.parametrize("bad", ["lots", "-3", "nan", "1e"])
def test_a_bad_cap_setting_is_refused_naming_its_variable(idle_manager, monkeypatch, name, bad):
    monkeypatch.setenv(name, bad)
    with pytest.raises(Refused, match=f"{name}=.*not a number >= 0"):
        budget.cap(name)
    with pytest.raises(Refused, match=name):
        idle_manager.submit(DIGITS_SWEEP if name == "GRADIENT_LAB_MAX_SWEEP_COST" else RunConfig(dataset="digits"))
    assert idle_manager.counts() == {"queued": 0, "running": 0}


def test_the_group_size_reads_its_cap_through_the_budget(monkeypatch):
    for raw, group in (("", 32), ("3", 3), ("0", 1), ("1e9", cobatch.HARD_MAX_COBATCH), ("inf", cobatch.HARD_MAX_COBATCH)):
        monkeypatch.setenv("GRADIENT_LAB_MAX_COBATCH", raw)
        assert cobatch.max_group() == group
    monkeypatch.setenv("GRADIENT_LAB_MAX_COBATCH", "three")
    with pytest.raises(Refused, match="GRADIENT_LAB_MAX_COBATCH"):
        cobatch.max_group()


def test_a_gradient_check_meets_the_same_caps_as_train(idle_manager, monkeypatch):
    small = GradCheckConfig(RunConfig(dataset="digits", hidden=(32, 16), norm="layernorm"), CheckOptions(examples=16))
    ds = datasets.load_dataset("digits")
    est = budget.estimate(small)
    assert est.parameters == sum(p.numel() for p in build_model(small.run, ds.input_shape, ds.n_classes).parameters())
    more = budget.estimate(small.replace(options=CheckOptions(examples=32)))
    assert more.cost == pytest.approx(2 * est.cost)  # every forward of the check batch costs parameters x examples
    assert budget.estimate(small.replace(options=CheckOptions(examples=16, precision="float32"))).memory_bytes \
        < est.memory_bytes
    monkeypatch.setenv("GRADIENT_LAB_MAX_JOB_COST", str(est.cost / 2))
    with pytest.raises(Refused, match=r"gradient check is too big .*GRADIENT_LAB_MAX_JOB_COST"):
        idle_manager.submit(small)
    monkeypatch.delenv("GRADIENT_LAB_MAX_JOB_COST")
    assert idle_manager.submit(small) == small.key()
    huge = GradCheckConfig(RunConfig(dataset="digits", hidden=(4096,) * 20))  # the hostile link of issue 19
    with pytest.raises(Refused, match="GRADIENT_LAB_MAX_JOB_MEMORY_MB") as info:
        idle_manager.submit(huge)
    assert "gradient check would need about" in str(info.value) and "parameters" in str(info.value)
    assert idle_manager.counts()["queued"] == 1


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
    # full: carol (no job) gets in; alice holds the most, so her oldest job nobody else watches is dropped
    idle_manager.submit(cfgs[3], session="carol")
    dropped = idle_manager.snapshot(cfgs[1].key())
    assert dropped.status == "cancelled" and "GRADIENT_LAB_MAX_QUEUED = 3" in dropped.error
    assert idle_manager.snapshot(cfgs[0].key()).status == "queued"  # bob watches it too: kept
    with pytest.raises(Refused, match="GRADIENT_LAB_MAX_QUEUED = 3"):  # alice holds as many as anyone now
        idle_manager.submit(cfgs[4], session="alice")
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


# --- the wall-time cap (issue 20) --------------------------------------------------------------------
def test_a_job_estimated_past_the_time_cap_is_refused_naming_cap_and_estimate(idle_manager, monkeypatch):
    cfg = RunConfig(hidden=(64, 64), epochs=10, device="cpu")
    seconds = budget.check_minutes(budget.estimate(cfg), "cpu")
    assert seconds == pytest.approx(budget.estimate(cfg).cost / budget.TRAINING_RATE["cpu"])
    monkeypatch.setenv("GRADIENT_LAB_MAX_JOB_MINUTES", str(seconds / 60 / 2))
    with pytest.raises(Refused, match="GRADIENT_LAB_MAX_JOB_MINUTES") as info:
        idle_manager.submit(cfg)
    assert f"about {seconds / 60:,.0f} minutes" in str(info.value)
    assert idle_manager.counts() == {"queued": 0, "running": 0}
    monkeypatch.setenv("GRADIENT_LAB_MAX_JOB_MINUTES", str(seconds / 60 * 2))
    assert idle_manager.submit(cfg) == cfg.key()


def test_the_issues_long_mnist_job_is_refused_on_a_cpu(idle_manager, shared_mnist):
    """/?dataset=mnist&hidden=1000,1000&epochs=200 is within the cost cap but not the default time cap."""
    cfg = RunConfig(dataset="mnist", hidden=(1000, 1000), epochs=200, device="cpu")
    est = budget.estimate(cfg)
    assert est.cost <= budget.cap("GRADIENT_LAB_MAX_JOB_COST")
    assert est.cost / budget.TRAINING_RATE["cpu"] > budget.cap("GRADIENT_LAB_MAX_JOB_MINUTES") * 60
    with pytest.raises(Refused, match="GRADIENT_LAB_MAX_JOB_MINUTES"):
        idle_manager.submit(cfg)


def test_a_run_past_the_time_cap_is_stopped_saying_why(isolated_cache):
    """The manager's clock (injected) passes the cap while the run trains: it ends cancelled, its history kept,
    and the reason (stored with it) names the cap."""
    now = [0.0]
    manager = JobManager(RunStore(isolated_cache / "runs"), workers={"cpu": 1}, processes=False, clock=lambda: now[0])
    cfg = RunConfig(dataset="digits", hidden=(16,), epochs=200, log_every=5, device="cpu")
    key = manager.submit(cfg)
    deadline = time.monotonic() + 120
    while not any(e.kind == "eval" for e in manager.snapshot(key).events) and time.monotonic() < deadline:
        time.sleep(0.02)
    now[0] = budget.cap("GRADIENT_LAB_MAX_JOB_MINUTES") * 60 + 1
    snap = manager.wait(key, timeout=120)
    end = snap.events[-1]
    assert snap.status == "cancelled" and end.kind == "finished" and end.status == "cancelled"
    assert "GRADIENT_LAB_MAX_JOB_MINUTES" in end.reason and "GRADIENT_LAB_MAX_JOB_MINUTES" in snap.error
    assert any(e.kind == "eval" for e in snap.events)  # the history up to there is kept
    assert "GRADIENT_LAB_MAX_JOB_MINUTES" in manager.store.meta(key)["reason"]
