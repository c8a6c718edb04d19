"""A finished run's trained weights in the run store (core.engine.events.FinalWeights), and the gradient check
at them (core.lab.gradcheck.stored.check_stored_run(at="final")), against the model the loop ends with."""
from __future__ import annotations

import json

import pytest
import torch

from core.engine import data as datasets
from core.__main__ import main
from core.engine.config import RunConfig
from core.engine.events import FinalWeights, decode_events, encode_events
from core.lab.gradcheck.result import GOOD
from core.lab.gradcheck.options import CheckOptions
from core.lab.gradcheck.result import GradCheck
from core.lab.gradcheck.stored import NoStoredWeights, RunGone, check_stored_run, runs_with_weights
from core.lab.gradcheck.task import GradCheckConfig
from core.serve.jobs import JobManager, event_bytes
from core.engine.lanes import ModuleLanes, evaluate
from core.engine.models import build_model
from core.serve.store import RunStore
from helpers import train_lanes_events

RUN = RunConfig(dataset="digits", hidden=(32, 16), activation="tanh", epochs=2, batch_size=64, log_every=10, seed=5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A store with a tanh and a sigmoid run trained by the job manager (threads), and the manager."""
    cache = tmp_path_factory.mktemp("cache")
    manager = JobManager(RunStore(cache / "runs"), processes=False)
    configs = {a: RUN.replace(activation=a) for a in ("tanh", "sigmoid")}
    for cfg in configs.values():
        assert manager.wait(manager.submit(cfg), timeout=300).status == "finished"
    return cache, manager, configs


def _model(cfg: RunConfig, state: dict) -> torch.nn.Module:
    ds = datasets.load_dataset(cfg.dataset)
    model = build_model(cfg, ds.input_shape, ds.n_classes, torch.Generator().manual_seed(cfg.seed))
    if state:
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return model


def test_stored_weights_are_the_weights_the_loop_ends_with():
    made = []

    def make_lanes(*args):
        made.append(ModuleLanes(*args))
        return made[-1]

    (end,), (events,) = train_lanes_events([RUN], make_lanes, final_weights=True)
    assert end.status == "finished"
    (weights,) = [e for e in events if e.kind == "weights"]
    assert events[-1] is end and events[-2] is weights  # just before the run's end, so a cell's filing keeps it
    trained = made[0].model.state_dict()
    assert list(weights.weights) == list(trained)
    for name, tensor in trained.items():
        assert weights.weights[name].dtype.name == "float32"
        assert torch.equal(torch.from_numpy(weights.weights[name]), tensor)  # a copy, equal to the last step's
    initial = _model(RUN, {}).state_dict()
    assert not any(torch.equal(initial[n], t) for n, t in trained.items() if n.endswith("weight"))  # it trained
    decoded, _ = decode_events(*encode_events(events))
    again = next(e for e in decoded if e.kind == "weights")
    assert all(torch.equal(torch.from_numpy(again.weights[n]), t) for n, t in trained.items())
    _, (lean,) = train_lanes_events([RUN], ModuleLanes)  # the default (grid cells, sweeps): metrics only
    assert "weights" not in [e.kind for e in lean]


def test_stored_weights_reproduce_the_runs_stored_test_metrics(trained):
    _, manager, configs = trained
    cfg = configs["tanh"]
    meta = manager.store.meta(cfg.key())
    final = manager.store.final_weights(cfg.key())
    assert meta["weights"] == {"stored": True, "bytes": final.nbytes, "step": meta["step"]}
    assert final.nbytes == sum(a.nbytes for a in final.weights.values())
    ds = datasets.load_dataset(cfg.dataset)
    scores = evaluate(cfg, _model(cfg, final.weights), datasets.batch_features(ds.x_test), ds.y_test)
    assert scores.acc[0] == meta["test_acc"]
    assert scores.loss[0] == pytest.approx(meta["test_loss"], rel=1e-5)
    assert [m["key"] for m in runs_with_weights(manager.store)] == [c.key() for c in reversed(configs.values())]


# sigmoid's fc1 gradients are ~20x smaller than tanh's here, so at ε = 1e-6 the rounding error of the
# loss (~1e-16·J/ε) reads ~2e-7 there, at initialization as at the final weights; ε = 1e-5 balances
# rounding against the central difference's ε² truncation.
@pytest.mark.parametrize("activation, eps", [("tanh", 1e-6), ("sigmoid", 1e-5)])
def test_the_check_at_stored_final_weights_reads_below_1e7(trained, activation, eps):
    _, manager, configs = trained
    key = configs[activation].key()
    result = check_stored_run(key, manager.store.get, at="final", n_examples=16, eps=eps)
    assert result.settings["at"] == "final" and result.settings["step"] == manager.store.meta(key)["step"]
    assert "final weights" in result.notes[0]
    assert [r.layer for r in result.layers] == ["fc1", "fc2", "fc3"]
    assert all(r.rel_diff < GOOD for r in result.layers), result.table()
    at_init = check_stored_run(key, manager.store.get, n_examples=16, eps=eps)
    assert at_init.settings["at"] == "init" and "final weights are stored too" in at_init.notes[0]
    assert [r.analytic_norm for r in at_init.layers] != [r.analytic_norm for r in result.layers]  # other weights


@pytest.mark.parametrize("processes", [False, True])
def test_a_check_job_at_stored_final_weights_reads_the_run_through_the_manager(trained, processes):
    """In a worker thread, and in a worker process whose store reads go through the parent's manager."""
    _, manager, configs = trained
    key = configs["tanh"].key()
    meta = manager.store.meta(key)
    check = GradCheckConfig(configs["tanh"], CheckOptions(examples=16, at="final"), key, meta["version"])
    worker = JobManager(manager.store, workers={"cpu": 1, "cuda": 0}, processes=processes)
    try:
        snap = worker.wait(worker.submit(check), timeout=600)
    finally:
        worker.shutdown()
    assert snap.status == "finished", snap.error
    job = GradCheck.from_event(next(e for e in snap.events if e.kind == "gradcheck"))
    direct = check_stored_run(key, manager.store.get, at="final", n_examples=16)
    assert job.settings == direct.settings and job.settings["step"] == meta["step"]
    assert job.table() == direct.table() and job.notes == direct.notes and job.overall < GOOD


def test_the_history_in_memory_holds_the_weights_event_without_its_arrays(trained):
    _, manager, configs = trained
    key = configs["tanh"].key()
    stored = manager.store.final_weights(key)
    job = manager._jobs[key]
    (light,) = [e for e in job.events if e.kind == "weights"]
    assert light.weights == {} and light.nbytes == stored.nbytes
    assert not any(e.weights for e in manager.snapshot(key).events if e.kind == "weights")
    assert job.nbytes == sum(event_bytes(e) for e in job.events)
    assert event_bytes(stored) - event_bytes(light) >= stored.nbytes  # the accounting sees arrays inside dicts
    served = JobManager(manager.store, processes=False)  # another server: served from the store, no arrays kept
    served.submit(configs["tanh"])
    assert not any(e.weights for e in served._jobs[key].events if e.kind == "weights")


def test_over_the_cap_no_weights_are_stored_and_the_check_names_the_cap(isolated_cache, monkeypatch):
    monkeypatch.setenv("GRADIENT_LAB_MAX_WEIGHTS_MB", "0.001")  # 1 KB: the 64-32-16 net takes ~11 KB
    manager = JobManager(RunStore(isolated_cache / "runs"), processes=False)
    cfg = RUN.replace(epochs=1)
    assert manager.wait(manager.submit(cfg), timeout=300).status == "finished"
    meta = manager.store.meta(cfg.key())
    assert meta["weights"]["stored"] is False and "GRADIENT_LAB_MAX_WEIGHTS_MB" in meta["weights"]["reason"]
    assert manager.store.final_weights(cfg.key()) is None and runs_with_weights(manager.store) == []
    with pytest.raises(NoStoredWeights, match=r"No weights are stored .* over the cap of 0\.001 MB .*"
                                              r"GRADIENT_LAB_MAX_WEIGHTS_MB"):
        check_stored_run(cfg.key(), manager.store.get, at="final")
    assert check_stored_run(cfg.key(), manager.store.get, n_examples=8).overall < GOOD  # at init it still checks


def test_an_older_run_without_weights_and_a_gone_run_are_told_apart(tmp_path):
    store = RunStore(tmp_path / "runs")
    cfg = RUN.replace(dataset="blobs", hidden=(4,))
    store.put(cfg.key(), cfg.to_dict(), [])
    meta = store.meta(cfg.key())
    del meta["weights"]  # a summary written before runs kept weights
    store._cache.set(f"meta:{cfg.key()}", json.dumps(meta))
    with pytest.raises(NoStoredWeights, match="before runs kept their weights"):
        check_stored_run(cfg.key(), store.get, at="final")
    with pytest.raises(RunGone, match="no longer exists"):
        check_stored_run("run-000000000000000000000000", store.get, at="final")
    with pytest.raises(ValueError, match="at must be"):
        check_stored_run(cfg.key(), store.get, at="middle")


def test_weights_event_round_trips_an_empty_skip():
    event = FinalWeights(7, {}, 123, "over the cap")
    (back,), _ = decode_events(*encode_events([event]))
    assert back == event


def test_the_cli_checks_a_stored_run_at_its_final_weights(trained, monkeypatch, capsys):
    cache, _, configs = trained
    monkeypatch.setenv("GRADIENT_LAB_CACHE_DIR", str(cache))
    key = configs["tanh"].key()
    assert main(["gradcheck", "--run", key, "--at", "final", "--max-entries", "200", "--examples", "8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{key}: gradient check at the run's final weights (step ")
    header = next(i for i, line in enumerate(lines) if line.split()[:4] == ["layer", "checked", "total", "rel"])
    rows = [line.split() for line in lines[header + 1:header + 4]]
    assert [r[0] for r in rows] == ["fc1", "fc2", "fc3"]
    assert all(float(r[3]) < GOOD and r[4] == "right" for r in rows)
    assert int(rows[0][1]) == 200 + 32 < int(rows[0][2]) == 64 * 32 + 32  # the weight sampled, the bias whole
    assert main(["gradcheck", "--run", "run-000000000000000000000000", "--at", "final"]) == 2
    assert "no longer exists" in capsys.readouterr().err
    assert main(["gradcheck", "--preset", "B-regularization", "--at", "final"]) == 2
    assert "--run KEY" in capsys.readouterr().err
