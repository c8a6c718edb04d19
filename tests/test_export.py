"""Take the model home (core.engine.export): the .zip's evaluate.py, run alone in another Python with nothing of
this repository, rebuilds the network from model.safetensors + network.json and scores exactly the test
accuracy the app reported; the weights load with safetensors (no pickle) and equal the stored ones; a run
without weights says why there is no model to take home."""
from __future__ import annotations

import ast
import io
import json
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import streamlit
from safetensors.numpy import load as load_numpy

import core.serve.jobs
from app.text import plain
from apptest_helpers import new_app, texts

from core.engine import data as datasets
from core.engine.config import RunConfig
from core.engine.events import NO_WEIGHTS, StoredRun
from core.engine.export import FILES, NotExportable, model_archive, run_archive
from core.engine.models import build_model
from core.serve.jobs import JobManager
from core.serve.store import RunStore

RUNS = {  # every kind of layer the take-home script rebuilds, each on a small set
    "digits-mlp": RunConfig(dataset="digits", hidden=(32, 16), activation="relu", norm="batchnorm", dropout=0.2,
                            epochs=2, batch_size=64, log_every=10, seed=3),
    "spiral-mlp": RunConfig(dataset="spiral", hidden=(16, 16), activation="tanh", norm="layernorm",
                            dropout_impl="inverted", dropout=0.1, epochs=3, batch_size=32, log_every=20, seed=4),
    "digits-residual": RunConfig(dataset="digits", hidden=(16, 16, 16), activation="relu,tanh,sigmoid",
                                 residual=True, epochs=2, batch_size=32, log_every=20, seed=6),
    "digits-cnn": RunConfig(dataset="digits", arch="cnn", hidden=(16,), activation="gelu", norm="layernorm",
                            epochs=1, batch_size=64, log_every=10, seed=5),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A run store holding the RUNS, trained by the job manager (threads), as the Playground trains them."""
    manager = JobManager(RunStore(tmp_path_factory.mktemp("cache") / "runs"), processes=False)
    for cfg in RUNS.values():
        assert manager.wait(manager.submit(cfg), timeout=300).status == "finished"
    return manager.store


def _unzipped(archive: bytes, folder) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        zf.extractall(folder)
        return {name: zf.read(name) for name in zf.namelist()}


@pytest.mark.parametrize("name", list(RUNS))
def test_the_script_alone_scores_the_apps_test_accuracy(store, name, tmp_path):
    cfg = RUNS[name]
    run = store.get(cfg.key())
    end = next(e for e in run.events if e.kind == "finished")
    files = _unzipped(run_archive(run), tmp_path)
    assert set(files) == set(FILES)
    # -I: an isolated Python (no PYTHONPATH, no current folder on sys.path); cwd elsewhere: nothing of the repo
    done = subprocess.run([sys.executable, "-I", str(tmp_path / "evaluate.py")], cwd=tmp_path.parent,
                          capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    scored = json.loads(done.stdout)
    n_test = len(datasets.load_dataset(cfg.dataset, cfg.data_noise).y_test)
    assert scored["examples"] == n_test
    assert scored["correct"] == round(end.test_acc * n_test)  # the same predictions as the app's
    assert scored["test_accuracy"] == end.test_acc == scored["app_test_accuracy"]
    assert scored["test_accuracy"] > 1 / len(run.events[0].dataset["classes"])  # it learned: above chance


def test_the_script_imports_only_torch_safetensors_and_the_standard_library(store):
    with zipfile.ZipFile(io.BytesIO(run_archive(store.get(RUNS["digits-mlp"].key())))) as zf:
        tree = ast.parse(zf.read("evaluate.py"))
    names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert names - set(sys.stdlib_module_names) == {"torch", "safetensors"}


def test_the_weights_load_with_safetensors_without_pickle_and_equal_the_stored_ones(store):
    cfg = RUNS["digits-mlp"]
    with zipfile.ZipFile(io.BytesIO(run_archive(store.get(cfg.key())))) as zf:
        raw = zf.read("model.safetensors")
        config = json.loads(zf.read("config.json"))
    (length,) = struct.unpack("<Q", raw[:8])  # the safetensors layout: a JSON header, then raw tensor bytes
    header = json.loads(raw[8:8 + length])
    assert header["__metadata__"] == {"format": "pt"}
    loaded = load_numpy(raw)  # plain bytes: nothing is unpickled
    stored = store.final_weights(cfg.key()).weights
    assert set(loaded) == set(stored)
    for name, array in stored.items():
        np.testing.assert_array_equal(loaded[name].astype(np.float32), array)
    assert loaded["2.num_batches_tracked"].dtype == np.int64  # BatchNorm's step count stays an integer
    assert RunConfig.from_dict(config) == cfg  # the config JSON reads back as the run's config


def test_a_run_without_weights_says_why_there_is_no_model():
    with pytest.raises(NotExportable, match="still training"):
        run_archive(None)
    old = StoredRun("run-old", {"config": RUNS["digits-mlp"].to_dict()}, [])  # stored before weights were kept
    with pytest.raises(NotExportable) as caught:
        run_archive(old)
    assert str(caught.value) == NO_WEIGHTS
    cancelled = StoredRun("run-c", {"config": RUNS["digits-mlp"].to_dict(), "weights": {
        "stored": False, "reason": "weights are stored for finished runs only, and this run ended as cancelled"}}, [])
    with pytest.raises(NotExportable, match="ended as cancelled"):
        run_archive(cancelled)


def test_weights_that_do_not_fit_the_config_are_refused_with_a_reason():
    cfg = RUNS["spiral-mlp"]
    wrong = {"3.weight": np.zeros((4, 4), dtype=np.float32)}
    with pytest.raises(NotExportable, match="do not fit"):
        model_archive(cfg, (2,), ["a", "b", "c"], wrong, None)


def test_without_its_dataset_the_archive_keeps_the_model_and_says_why_there_is_no_test_set():
    cfg = RUNS["spiral-mlp"]
    ds = datasets.load_dataset(cfg.dataset, cfg.data_noise)
    state = {k: v.numpy() for k, v in build_model(cfg, ds.input_shape, ds.n_classes).state_dict().items()}
    archive = model_archive(cfg, ds.input_shape, ds.classes, state, None, no_test_set="MNIST is not on this server")
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        assert "test_set.safetensors" not in zf.namelist() and "model.safetensors" in zf.namelist()
        assert json.loads(zf.read("network.json"))["no_test_set"] == "MNIST is not on this server"


# --- the Playground's download ------------------------------------------------------------------------------
PAGE_RUN = RunConfig(epochs=1, log_every=10, seed=41)  # the Playground's default Digits network, one epoch


@pytest.fixture
def asked(monkeypatch) -> dict:
    """label -> data of every download button drawn (a deferred one's callable, called when a test clicks)."""
    drawn: dict = {}
    original = streamlit.download_button

    def recorded(label, data, *args, **kwargs):
        drawn[label] = data
        return original(label, data, *args, **kwargs)

    monkeypatch.setattr(streamlit, "download_button", recorded)
    return drawn


def test_the_playground_offers_the_finished_runs_model_as_one_zip(isolated_cache, asked):
    manager = core.serve.jobs.get_manager()
    assert manager.wait(manager.submit(PAGE_RUN), timeout=240).status == "finished"
    at = new_app(PAGE_RUN.to_query())
    assert not at.exception, at.exception
    label = "Download the trained model (.zip)"
    assert label in [b.label for b in at.get("download_button")]
    with zipfile.ZipFile(io.BytesIO(asked[label]())) as zf:  # built when the reader clicks, not on every draw
        assert set(zf.namelist()) == set(FILES)
        loaded = load_numpy(zf.read("model.safetensors"))
    stored = manager.store.final_weights(PAGE_RUN.key()).weights
    assert all(np.array_equal(loaded[name], array) for name, array in stored.items())


def test_a_stored_run_without_weights_says_why_there_is_no_model_download(isolated_cache):
    manager = core.serve.jobs.get_manager()
    assert manager.wait(manager.submit(PAGE_RUN), timeout=240).status == "finished"
    run = manager.store.get(PAGE_RUN.key())  # stored again as a run stored before runs kept their weights
    manager.store.put(PAGE_RUN.key(), PAGE_RUN.to_dict(), [e for e in run.events if e.kind != "weights"])
    core.serve.jobs._manager = None  # a restarted server: the run comes from the store
    at = new_app(PAGE_RUN.to_query())
    assert not at.exception, at.exception
    assert "Download the trained model (.zip)" not in [b.label for b in at.get("download_button")]
    assert plain(f"No trained model to download: {NO_WEIGHTS}.") in texts(at.caption)
