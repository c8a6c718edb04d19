"""Inside a trained CNN (read-only): its first-layer filters before and after training with their smoothness, one
test image's feature maps and class probabilities, and one convolution worked through by hand.

The trained weights are the run store's (a finished run keeps them); everything drawn is computed by
core.lab.convnet and built once per process for each run and pick (:func:`app.views.jobs.cached`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import streamlit as st
import torch

from core.engine.config import RunConfig
from core.engine.data import Dataset, DatasetUnavailable
from core.lab import convnet
from core.lab.gradcheck.options import CheckOptions
from core.lab.gradcheck.task import GradCheckConfig
from core.lessons.sentences import cnn_against_mlp_sentence
from core.serve.jobs import get_manager

from ..figures import cnn as figures
from ..records.cnn import LiveFilters, live_filters
from ..records.jobs import JobState
from ..text import plain
from .charts import plotly_chart
from .compare import comparison_view, family_states, gap_runs
from .gradcheck import check_job_view
from .jobs import cached, job_state, train_button
from .links import PAGES_DIR
from .run import inside_network

CHECK_JOB = "cnn_gradcheck_job"  # session: the key of this page's last gradient check


@dataclass(frozen=True)
class TrainedCnn:
    """A finished run's CNN at its initialization and with its trained weights, and its data."""

    key: str
    config: RunConfig
    data: Dataset
    start: torch.nn.Sequential
    trained: torch.nn.Sequential
    step: int

    def feature_maps(self, image: int) -> tuple[convnet.FeatureMaps, torch.Tensor, int]:
        """(the trained network's maps of test image ``image``, the image, its label), built once per process."""
        def build():
            picture, label = convnet.test_image(self.data, image)
            return convnet.feature_maps(self.trained, picture), picture, label
        return cached((self.key, self.step, image), "cnn_maps", build, 64)

    def limits(self, layer: int) -> dict[str, int]:
        """How many test images, conv layers, and channels, rows and columns of conv layer ``layer``'s output."""
        convs = [m for m in self.trained.modules() if isinstance(m, torch.nn.Conv2d)]
        layer = min(max(layer, 1), len(convs))
        fm, _, _ = self.feature_maps(0)
        channels, rows, cols = fm.pre_activation[layer - 1].shape
        return {"image": len(self.data.y_test), "layer": len(convs), "channel": channels, "row": rows, "col": cols}


def trained_cnn(key: str) -> TrainedCnn | None:
    """The finished run ``key`` as a :class:`TrainedCnn`, or None with a message saying why there is none yet."""
    state = job_state(key)
    if state is None or not state.done:
        st.caption("The filters, feature maps and the convolution by hand appear once the run has finished.")
        return None
    if state.status != "finished":
        st.info(f"This run ended as {state.status}: only a finished run keeps its trained weights. Train again to "
                "look inside it.", icon="ℹ️")
        return None
    final = get_manager().store.final_weights(key)
    if final is None:
        meta = get_manager().store.meta(key) or {}
        why = (meta.get("weights") or {}).get("reason") or "the run store holds no weights for it"
        st.info(plain(f"The trained weights of this run are not stored ({why}), so its filters cannot be drawn. "
                      "Train again, or a smaller network."), icon="ℹ️")
        return None

    def build() -> TrainedCnn:
        cfg = RunConfig.from_dict(get_manager().store.meta(key)["config"], strict=False)
        ds = convnet.image_dataset(cfg)
        return TrainedCnn(key, cfg, ds, convnet.cnn_model(cfg, ds), convnet.cnn_model(cfg, ds, final.weights),
                          final.step)

    try:
        return cached((key, final.step), "cnn_network", build, 16)
    except (ValueError, DatasetUnavailable) as exc:
        st.error(plain(str(exc)))
        return None


def live_sentence(live: LiveFilters, done: bool) -> str:
    """The filters' mean smoothness now against initialization and random filters, written from the numbers."""
    now, start, random = live.means[-1], live.initial, convnet.random_smoothness(live.filters.shape[-1])
    change = "above" if now > start else "below" if now < start else "at"
    when = f"after training (step {live.step:,})" if done else f"at step {live.step:,}"
    return (f"Mean smoothness of the {live.total} first-layer filters {when}: **{now:+.3f}**, {change} its "
            f"**{start:+.3f}** at initialization; independent random weights give {random:+.3f} on average.")


