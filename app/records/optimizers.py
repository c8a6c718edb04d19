"""Display reductions for the Optimizers lesson (pure: events in, numbers and sentences out)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from core.events import Event


@dataclass
class LossRunSummary:
    """What the CE-vs-MSE sentence is written from: one run's final metrics and its early gradients."""

    label: str
    val_acc: float
    val_loss: float
    first_grad_norm: float  # mean over layers of the gradient norm at the first log point
    first_step: int  # that log point's step
    step: int  # the last evaluation's step


def loss_run_summary(label: str, events: Sequence[Event]) -> LossRunSummary | None:
    """The summary of a finished run (None while it has no evaluation or no layer statistics yet)."""
    evals = [e for e in events if e.kind == "eval"]
    layers = [e for e in events if e.kind == "layers"]
    if not evals or not layers:
        return None
    norms = [g for g in layers[0].grad_norm if g == g]
    return LossRunSummary(label, evals[-1].val_acc, evals[-1].val_loss,
                          sum(norms) / len(norms) if norms else float("nan"), layers[0].step, evals[-1].step)


def losses_sentence(ce: LossRunSummary, mse: LossRunSummary) -> str:
    """A sentence on cross-entropy vs MSE on softmax, written from the two runs' numbers."""
    ratio = ce.first_grad_norm / mse.first_grad_norm if mse.first_grad_norm > 0 else float("inf")
    if ratio > 1:
        grads = (f"At the first log point (step {ce.first_step}) the gradients reaching the "
                 f"layers were {ratio:.1f}x smaller with MSE than with cross-entropy: MSE on a softmax output "
                 "multiplies the error by the softmax's slope p(1 - p), which is small whenever a class "
                 "probability is near 0 or 1, even when that confident answer is wrong, while cross-entropy's "
                 "gradient on the logits is just p - y.")
    else:
        grads = (f"Here the early gradients were not smaller with MSE ({1 / ratio:.1f}x those of cross-entropy), "
                 "so the softmax's slope p(1 - p) did not damp this run much at the start.")
    if ce.val_acc > mse.val_acc:
        outcome = (f"Cross-entropy ended ahead: validation accuracy {ce.val_acc:.3f} against {mse.val_acc:.3f} "
                   "for MSE after the same steps.")
    elif ce.val_acc < mse.val_acc:
        outcome = (f"MSE ended ahead here: validation accuracy {mse.val_acc:.3f} against {ce.val_acc:.3f} "
                   "for cross-entropy after the same steps.")
    else:
        outcome = f"Both ended at validation accuracy {ce.val_acc:.3f}."
    return f"{grads} {outcome}"


def end_points_table(labels: Sequence[str], events_per_run: Sequence[Sequence[Event]]) -> list[dict]:
    """One row per run: final train/validation loss and accuracy (runs without an evaluation are left out)."""
    rows = []
    for label, events in zip(labels, events_per_run):
        evals = [e for e in events if e.kind == "eval"]
        if evals:
            last = evals[-1]
            rows.append({"optimizer": label, "step": last.step, "train loss": last.train_loss,
                         "val loss": last.val_loss, "val accuracy": last.val_acc})
    return rows


# --- the 2-D race's settings in the URL -------------------------------------------------------------
RACE_FLOATS = ("kappa", "x0", "y0", "lr", "lr_adaptive", "momentum", "rms_alpha", "beta1", "beta2")


def race_query(settings: dict) -> dict[str, str]:
    """The race's settings as query-string values (``optimizers`` comma-separated)."""
    out = {k: repr(float(settings[k])) for k in RACE_FLOATS}
    out.update(fn=settings["fn"], steps=str(int(settings["steps"])), optimizers=",".join(settings["optimizers"]))
    return out


def race_from_query(query: dict, defaults: dict, functions: Sequence[str], optimizers: Sequence[str],
                    choices: dict[str, Sequence[float]], ranges: dict[str, tuple[float, float]]) -> tuple[dict, list[str]]:
    """Settings from a link: each known value that parses and is allowed replaces the default; the
    others are named in the notices (the rest of the link still loads)."""
    settings, bad, unknown = dict(defaults), [], []
    for name, raw in query.items():
        try:
            if name == "fn":
                if raw not in functions:
                    raise ValueError
                settings["fn"] = raw
            elif name == "optimizers":
                chosen = [o for o in str(raw).split(",") if o]
                if any(o not in optimizers for o in chosen):
                    raise ValueError
                settings["optimizers"] = chosen
            elif name == "steps":
                value = int(raw)
                lo, hi = ranges["steps"]
                if not lo <= value <= hi:
                    raise ValueError
                settings["steps"] = value
            elif name in RACE_FLOATS:
                value = float(raw)
                if name in choices and value not in choices[name]:
                    raise ValueError
                if name in ranges and not ranges[name][0] <= value <= ranges[name][1]:
                    raise ValueError
                settings[name] = value
            else:
                unknown.append(name)
        except (TypeError, ValueError):
            bad.append(f"{name}={raw}")
    notices = []
    if unknown:
        notices.append(f"The link had settings this version does not know, which were ignored: {', '.join(unknown)}.")
    if bad:
        notices.append(f"Some of the link's race settings are not allowed and were replaced by defaults: {', '.join(bad)}.")
    return settings, notices
