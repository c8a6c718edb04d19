"""A CNN seen while it trains, against oracles: the live first-layer filters (core.engine.events.ConvFilters) end as the
trained weights and their smoothness rises from initialization (Digits, and real MNIST); gradient norms per layer
equal autograd's; dead and saturated units are counted per channel as a forward hook counts them; the weight-change
maps of conv layers are per (output, input) channel; the CNN page shows all of it and checks the CNN's gradients."""
from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from streamlit.testing.v1 import AppTest
from torch import nn

from apptest_helpers import MAIN, texts
from browser_helpers import CHROMIUM, free_port, launch, start_server, stop_server
from core.engine import probes
from core.engine.config import RunConfig
from core.engine.data import batch_features
from core.engine.events import ConvFilters, decode_events, encode_events, keep_latest
from core.engine.lanes import ModuleLanes
from core.engine.models import build_model
from core.engine.train import PROBE_BATCH, train_split, training_examples
from core.lab import convnet
from core.lab.gradcheck.result import GradCheck
from core.serve.jobs import get_manager
from helpers import of_kind, train_events

DIGITS_CNN = RunConfig(dataset="digits", arch="cnn", hidden=(32,), epochs=3, batch_size=32, log_every=20, seed=2)
MNIST_CNN = RunConfig(dataset="mnist", arch="cnn", hidden=(64,), train_limit=1000, epochs=1, batch_size=32,
                      log_every=10, seed=0)


def first_layer(cfg: RunConfig, weights: dict | None = None) -> torch.Tensor:
    """The first conv layer's weight of ``cfg``'s CNN (at initialization, or with ``weights``), found by type."""
    return convnet.first_conv(convnet.cnn_model(cfg, convnet.image_dataset(cfg), weights)).weight.detach()


def check_live_filters(cfg: RunConfig) -> None:
    end, events = train_events(cfg)
    classes = len(convnet.image_dataset(cfg).classes)
    assert end.status == "finished" and end.test_acc > 2 / classes  # it learned: twice chance
    live = of_kind(events, "filters")
    assert len(live) == len(of_kind(events, "eval"))  # one at every log point
    start = first_layer(cfg)
    assert live[0].initial_smoothness == pytest.approx(float(probes.filter_smoothness(start).mean()), abs=1e-12)
    assert live[-1].mean_smoothness > live[-1].initial_smoothness  # training made the filters smoother
    trained = first_layer(cfg, of_kind(events, "weights")[0].weights)
    np.testing.assert_array_equal(live[-1].filters, trained.numpy())  # the last log point's are the final weights
    np.testing.assert_allclose(live[-1].smoothness, probes.filter_smoothness(trained), atol=1e-12)
    assert live[-1].layer == "conv1" and live[-1].total == len(trained)


def test_live_filters_on_digits_end_as_the_trained_layer_and_grow_smoother():
    check_live_filters(DIGITS_CNN)


def test_live_filters_on_real_mnist_end_as_the_trained_layer_and_grow_smoother(shared_mnist):
    check_live_filters(MNIST_CNN)


def test_a_network_without_convolution_sends_no_filters_and_the_switch_turns_them_off():
    _, mlp = train_events(DIGITS_CNN.replace(arch="mlp", epochs=1))
    _, off = train_events(DIGITS_CNN.replace(epochs=1), live_filters=False)
    assert not of_kind(mlp, "filters") and not of_kind(off, "filters") and of_kind(off, "layers")


def test_a_history_keeps_only_the_latest_filters_and_every_number():
    g = torch.Generator().manual_seed(0)
    events = [ConvFilters(step, step / 10, "conv1", 4, 0.1 * step, -0.1, [0.1 * step] * 4,
                          torch.randn(4, 1, 3, 3, generator=g).numpy()) for step in (10, 20, 30)]
    thinned = keep_latest(events, "filters")
    assert [old.step for old, _ in thinned] == [20, 10]
    assert [e.kept for e in events] == [False, False, True]
    assert [e.mean_smoothness for e in events] == pytest.approx([1.0, 2.0, 3.0])
    decoded, _ = decode_events(*encode_events(events))
    np.testing.assert_array_equal(decoded[-1].filters, events[-1].filters)
    assert decoded[0].filters is None and decoded[0].smoothness == events[0].smoothness


def test_the_first_conv_layer_is_found_by_type_whatever_its_name():
    first, second = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3)
    named = nn.Sequential()
    named.add_module("stem", nn.Sequential(nn.Identity(), first))
    named.add_module("body", second)
    assert probes.first_conv(named) is first and probes.first_conv(nn.Sequential(nn.Linear(2, 2))) is None


