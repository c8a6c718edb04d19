"""The configurable CNN in the run schema: its knobs stay out of the JSON and key at their defaults (old keys and links
unchanged), the defaults build the fixed CNN of before, parameter counts equal sum(p.numel()) of the built models,
shapes that do not fit are refused naming the value, and an image-folder upload trains the CNN at its own size."""
from __future__ import annotations

import dataclasses
import io
import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from core.engine.catalog import load_dataset
from core.engine.config import IMAGE_SHAPES, OMITTED_AT_DEFAULT, ConfigError, RunConfig, conv_stages
from core.engine.models import build_model, count_parameters, init_weights, parameter_shapes
from core.engine.task import canonical_json
from core.engine.uploads import prepare_csv, prepare_zip
from core.lab.convnet import cnn_against_mlp_here
from core.lessons.presets import CNN_SLOW, PRESETS
from core.serve import budget
from helpers import train_events

CONV_KNOBS = ("conv_channels", "conv_kernel", "conv_stride", "conv_padding", "conv_pool")
E8 = dict(PRESETS["E-eight-networks"].runs)["#8 conv32-conv32-128-64"]


def numel(cfg: RunConfig, shape: tuple[int, ...], classes: int = 10) -> int:
    return sum(p.numel() for p in build_model(cfg, shape, classes, torch.Generator().manual_seed(0)).parameters())


# --- keys and links -----------------------------------------------------------------------------------
def test_the_conv_knobs_at_their_defaults_stay_out_of_the_json_and_the_key():
    assert set(CONV_KNOBS) <= set(OMITTED_AT_DEFAULT)
    for cfg in (E8, RunConfig(), RunConfig(arch="cnn", dataset="digits", hidden=(64,))):
        data = json.loads(cfg.to_json())
        assert not set(CONV_KNOBS) & set(data)
        # What the key hashes is exactly the settings a config had before these knobs existed.
        before = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in OMITTED_AT_DEFAULT}
        before["hidden"] = list(cfg.hidden)
        assert canonical_json(data) == canonical_json(before)
        assert RunConfig.from_json(canonical_json(before)) == cfg  # a stored run of before loads as itself


def test_an_old_link_gives_the_same_config_and_a_changed_knob_its_own_key():
    old_link = {"arch": "cnn", "dataset": "fashion-mnist", "hidden": "128,64", "epochs": "20"}
    cfg = RunConfig.from_query(old_link)
    assert cfg == E8.replace(val_fraction=RunConfig().val_fraction) and cfg.to_query() == old_link
    keys = {cfg.key()}
    for name, value in [("conv_channels", (16, 32)), ("conv_kernel", 5), ("conv_stride", 2), ("conv_padding", 2),
                        ("conv_pool", "max")]:
        changed = cfg.replace(**{name: value})
        assert name in json.loads(changed.to_json())
        assert RunConfig.from_query(changed.to_query()) == changed
        assert RunConfig.from_json(changed.to_json()) == changed
        keys.add(changed.key())
    assert len(keys) == 6


def test_the_link_and_the_cli_read_channels_as_a_list():
    cfg = RunConfig.from_query({"arch": "cnn", "conv_channels": "8,16,32", "conv_pool": "avg"})
    assert cfg.conv_channels == (8, 16, 32) and cfg.to_query()["conv_channels"] == "8,16,32"
    with pytest.raises(ConfigError, match=r"Conv channels \(conv_channels\) must be whole numbers"):
        RunConfig.from_query({"conv_channels": "8,big"})
    with pytest.raises(ConfigError, match="give 1-6 blocks"):
        RunConfig.from_query({"conv_channels": ""})
    with pytest.raises(ConfigError, match=r"allowed in \[1, 512\]"):
        RunConfig.from_query({"conv_channels": "8,1000"})


# --- the network built ----------------------------------------------------------------------------------
def test_the_defaults_build_the_fixed_cnn_of_before():
    """conv 32 3x3 s1 p1 -> ReLU -> conv 32 3x3 s1 p1 -> ReLU -> the head: same modules, same initial weights."""
    cfg = RunConfig(arch="cnn", dataset="mnist", hidden=(64,), seed=3)
    before = nn.Sequential(nn.Conv2d(1, 32, 3, stride=1, padding=1), nn.ReLU(),
                           nn.Conv2d(32, 32, 3, stride=1, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 28 * 28, 64), nn.ReLU(), nn.Linear(64, 10))
    init_weights(before, cfg, torch.Generator().manual_seed(3))
    built = build_model(cfg, (1, 28, 28), 10, torch.Generator().manual_seed(3))
    assert repr(built) == repr(before)
    for (name, a), (other, b) in zip(built.state_dict().items(), before.state_dict().items(), strict=True):
        assert name == other and torch.equal(a, b)