def live_filters_view(states: list[JobState | None], polling: bool) -> None:
    """The CNN's (the first variant's) first-layer filters at its latest log point, redrawn at each one, with the
    mean smoothness at every log point beside them."""
    state = states[0] if states else None
    live = live_filters(state.events) if state is not None else None
    st.subheader("Learned filters, live", divider="gray")
    if live is None:
        st.caption("The CNN's first-layer filters appear here at its first log point, and are redrawn at each one.")
        return
    st.markdown(live_sentence(live, state.done))
    drawn = (state.key, state.token, live.step)
    title = f"First conv layer ({live.layer}) at step {live.step:,}" + (
        f": its first {len(live.filters)} of {live.total} filters" if len(live.filters) < live.total else "")
    plotly_chart(cached(drawn, "cnn_live_filters", lambda: figures.filters_figure(live.filters, live.smoothness,
                                                                                   title)),
                 key="cnn_fig_live_filters", width="content")
    left, right = st.columns(2, vertical_alignment="center")
    random = convnet.random_smoothness(live.filters.shape[-1])
    plotly_chart(cached(drawn, "cnn_live_smoothness", lambda: figures.smoothness_history_figure(
        live.steps, live.means, live.initial, random)), key="cnn_fig_live_smoothness", slot=left)
    kh, kw = live.filters.shape[-2:]
    right.caption(f"Each filter's label gives its number and its smoothness I (Moran's I of its {kh}×{kw} weights with "
                  "their up/down/left/right neighbours): +1 perfectly smooth, −1 a checkerboard."
                  + (" Redrawn at each log point while the CNN trains: noise at first, then smoother edge and blob "
                     "detectors, and the number rises with them." if polling else ""))


def inside_network_view(net: TrainedCnn) -> None:
    """The CNN's per-layer gradient norms, dead units and weight change, conv layers per channel; its gradient
    check at the trained weights, run here or opened on the Gradient check page."""
    st.caption("Conv layers count per channel: a channel is dead when it is zero at every position for every probe "
               "image, and its weight change is the mean over its 3×3 kernel for each input channel.")
    inside_network(net.key)
    st.markdown("**Gradient check.** Backprop against finite differences, layer by layer, conv layers included, at "
                "this CNN's trained weights.")
    meta = get_manager().store.meta(net.key) or {}
    check = GradCheckConfig(net.config, CheckOptions(at="final"), net.key, meta.get("version"))
    left, right = st.columns([1, 3], vertical_alignment="center")
    with left:
        train_button(check, CHECK_JOB, key="cnn_gradcheck", label="Check the gradients",
                     help="Finite differences on the server's workers, at this CNN's stored trained weights.")
    right.page_link(PAGES_DIR / "gradcheck.py", label="Open this check on the Gradient check page", icon="🔎",
                    query_params={"stored_run": net.key, **check.options.to_query()})
    check_job_view(check, st.session_state.get(CHECK_JOB))


def smoothness_sentence(before: float, after: float) -> str:
    """What training did to the filters' mean smoothness, written from the two numbers."""
    random = convnet.random_smoothness(3)
    change = "rose" if after > before else "fell" if after < before else "stayed"
    return (f"Mean smoothness (Moran's I of each 3×3 filter with its up/down/left/right neighbours): "
            f"**{before:+.3f}** at initialization, **{after:+.3f}** after training: it {change}. Independent random "
            f"weights give {random:+.3f} on average; +1 would be perfectly smooth, −1 a checkerboard.")


def filters_view(net: TrainedCnn) -> None:
    """The first layer's filters at initialization and after training, side by side, with their smoothness."""
    start, trained = convnet.first_conv(net.start).weight, convnet.first_conv(net.trained).weight
    s0, s1 = convnet.filter_smoothness(start), convnet.filter_smoothness(trained)
    st.markdown(smoothness_sentence(float(s0.mean()), float(s1.mean())))
    st.caption(f"{int((s1 > s0).sum())} of {len(s1)} filters grew smoother. Blue weights are negative, red positive; "
               "each filter's label gives its number and its smoothness I.")
    plotly_chart(cached((net.key, net.step), "cnn_filters_start", lambda: figures.filters_figure(
        start.detach().numpy(), s0, "At initialization")), key="cnn_fig_filters_start", width="content")
    plotly_chart(cached((net.key, net.step), "cnn_filters_trained", lambda: figures.filters_figure(
        trained.detach().numpy(), s1, f"After training ({net.step} steps)")), key="cnn_fig_filters_trained",
        width="content")