# --- inside the network: oracles per layer ------------------------------------------------------------------------
FULL_BATCH = RunConfig(dataset="digits", arch="cnn", hidden=(16,), train_limit=96, batch_size=96, epochs=1,
                       log_every=1, seed=3)


def test_gradient_norms_per_layer_equal_autograds():
    """One step on the whole (full-batch) training set: the log point reports the gradient norms of the loss at
    initialization, which autograd gives directly (the batch order does not change a mean)."""
    _, events = train_events(FULL_BATCH)
    (stats,) = of_kind(events, "layers")
    ds = convnet.image_dataset(FULL_BATCH)
    model = build_model(FULL_BATCH, ds.input_shape, ds.n_classes, torch.Generator().manual_seed(FULL_BATCH.seed))
    x, y = training_examples(FULL_BATCH, ds)
    F.cross_entropy(model(batch_features(x)), y).backward()
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert stats.layers == ["conv1", "conv2", "fc3", "fc4"]
    np.testing.assert_allclose(stats.grad_norm, [float(m.weight.grad.norm()) for m in layers], rtol=1e-4)


def hooked_outputs(model: nn.Module, x: torch.Tensor, kind: type) -> list[torch.Tensor]:
    """Every ``kind`` activation module's output for ``x``, in forward order, read by forward hooks."""
    outputs: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach()))
               for m in model.modules() if isinstance(m, kind)]
    with torch.no_grad():
        model.eval()(x)
    for handle in handles:
        handle.remove()
    return outputs


def dead_share(out: torch.Tensor) -> float:
    """Share of units (channels of a conv output) that are zero for every example and position."""
    per_unit = out.transpose(0, 1).reshape(out.shape[1], -1)
    return float((per_unit <= 0).all(dim=1).float().mean())


