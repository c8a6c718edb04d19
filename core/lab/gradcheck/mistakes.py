"""The seeds' 0.99999: the B network's check done right and with each suspected cause."""
from __future__ import annotations

from core.engine.config import RunConfig
from core.lab.gradcheck.numeric import check_gradients
from core.lab.gradcheck.options import CheckOptions
from core.lab.gradcheck.result import GradCheck

SEED_VALUE = 0.9999999999998282  # what seed 001 printed for the B network ("our gradient is not proper")
SEED_VARIANTS = {  # label -> the check's switches
    "float64, ε = 1e-6 (a correct check)": CheckOptions(),
    "float32, ε = 1e-7": CheckOptions(precision="float32", eps=1e-7),
    "perturbing a copy of the weights": CheckOptions(mistake="perturb_copy"),
}


def seed_variants(cfg: RunConfig, **options) -> dict[str, GradCheck]:
    """The B network's check done right and with each suspected cause of the seed's 0.99999.

    A relative difference of 1 − δ with tiny δ means one gradient is about δ times the other, i.e.
    effectively zero. Perturbing a copy makes every numeric entry exactly 0 (difference 1 in every
    layer); float32 with ε = 1e-7 zeroes the layers whose loss change is below float32's rounding
    step, but not the output layer, so its whole-network value stays well below 1."""
    return {label: check_gradients(cfg, **{**options, **variant.kwargs()}) for label, variant in SEED_VARIANTS.items()}