def feature_maps_view(net: TrainedCnn, image: int) -> None:
    """The image, the predicted probabilities, then every conv layer's maps after activation and pooling."""
    fm, picture, label = net.feature_maps(image)
    classes = [str(c) for c in net.data.classes]
    guess = int(np.argmax(fm.probabilities))
    verdict = "right" if guess == label else "wrong"
    st.markdown(plain(f"Test image {image} is a “{classes[label]}”; the network says “{classes[guess]}” with "
                      f"probability {fm.probabilities[guess]:.1%} ({verdict})."))
    left, right = st.columns([1, 2])
    plotly_chart(figures.image_figure(picture.numpy(), f"Test image {image}"), key="cnn_fig_image", slot=left, width="content")
    plotly_chart(figures.probabilities_figure(fm.probabilities, classes, label), key="cnn_fig_probs", slot=right)
    for stage in fm.maps:
        what = "after the activation" if stage.stage == "activation" else "after pooling"
        channels, rows, cols = stage.maps.shape
        plotly_chart(figures.feature_maps_figure(stage.maps, f"Conv layer {stage.layer}, {what}: {channels} maps of "
                                                            f"{rows}×{cols}"),
                     key=f"cnn_fig_maps_{stage.layer}_{stage.stage}", width="content")


def hand_convolution_view(net: TrainedCnn, image: int, layer: int, channel: int, row: int, col: int) -> None:
    """One output value of one conv layer for the chosen image, written out, and the same value read from the map."""
    fm, _, _ = net.feature_maps(image)
    try:
        hand = convnet.hand_convolution_at(fm, layer, channel, row, col)
    except ValueError as exc:
        st.error(plain(str(exc)))
        return
    read = float(fm.pre_activation[layer - 1][channel, row, col])
    after = next((m.maps[channel, row, col] for m in fm.maps if m.layer == layer and m.stage == "activation"), None)
    conv = fm.convs[layer - 1]
    st.markdown(plain(f"The kernel of channel {channel} sits on the input rows {hand.top}…{hand.top + conv.kernel_size[0] - 1} "
                      f"and columns {hand.left}…{hand.left + conv.kernel_size[1] - 1} (stride {conv.stride[0]}, "
                      f"padding {conv.padding[0]}: rows or columns below 0 or past the edge are the zero padding). "
                      f"Multiply elementwise, add everything up and add the bias: Σ = {hand.product.sum():+.4f}, "
                      f"plus bias {hand.bias:+.4f} = {hand.value:+.4f}. The layer's own output at ({row}, {col}) "
                      f"reads {read:+.4f}" + (f", and after the activation {float(after):+.4f}." if after is not None
                                               else ".")))
    plotly_chart(figures.hand_convolution_figure(hand, layer), key="cnn_fig_hand")


def inside_view(net: TrainedCnn, picks_form: Callable[[Callable[[int], dict[str, int]]], dict[str, int]]) -> dict[str, int]:
    """Filters, then the picks (drawn by ``picks_form`` within the network's limits), feature maps and the hand
    convolution; returns the picks."""
    st.subheader("Learned filters", divider="gray")
    filters_view(net)
    st.subheader("Inside the network", divider="gray")
    inside_network_view(net)
    st.subheader("Feature maps of one test image", divider="gray")
    st.caption("Pick a test image, and a conv layer, channel and output position for the convolution by hand below.")
    picks = picks_form(net.limits)
    feature_maps_view(net, picks["image"])
    st.subheader("One convolution by hand", divider="gray")
    hand_convolution_view(net, picks["image"], picks["layer"], picks["channel"], picks["row"], picks["col"])
    return picks


VERSUS_CURVES = ("Both networks see the same training images in the same order, from the same seed; only the "
                 "architecture differs. The MLP has one hidden layer per CNN layer, all of one width: the smallest "
                 "width that gives it at least the CNN's parameters.")
VERSUS_WEIGHTS = ("The weights of every layer of each network; the CNN's include its dense head, which takes the "
                  "flattened feature maps as input.")


def versus_view(runs: list[dict]) -> None:
    """The CNN against the MLP (``runs``: their job ids, CNN first): the outcome sentence with both parameter counts,
    then the live comparison, whose results table holds the counts beside the accuracies."""
    states, _, _ = family_states(runs)
    params = [next((e.n_params for e in s.events if e.kind == "started"), None) if s is not None else None
              for s in states]
    finals = gap_runs(runs)
    cnn, mlp = (finals.get(r["label"]) for r in runs[:2])
    if None not in params:
        st.markdown(plain(cnn_against_mlp_sentence(cnn.val if cnn else None, mlp.val if mlp else None, *params[:2])))
    comparison_view(runs, prefix="cnn_cmp", curves_words=VERSUS_CURVES, weights_words=VERSUS_WEIGHTS,
                    live=live_filters_view)