def test_dead_relu_channels_are_counted_per_channel_as_a_forward_hook_sees_them():
    ds = convnet.image_dataset(DIGITS_CNN)
    lanes = ModuleLanes([DIGITS_CNN], ds.input_shape, ds.n_classes, torch.device("cpu"))
    convs = [m for m in lanes.model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        convs[0].bias[:5] = -1e3  # five channels below zero everywhere: dead
        convs[1].bias[:3] = -1e3
    x = batch_features(ds.x[:PROBE_BATCH])
    oracle = [dead_share(out) for out in hooked_outputs(lanes.model, x, nn.ReLU)]
    assert oracle[0] >= 5 / 32 and oracle[1] >= 3 / 32  # the forced ones, and any already dead on these images
    assert lanes.saturation(x)[:3] == pytest.approx(oracle)


def test_saturated_sigmoid_share_per_conv_layer_and_the_runs_last_event_match_a_hook():
    cfg = DIGITS_CNN.replace(activation="sigmoid", epochs=1)
    _, events = train_events(cfg)
    last = of_kind(events, "layers")[-1]
    ds = convnet.image_dataset(cfg)
    model = convnet.cnn_model(cfg, ds, of_kind(events, "weights")[0].weights)
    _, val_idx = train_split(cfg, len(ds.y))
    probe = batch_features(ds.x[val_idx[:PROBE_BATCH]])
    outs = hooked_outputs(model, probe, nn.Sigmoid)
    oracle = [float((y * (1 - y) < probes.SIGMOID_SATURATED).float().mean()) for y in outs]
    assert [o.dim() for o in outs[:2]] == [4, 4]  # the conv layers' maps, every channel and position
    assert last.saturation[:3] == pytest.approx(oracle, abs=1e-6)
    assert last.saturation[3] is None  # the output layer has no activation


def test_conv_weight_change_maps_are_per_channel_pair():
    _, events = train_events(DIGITS_CNN.replace(epochs=1))
    last = of_kind(events, "layers")[-1]  # the last log point always carries its maps
    start = convnet.cnn_model(DIGITS_CNN, convnet.image_dataset(DIGITS_CNN))
    trained = convnet.cnn_model(DIGITS_CNN, convnet.image_dataset(DIGITS_CNN), of_kind(events, "weights")[0].weights)
    pairs = zip((m for m in start.modules() if isinstance(m, nn.Conv2d)),
                (m for m in trained.modules() if isinstance(m, nn.Conv2d)))
    for k, (before, after) in enumerate(pairs):
        oracle = (after.weight - before.weight).abs().mean(dim=(2, 3)).detach().numpy()
        assert last.heatmaps[k].shape == (after.out_channels, after.in_channels)
        np.testing.assert_allclose(last.heatmaps[k], oracle, rtol=1e-5, atol=1e-8)


# --- the page ----------------------------------------------------------------------------------------------------
def test_the_cnn_page_shows_live_filters_inside_the_network_and_checks_conv_gradients(isolated_cache, no_mnist):
    at = AppTest.from_file(str(MAIN), default_timeout=180)
    at.switch_page("../pages/cnn.py")
    at.query_params.update({"dataset": "digits", "epochs": "3"})
    at.run()
    at.button(key="cnn_train").click().run()
    keys = list(get_manager()._jobs)
    for key in keys:
        assert get_manager().wait(key, timeout=300).status == "finished"
    at.run()
    assert not at.exception, at.exception
    for key in keys:  # the manager's history keeps every log point's numbers, and only the latest filters
        kept = [e.kept for e in get_manager().snapshot(key).events if e.kind == "filters"]
        assert kept == [] or (len(kept) > 1 and kept[-1] and not any(kept[:-1]))
    assert any(e.kind == "filters" for key in keys for e in get_manager().snapshot(key).events)  # the CNN's
    words = texts(at.markdown).replace("\\", "")
    assert "Mean smoothness of the 32 first-layer filters after training" in words
    subheaders = [s.value for s in at.subheader]
    assert "Learned filters, live" in subheaders and "Inside the network" in subheaders
    at.button(key="cnn_gradcheck").click().run()
    checks = [k for k in get_manager()._jobs if k not in keys]
    assert len(checks) == 1
    state = get_manager().wait(checks[0], timeout=300)
    assert state.status == "finished"
    result = GradCheck.from_event(next(e for e in get_manager().snapshot(checks[0]).events if e.kind == "gradcheck"))
    assert [r.layer for r in result.layers][:2] == ["conv1", "conv2"]
    assert all(r.rel_diff < 1e-7 for r in result.layers)  # float64 backprop of conv layers is right
    at.run()
    assert not at.exception, at.exception


# --- a real browser, mid-training ---------------------------------------------------------------------------------
SHOTS = Path("/tmp/h4-shots")
LIVE_WORDS = r"Mean smoothness of the 32 first-layer filters at step ([\d,]+)"


def main_text(page) -> str:
    return page.locator('[data-testid="stMain"]').inner_text(timeout=30_000)


def wait_for(page, pattern: str, timeout_s: float) -> re.Match:
    deadline = time.monotonic() + timeout_s
    text = ""
    while time.monotonic() < deadline:
        found = re.search(pattern, text := main_text(page))
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"{pattern!r} did not appear; the page says:\n{text[-2000:]}")


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found (apt-get install chromium)")
def test_browser_filters_redraw_while_the_cnn_trains_on_mnist(shared_mnist, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python package) is not installed")
    SHOTS.mkdir(exist_ok=True)
    port = free_port()
    proc = start_server(tmp_path / "cache", port, tmp_path / "streamlit.log", {"OMP_NUM_THREADS": "1"})
    try:
        with sync_api.sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            page.goto(f"http://127.0.0.1:{port}/cnn")
            wait_for(page, "Inside a CNN", 120)
            page.get_by_role("button", name="Train both", exact=True).click()
            first = int(wait_for(page, LIVE_WORDS, 300).group(1).replace(",", ""))
            page.get_by_text("Learned filters, live").scroll_into_view_if_needed()
            time.sleep(1.5)
            page.screenshot(path=str(SHOTS / "cnn-live-1-mid-training.png"), full_page=True)
            later = wait_for(page, LIVE_WORDS.replace("([\\d,]+)", f"(?!{first:,}\\b)([\\d,]+)"), 300)
            assert int(later.group(1).replace(",", "")) > first  # redrawn at a later log point, same fragment
            page.screenshot(path=str(SHOTS / "cnn-live-2-later.png"), full_page=True)
            wait_for(page, r"One convolution by hand", 600)
            wait_for(page, r"after training \(step [\d,]+\)", 60)
            section = page.get_by_text("Inside the network", exact=True)
            section.scroll_into_view_if_needed()
            page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 12", timeout=60_000)
            time.sleep(2)
            page.screenshot(path=str(SHOTS / "cnn-live-3-inside-network.png"), full_page=True)
            titles = page.evaluate("""() => Array.from(document.querySelectorAll('.js-plotly-plot'))
              .map(g => g.layout && g.layout.title ? String(g.layout.title.text || '') : '')""")
            assert any("Mean filter smoothness" in t for t in titles)
            assert any("|W − W₀|" in t for t in titles)
            page.get_by_role("button", name="Check the gradients", exact=True).click()
            wait_for(page, r"Relative difference, all checked entries", 300)
            page.get_by_text("Relative difference, all checked entries").scroll_into_view_if_needed()
            time.sleep(2)
            page.screenshot(path=str(SHOTS / "cnn-live-4-gradient-check.png"), full_page=True)
            browser.close()
    finally:
        stop_server(proc)
