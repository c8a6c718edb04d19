"""A trained run to take home: one .zip holding its weights as safetensors (loads without pickle), its config
JSON, the network's layers, its test set and a short plain-PyTorch script (``evaluate.py``, no import of this
repository) that rebuilds the network and scores it on that test set. Built in memory, from a stored run."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn

from core.engine import catalog
from core.engine.data import DatasetUnavailable
from core.engine.config import ConfigError, RunConfig
from core.engine.events import StoredRun, weights_status
from core.engine.models import InvertedDropout, Residual, build_model

SCRIPT = Path(__file__).with_name("take_home_evaluate.py")
FILES = ("model.safetensors", "config.json", "network.json", "test_set.safetensors", "evaluate.py")


class NotExportable(ValueError):
    """The run has no model to take home; the message says why."""


def layer_spec(layer: nn.Module) -> dict:
    """What ``evaluate.py`` needs to rebuild one layer of a :func:`build_model` network."""
    if isinstance(layer, Residual):
        return {"type": "residual", "layers": [layer_spec(inner) for inner in layer.body]}
    if isinstance(layer, nn.Linear):
        return {"type": "linear", "in": layer.in_features, "out": layer.out_features}
    if isinstance(layer, nn.Conv2d):
        return {"type": "conv2d", "in": layer.in_channels, "out": layer.out_channels, "kernel": list(layer.kernel_size),
                "stride": list(layer.stride), "padding": list(layer.padding)}
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
        kind = "batchnorm1d" if isinstance(layer, nn.BatchNorm1d) else "batchnorm2d"
        return {"type": kind, "features": layer.num_features, "eps": layer.eps}
    if isinstance(layer, nn.LayerNorm):
        return {"type": "layernorm", "shape": list(layer.normalized_shape), "eps": layer.eps}
    if isinstance(layer, nn.GroupNorm):
        return {"type": "groupnorm", "groups": layer.num_groups, "features": layer.num_channels, "eps": layer.eps}
    if isinstance(layer, (nn.Dropout, InvertedDropout)):
        return {"type": "dropout", "p": layer.p}
    if isinstance(layer, nn.LeakyReLU):
        return {"type": "leaky_relu", "slope": layer.negative_slope}
    if isinstance(layer, nn.ELU):
        return {"type": "elu", "alpha": layer.alpha}
    if isinstance(layer, nn.GELU):
        return {"type": "gelu", "approximate": layer.approximate}
    simple = {nn.Flatten: "flatten", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.ReLU: "relu", nn.Identity: "identity"}
    if type(layer) in simple:
        return {"type": simple[type(layer)]}
    raise NotExportable(f"the network has a {type(layer).__name__} layer, which the take-home script cannot rebuild")


def model_archive(cfg: RunConfig, input_shape: tuple[int, ...], classes: list[str], weights: dict[str, np.ndarray],
                  test_set: tuple[torch.Tensor, torch.Tensor] | None, app_test_acc: float | None = None,
                  no_test_set: str = "") -> bytes:
    """The .zip of a trained network: ``weights`` is the state_dict of :func:`build_model` for ``cfg``
    (float32 arrays, as :class:`~core.engine.events.FinalWeights` keeps them); ``test_set`` (x as the dataset
    holds it, y) is scored by evaluate.py, or is None and network.json says why (``no_test_set``). Raises
    :class:`NotExportable` when the weights do not fit that network."""
    model = build_model(cfg, tuple(input_shape), len(classes))
    state = model.state_dict()
    try:
        # each tensor in the dtype the network keeps it (BatchNorm's step count is an integer)
        model.load_state_dict({name: torch.from_numpy(np.asarray(weights[name])).to(state[name].dtype)
                               for name in weights})
    except (RuntimeError, KeyError) as exc:
        raise NotExportable(f"its stored weights do not fit the network its config builds here ({exc})") from None
    network = {"layers": [layer_spec(layer) for layer in model], "input_shape": list(input_shape),
               "classes": list(classes), "app_test_accuracy": app_test_acc}
    if test_set is None:
        network["no_test_set"] = no_test_set
    tensors = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        zf.writestr("model.safetensors", safetensors_bytes(tensors, metadata={"format": "pt"}))
        zf.writestr("config.json", json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
        zf.writestr("network.json", json.dumps(network, indent=2))
        if test_set is not None:
            x, y = test_set
            zf.writestr("test_set.safetensors", safetensors_bytes({"x": x.cpu().contiguous(), "y": y.cpu().contiguous()}))
        zf.writestr("evaluate.py", SCRIPT.read_text())
    return buf.getvalue()


def run_archive(run: StoredRun | None) -> bytes:
    """:func:`model_archive` of a stored run; raises :class:`NotExportable` saying why there is none."""
    if run is None:
        raise NotExportable("the run is not in the run store (it is still training, or it was evicted)")
    stored, why = weights_status(run.meta)
    if not stored:
        raise NotExportable(why)
    final = next((e for e in run.events if e.kind == "weights" and e.weights), None)
    started = next((e for e in run.events if e.kind == "started"), None)
    if final is None or started is None:
        raise NotExportable("its stored weights could not be read (see the run store's problems)")
    try:
        cfg = RunConfig.from_dict(run.meta["config"], strict=False)
    except ConfigError as exc:
        raise NotExportable(f"its stored config no longer reads ({exc})") from None
    shape, classes = started.dataset.get("input_shape"), started.dataset.get("classes")
    try:
        ds = catalog.load_dataset(cfg.dataset, cfg.data_noise)
        shape, classes = shape or list(ds.input_shape), classes or ds.classes
        test_set, no_test_set = ((ds.x_test, ds.y_test), "") if len(ds.y_test) else (None, f"{ds.title} has no test set")
    except DatasetUnavailable as exc:
        if not (shape and classes):
            raise NotExportable(f"its network's input cannot be told without its dataset: {exc}") from None
        test_set, no_test_set = None, str(exc)
    end = next((e for e in reversed(run.events) if e.kind == "finished"), None)
    return model_archive(cfg, tuple(shape), list(classes), final.weights, test_set, getattr(end, "test_acc", None),
                         no_test_set)


def take_home_zip(run: StoredRun | None) -> bytes:
    """:func:`run_archive`, or (when there is none) a .zip holding only WHY.txt saying why: a download
    asked for just as the run left the store still gets an answer."""
    try:
        return run_archive(run)
    except NotExportable as exc:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("WHY.txt", f"This run has no trained model to take home: {exc}.\n")
        return buf.getvalue()
