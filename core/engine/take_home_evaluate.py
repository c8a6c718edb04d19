"""Rebuild a network trained in Gradient Lab and score it on its test set: plain PyTorch and safetensors,
nothing of Gradient Lab needed.

    python3 -m pip install torch safetensors
    python3 evaluate.py

network.json lists the layers in order; model.safetensors holds their weights (loaded without pickle);
test_set.safetensors holds the test examples as the app scored them (images as bytes, scaled to [0, 1] here).
"""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

HERE = Path(__file__).resolve().parent


class Residual(nn.Module):
    """x + body(x): a hidden layer whose input is added to its output."""

    def __init__(self, layers: list) -> None:
        super().__init__()
        self.body = nn.Sequential(*[BUILD[layer["type"]](layer) for layer in layers])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


BUILD = {
    "residual": lambda layer: Residual(layer["layers"]),
    "flatten": lambda layer: nn.Flatten(),
    "linear": lambda layer: nn.Linear(layer["in"], layer["out"]),
    "conv2d": lambda layer: nn.Conv2d(layer["in"], layer["out"], layer["kernel"], stride=layer["stride"],
                                      padding=layer["padding"]),
    "batchnorm1d": lambda layer: nn.BatchNorm1d(layer["features"], eps=layer["eps"]),
    "batchnorm2d": lambda layer: nn.BatchNorm2d(layer["features"], eps=layer["eps"]),
    "layernorm": lambda layer: nn.LayerNorm(layer["shape"], eps=layer["eps"]),
    "groupnorm": lambda layer: nn.GroupNorm(layer["groups"], layer["features"], eps=layer["eps"]),
    "dropout": lambda layer: nn.Dropout(layer["p"]),  # does nothing in eval mode
    "sigmoid": lambda layer: nn.Sigmoid(),
    "tanh": lambda layer: nn.Tanh(),
    "relu": lambda layer: nn.ReLU(),
    "leaky_relu": lambda layer: nn.LeakyReLU(layer["slope"]),
    "elu": lambda layer: nn.ELU(layer["alpha"]),
    "gelu": lambda layer: nn.GELU(approximate=layer["approximate"]),
    "identity": lambda layer: nn.Identity(),
}


def build(network: dict) -> nn.Sequential:
    return nn.Sequential(*[BUILD[layer["type"]](layer) for layer in network["layers"]])


def main() -> None:
    network = json.loads((HERE / "network.json").read_text())
    model = build(network)
    model.load_state_dict(load_file(HERE / "model.safetensors"))
    model.eval()
    if not (HERE / "test_set.safetensors").is_file():
        sys.exit(f"The network is rebuilt, but this archive holds no test set: {network.get('no_test_set', '')}")
    test = load_file(HERE / "test_set.safetensors")
    x, y = test["x"], test["y"]
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    with torch.no_grad():
        pred = torch.cat([model(chunk).argmax(dim=1) for chunk in x.split(4096)])
    correct = int((pred == y).sum())
    print(json.dumps({"correct": correct, "examples": len(y), "test_accuracy": correct / len(y),
                      "app_test_accuracy": network.get("app_test_accuracy")}))


if __name__ == "__main__":
    main()