CONFIGS = [
    RunConfig(arch="cnn", hidden=(64,)),
    RunConfig(arch="cnn", hidden=(128, 64), conv_channels=(32, 32)),  # E #8
    RunConfig(arch="cnn", hidden=(32,), conv_channels=(8, 16, 32), conv_pool="max"),
    RunConfig(arch="cnn", hidden=(), conv_channels=(6,), conv_kernel=5, conv_padding=0, conv_stride=2),
    RunConfig(arch="cnn", hidden=(20,), conv_channels=(4, 4), conv_kernel=1, conv_padding=0, conv_pool="avg"),
    RunConfig(arch="cnn", hidden=(16,), conv_channels=(8, 8), norm="batchnorm", dropout=0.3, conv_stride=2),
    RunConfig(arch="cnn", hidden=(16,), conv_channels=(8, 12), norm="layernorm", conv_kernel=4, conv_padding=3,
              conv_pool="max"),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{','.join(map(str, c.conv_channels))}-k{c.conv_kernel}"
                         f"s{c.conv_stride}p{c.conv_padding}-{c.conv_pool}-{c.norm}")
@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 16, 16)])
def test_parameter_counts_and_shapes_are_the_built_models(cfg, shape):
    try:
        stages = conv_stages(cfg, shape)
    except ConfigError:  # too small for this network: refused before anything is built
        with pytest.raises(ConfigError):
            build_model(cfg, shape, 10)
        return
    model = build_model(cfg, shape, 10, torch.Generator().manual_seed(0))
    assert [tuple(p.shape) for p in model.parameters()] == parameter_shapes(cfg, shape, 10)
    assert numel(cfg, shape) == count_parameters(cfg, shape, 10)
    x = torch.rand(5, *shape)
    assert model(x).shape == (5, 10)
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == \
        [(ch, (cfg.conv_kernel,) * 2, (cfg.conv_stride,) * 2, (cfg.conv_padding,) * 2) for ch in cfg.conv_channels]
    # Each stage's maps are what torch makes of the input, block by block.
    flat = next(i for i, m in enumerate(model) if isinstance(m, nn.Flatten))
    assert tuple(model[:flat](x).shape[1:]) == stages[-1].out_shape
    pools = [m for m in model if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))]
    assert len(pools) == (0 if cfg.conv_pool == "none" else len(cfg.conv_channels))
    norms = [m for m in model if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
    assert len(norms) == (0 if cfg.norm == "none" else len(cfg.conv_channels))


def test_the_memory_estimate_follows_the_maps():
    cfg = RunConfig(arch="cnn", dataset="digits", hidden=(16,), conv_channels=(8, 8))
    units = budget.activations_per_example(cfg, (1, 8, 8), 10)
    assert units == 2 * 8 * 64 + 8 * 64 + 16 + 10  # two conv outputs, the flattened maps, the head, the logits
    pooled = budget.activations_per_example(cfg.replace(conv_pool="max"), (1, 8, 8), 10)
    assert pooled == 8 * 64 + 8 * 16 + 8 * 16 + 8 * 4 + 8 * 4 + 16 + 10  # conv, pool, conv, pool, flattened


# --- bad input ---------------------------------------------------------------------------------------------
def test_a_kernel_larger_than_its_padded_input_is_refused_naming_it():
    with pytest.raises(ConfigError) as err:
        RunConfig(arch="cnn", dataset="digits", conv_kernel=9, conv_padding=0)
    message = err.value.problems["conv_kernel"]
    assert "Conv kernel (conv_kernel) = 9" in message and "block 1's input 8x8 with padding 0" in message
    RunConfig(arch="cnn", dataset="digits", conv_kernel=9, conv_padding=1, conv_channels=(8,))  # room: 10x10
    RunConfig(arch="mlp", dataset="digits", conv_kernel=9, conv_padding=0)  # an MLP builds no conv


def test_a_stride_that_leaves_no_room_for_the_next_block_is_refused_naming_it():
    with pytest.raises(ConfigError) as err:
        RunConfig(arch="cnn", dataset="digits", conv_stride=4, conv_padding=0, conv_channels=(8, 8))
    message = err.value.problems["conv_kernel"]
    assert "block 2's input 2x2" in message and "stride 4" in message and "input 8x8 -> block 1 2x2" in message
    assert conv_stages(RunConfig(arch="cnn", conv_stride=4, conv_padding=0, conv_channels=(8,)), (1, 8, 8))[0].out_hw \
        == (2, 2)


def test_pooling_that_leaves_no_output_is_refused_naming_it():
    with pytest.raises(ConfigError) as err:
        RunConfig(arch="cnn", dataset="digits", conv_pool="max", conv_channels=(8, 8, 8, 8))
    message = err.value.problems["conv_pool"]
    assert "Pooling (conv_pool) = 'max'" in message and "block 4 leaves 1x1" in message
    RunConfig(arch="cnn", dataset="digits", conv_pool="max", conv_channels=(8, 8, 8))  # 8 -> 4 -> 2 -> 1: fits
    RunConfig(arch="cnn", dataset="mnist", conv_pool="avg", conv_channels=(8, 8, 8, 8))  # 28 -> 14 -> 7 -> 3 -> 1


def test_every_image_shape_the_schema_checks_is_the_datasets_own():
    assert load_dataset("digits").input_shape == IMAGE_SHAPES["digits"]
    assert load_dataset("fashion3").input_shape == IMAGE_SHAPES["fashion3"]


def test_a_non_image_dataset_is_refused():
    with pytest.raises(ConfigError, match="needs an image dataset, not the 2-D toy set 'moons'"):
        RunConfig(arch="cnn", dataset="moons")


def test_a_cnn_over_the_servers_caps_is_refused_naming_the_cap_and_the_estimate(isolated_cache, monkeypatch):
    big = RunConfig(arch="cnn", dataset="digits", conv_channels=(512,) * 6, conv_kernel=9, conv_padding=4,
                    hidden=(4096,), epochs=200)
    with pytest.raises(budget.Refused) as err:
        budget.check(big)
    estimate = budget.estimate(big)
    assert "GRADIENT_LAB_MAX_JOB_COST" in str(err.value) and f"{estimate.cost:.3g}" in str(err.value)
    assert f"{estimate.parameters:.3g} parameters" in str(err.value)
    monkeypatch.setenv("GRADIENT_LAB_MAX_JOB_MEMORY_MB", "1")
    small = RunConfig(arch="cnn", dataset="digits", conv_channels=(64, 64), hidden=(16,), batch_size=4096)
    with pytest.raises(budget.Refused, match=r"GRADIENT_LAB_MAX_JOB_MEMORY_MB"):
        budget.check(small)


# --- uploads ---------------------------------------------------------------------------------------------
def stripes_zip(size: int, per_class: int, seed: int = 0) -> bytes:
    """Two classes told apart only by orientation: horizontal and vertical stripes at a random phase, with noise."""
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for label, axis in (("horizontal", 0), ("vertical", 1)):
            for i in range(per_class):
                line = (np.arange(size) + rng.integers(0, 4)) % 4 < 2
                pixels = np.repeat(line[:, None], size, axis=1) if axis == 0 else np.repeat(line[None, :], size, axis=0)
                noisy = np.clip(pixels * 200.0 + rng.normal(0, 40, (size, size)), 0, 255).astype(np.uint8)
                buffer = io.BytesIO()
                Image.fromarray(noisy, "L").save(buffer, format="PNG")
                archive.writestr(f"{label}/{i}.png", buffer.getvalue())
    return out.getvalue()


def test_an_image_folder_upload_trains_the_cnn_at_its_own_size(isolated_cache):
    upload = prepare_zip(stripes_zip(12, 60), image_size=12).dataset
    assert upload.input_shape == (1, 12, 12)
    cfg = RunConfig(dataset=upload.name, arch="cnn", conv_channels=(8, 8), conv_pool="max", hidden=(16,), epochs=8,
                    batch_size=16, log_every=20, seed=0)
    versus = dict(cnn_against_mlp_here(cfg).family())  # what the page trains, sized for this upload's images
    assert count_parameters(versus["MLP"], (1, 12, 12), 2) >= count_parameters(cfg, (1, 12, 12), 2)
    end, _ = train_events(cfg)
    assert end.status == "finished" and end.test_acc > 0.8  # chance is 0.5: it learned the orientation


def test_an_upload_too_small_for_the_cnn_is_refused_naming_the_block(isolated_cache):
    upload = prepare_zip(stripes_zip(8, 6), image_size=8).dataset
    cfg = RunConfig(dataset=upload.name, arch="cnn", conv_channels=(8, 8, 8, 8), conv_pool="max")  # not known before
    with pytest.raises(ConfigError, match="block 4 leaves 1x1"):
        cnn_against_mlp_here(cfg)


def test_csv_features_that_are_not_a_square_image_are_refused_for_the_cnn(isolated_cache):
    rows = ["label," + ",".join(f"p{i}" for i in range(10))] + \
        [f"{i % 2}," + ",".join(str((i * 7 + j) % 256) for j in range(10)) for i in range(40)]
    upload = prepare_csv("\n".join(rows).encode()).dataset
    with pytest.raises(ValueError, match="not an image dataset.*not a square number"):
        cnn_against_mlp_here(RunConfig(dataset=upload.name, arch="cnn"))


def test_the_slow_preset_is_seed_004s_network_8():
    """The same network, data and training as E #8 (conv 32 3x3 -> conv 32 3x3 -> 128 -> 64 on all of Fashion-MNIST,
    Adam lr 0.001, batch 64, 20 epochs); only how often it is logged may differ."""
    same = ("dataset", "train_limit", "arch", "hidden", "activation", "norm", "dropout", "optimizer", "lr",
            "batch_size", "epochs", "val_fraction", "seed", "init", "loss") + CONV_KNOBS
    assert {k: getattr(CNN_SLOW, k) for k in same} == {k: getattr(E8, k) for k in same}
    # conv1 320 + conv2 9,248 + 25,088x128 3,211,392 + 128x64 8,256 + 64x10 650
    assert count_parameters(CNN_SLOW, (1, 28, 28), 10) == numel(E8, (1, 28, 28)) == 3_229_866
