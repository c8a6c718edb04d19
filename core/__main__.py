"""Command line: ``python -m core presets | run | warm``.

    python -m core presets
    python -m core run --preset E2                   # trains (or replays from the cache)
    python -m core run --config run.json --set epochs=2 --force
    python -m core run --preset A-sigmoid-depth --as-reported   # accuracies also as the A/B reports computed them
    python -m core warm --preset A-sigmoid-depth A-fixes   # fill the cache before a lecture
    python -m core warm --lecture vanishing                 # every step's jobs of a lecture, at low priority
    python -m core gradcheck --preset B-regularization [--float32] [--eps 1e-7] [--set k=v]
    python -m core gradcheck --run KEY [--at final]     # a stored run, at its init or its trained weights
    python -m core sweep --preset D-sweep --trials 60 --sampler tpe   # an Optuna sweep (resumes if interrupted)
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from tqdm import tqdm

from core.engine.config import FIELDS, ConfigError, RunConfig, parse_value
from core.engine.data import DatasetUnavailable
from core.lab.gradcheck.numeric import DEFAULT_EPS, DEFAULT_MAX_ENTRIES, MISTAKES, check_gradients
from core.lab.gradcheck.options import AT_CHOICES
from core.lab.gradcheck.result import format_table
from core.lab.gradcheck.stored import NoStoredWeights, RunGone, check_stored_run
from core.engine.task import clipped, shortened
from core.engine.events import RUN_ENDINGS, SERVED_FROM_STORE
from core.serve.budget import Refused, check_sweep
from core.serve.jobs import get_manager
from core.serve.store import RunStore
from core.lessons.presets import PRESETS, get_preset
from core.lessons.families import SWEEP_PRESETS
from core.lessons.lectures import LectureError, all_lectures, step_jobs
from core.engine import data as datasets
from core.lessons.sentences import REPORTED_BUG, check_diagnosis, printed_as_reported
from core.lab.sweep.space import PRUNERS, SAMPLERS
from core.lab.sweep.study import SweepStorageError, open_study


MAX_ERROR_CHARS = 2000  # an error quotes what it refused; a 10 MB value is not echoed back whole


def error(message: object) -> None:
    print(f"error: {clipped(message, MAX_ERROR_CHARS)}", file=sys.stderr)


def _configs(args: argparse.Namespace) -> list[tuple[str, RunConfig]]:
    if args.config:
        with open(args.config, encoding="utf-8") as fh:
            runs = [(args.config, RunConfig.from_json(fh.read()))]
    else:
        runs = []
        for name in args.preset:
            preset = get_preset(name)
            chosen = preset.runs if args.all or args.index is None and len(preset.runs) == 1 or args.command == "warm" \
                else [preset.runs[args.index or 0]]
            runs += [(f"{name} / {label}", cfg) for label, cfg in chosen]
    overrides = {}
    for item in args.set or []:
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in FIELDS:
            raise ConfigError({name: f"Unknown setting {shortened(name)} in --set; known settings: "
                                     f"{', '.join(FIELDS)}"})
        overrides[name] = parse_value(name, value)
    return [(label, cfg.replace(**overrides)) for label, cfg in runs]


def _watch(label: str, key: str, quiet: bool) -> dict:
    manager = get_manager()
    seen, bar, last, classes = 0, None, None, 0
    while True:
        snap = manager.snapshot(key, since=seen)
        seen += len(snap.events)
        for event in snap.events:
            if event.kind == "started":
                classes = len(event.dataset.get("classes", []))
            if event.kind == "started" and not quiet:
                bar = tqdm(total=event.total_steps, desc=label, unit="step", file=sys.stderr)
            elif event.kind == "eval":
                last = event
                if bar is not None:
                    bar.update(event.step - bar.n)
                    bar.set_postfix(train_loss=f"{event.train_loss:.4f}", val_acc=f"{event.val_acc:.4f}")
        if snap.done:
            if bar is not None:
                bar.close()
            end = next((e for e in reversed(manager.snapshot(key).events) if e.kind in ("finished", "failed")), None)
            return {"status": snap.status, "cached": snap.from_cache, "end": end, "last": last,
                    "saved": snap.from_cache or snap.saved_at is not None, "error": snap.error, "classes": classes}
        time.sleep(0.1)


def _print_result(label: str, key: str, result: dict, as_reported: bool = False) -> None:
    """The run's final metrics; ``as_reported``: each accuracy also as the reports of lessons A and B computed it
    (core.lessons.sentences.printed_as_reported), labelled."""
    end = result["end"]
    source = " (from cache)" if result["cached"] else ""
    if result["status"] in RUN_ENDINGS and not result["saved"]:
        source = f" but NOT SAVED ({result['error']})"
    print(f"{label}: {result['status']}{source}  key={key}")
    if end is None:
        return
    if end.kind == "failed":
        print(f"  error: {end.message}")
        return
    if end.reason:
        print(f"  {end.reason}")
    rows = [("train", end.train_loss, end.train_acc), ("validation", end.val_loss, end.val_acc),
            ("test", end.test_loss, end.test_acc)]
    classes = result.get("classes", 0)
    for name, loss, acc in rows:
        if loss is not None:
            reported = (f"  as reported (A/B) {printed_as_reported(acc, classes):.4f}"
                        if as_reported and acc is not None and classes else "")
            print(f"  {name:<10} loss {loss:.4f}  accuracy {acc:.4f}{reported}")
    if as_reported and classes:
        print(f"  as reported (A/B): {REPORTED_BUG} ({classes} classes)")
    if end.test_ce is not None and end.test_ce != end.test_loss:  # e.g. softmax applied twice (report 004)
        print(f"  true cross-entropy: validation {end.val_ce:.4f}, test {end.test_ce:.4f}")
    if end.epoch_seconds:
        print(f"  {sum(end.epoch_seconds) / len(end.epoch_seconds):.2f} s/epoch, {end.elapsed:.1f} s in all")


def _gradcheck(args: argparse.Namespace) -> int:
    args.preset = [args.preset] if args.preset else None
    args.all = False
    options = dict(eps=args.eps, dtype=torch.float32 if args.float32 else torch.float64,
                   dropout_active=args.dropout_on, at_kinks=args.kinks, backprop="by_hand" if args.by_hand else None,
                   mistake=args.mistake, max_entries=args.max_entries or None, n_examples=args.examples)
    try:
        if args.run:
            label, result = args.run, check_stored_run(args.run, RunStore().get, at=args.at, **options)
        else:
            if args.at != "init":
                raise ValueError("--at final needs a stored run: --run KEY")
            label, cfg = _configs(args)[0]
            result = check_gradients(cfg, **options)
    except (RunGone, NoStoredWeights) as exc:
        error(exc.args[0])
        return 2
    except (ConfigError, ValueError, KeyError, OSError, IndexError) as exc:
        error(exc)
        return 2
    s = result.settings
    print(f"{label}: gradient check at {s['where']}, {s['dtype']}, eps={s['eps']:g}, {s['examples']} examples, "
          f"backprop {s['backprop']}")
    print(format_table(result))
    for line in filter(None, check_diagnosis(result)):
        print(line)
    for note in result.notes:
        print(f"note: {note}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    try:
        sweep = SWEEP_PRESETS[args.preset].sweep
        base = sweep.base
        for item in args.set or []:
            name, _, value = item.partition("=")
            base = base.replace(**{name.strip(): parse_value(name.strip(), value)})
        changes = {k: getattr(args, k) for k in ("trials", "sampler", "pruner", "seed") if getattr(args, k) is not None}
        sweep = sweep.replace(base=base, **changes)
        check_sweep(sweep)
        open_study(sweep)  # an unreachable database is reported here, before any training
    except (ConfigError, SweepStorageError, ValueError, KeyError) as exc:
        error(exc)
        return 2
    manager = get_manager()
    key = manager.submit(sweep)
    seen, bar, storage = 0, None, ""
    while True:
        snap = manager.snapshot(key, since=seen)
        seen += len(snap.events)
        for event in snap.events:
            if event.kind == "sweep_started":
                storage = event.storage
                if not args.quiet:
                    bar = tqdm(total=event.budget, initial=event.done_before, desc=args.preset, unit="trial",
                               file=sys.stderr)
            elif event.kind == "trial_done" and bar is not None:
                bar.update(1)
                if event.value is not None:
                    bar.set_postfix(last=f"{event.value:.4f}")
        if snap.done:
            break
        time.sleep(0.2)
    if bar is not None:
        bar.close()
    end = next((e for e in reversed(manager.snapshot(key).events) if e.kind in ("finished", "failed")), None)
    if end is None or end.kind == "failed":
        print(f"error: {end.message if end else 'the sweep did not end'}", file=sys.stderr)
        return 1
    study = open_study(sweep)
    print(f"{args.preset}: {end.status}{' (from cache)' if snap.from_cache else ''}  {end.reason}")
    if end.val_acc is not None:
        best = study.best_trial
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items())
        test = best.user_attrs.get("test_acc")
        print(f"  best trial {best.number}: validation accuracy {best.value:.4f}"
              f"{f', test accuracy {test:.4f}' if test is not None else ''}")
        print(f"  {params}")
        print(f"  run key {best.user_attrs.get('key', '')}")
    print(f"  study {sweep.study_name()} stored in {storage or 'the sweep database'}")
    return 0


def _available(name: str) -> bool:
    try:
        return datasets.available(name)
    except Exception:  # a damaged data folder: the step gets its fallback
        return False


def _warm_lecture(name: str) -> int:
    """Every step's jobs of lecture ``name`` submitted at low priority, then waited for; one line per job."""
    try:
        lectures, problems = all_lectures()
    except LectureError as exc:
        error(exc)
        return 2
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    lecture = lectures.get(name)
    if lecture is None:
        error(f"there is no lecture called {shortened(name)}; lectures: {', '.join(lectures)}")
        return 2
    manager = get_manager()
    failures, keys, with_jobs, not_ready = 0, [], set(), set()
    for number, step in enumerate(lecture.steps, start=1):
        jobs = step_jobs(step, _available)
        if not jobs:
            print(f"step {number} ({step.page}): nothing to prepare, the page trains nothing for it")
        with_jobs.update([number] if jobs else [])
        for job in jobs:
            try:
                keys.append((number, manager.submit(job, background=True)))
            except Refused as exc:
                error(f"step {number}: {exc}")
                failures += 1
                not_ready.add(number)
    for number, key in keys:
        snap = manager.wait(key)
        print(f"step {number}: {snap.status}{' (from cache)' if snap.from_cache else ''}  key={key}")
        failures += snap.status not in RUN_ENDINGS
        if snap.status not in SERVED_FROM_STORE:
            not_ready.add(number)
    print(f"{len(with_jobs - not_ready)} of {len(with_jobs)} steps ready")  # as the presenter view counts them
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core", description="Gradient Lab engine")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("presets", help="list the named experiments")
    for name, help_text in (("run", "train a preset or a config file and print its final metrics"),
                            ("warm", "train every run of the given presets into the cache")):
        p = sub.add_parser(name, help=help_text)
        src = p.add_mutually_exclusive_group(required=True)
        src.add_argument("--preset", nargs="+", choices=sorted(PRESETS), metavar="NAME")
        src.add_argument("--config", metavar="FILE.json")
        if name == "warm":
            src.add_argument("--lecture", metavar="NAME", help="every step's jobs of a lecture (built-in or the "
                                                              "GRADIENT_LAB_LECTURES_DIR folder), at low priority")
        p.add_argument("--index", type=int, help="which run of a preset family (default: the first)")
        p.add_argument("--all", action="store_true", help="every run of the preset family")
        p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a config field")
        p.add_argument("--force", action="store_true", help="train again even if the cache has this run")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.add_argument("--as-reported", action="store_true",
                       help="also print each accuracy as the coursework reports of lessons A and B computed it")
    g = sub.add_parser("gradcheck", help="check a config's gradients layer by layer (float64 finite differences)")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", choices=sorted(PRESETS), metavar="NAME")
    src.add_argument("--config", metavar="FILE.json")
    src.add_argument("--run", metavar="KEY", help="a stored run's key (the Run library lists them)")
    g.add_argument("--at", choices=list(AT_CHOICES), default="init",
                   help="with --run: check at the run's initialization (init) or its stored final weights (final)")
    g.add_argument("--index", type=int, help="which run of a preset family (default: the first)")
    g.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a config field")
    g.add_argument("--eps", type=float, default=DEFAULT_EPS, help=f"finite-difference step (default {DEFAULT_EPS:g})")
    g.add_argument("--float32", action="store_true", help="check in float32 instead of float64")
    g.add_argument("--dropout-on", action="store_true", help="keep dropout active while checking")
    g.add_argument("--kinks", action="store_true", help="move ReLU pre-activations onto the kink first")
    g.add_argument("--by-hand", action="store_true", help="compare with the by-hand backward of core/engine/scratch.py")
    g.add_argument("--mistake", choices=MISTAKES, help="reproduce a classic mistake (perturb_copy: the seeds' 0.99999)")
    g.add_argument("--max-entries", type=int, default=DEFAULT_MAX_ENTRIES,
                   help=f"per layer; larger layers are sampled (default {DEFAULT_MAX_ENTRIES}; 0 = every entry)")
    g.add_argument("--examples", type=int, default=32, help="training examples in the check batch")
    p = sub.add_parser("sweep", help="search a sweep preset's space with Optuna; prints the best trial")
    p.add_argument("--preset", required=True, choices=sorted(SWEEP_PRESETS), metavar="NAME",
                   help=f"one of {', '.join(SWEEP_PRESETS)}")
    p.add_argument("--trials", type=int, help="trial budget (default: the preset's)")
    p.add_argument("--sampler", choices=SAMPLERS, help="default: the preset's")
    p.add_argument("--pruner", choices=PRUNERS, help="default: the preset's")
    p.add_argument("--seed", type=int, help="the sampler's seed")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a field of the base run")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    os.environ.setdefault("GRADIENT_LAB_TORCH_THREADS", str(os.cpu_count() or 1))  # no web server to leave room for

    if args.command == "presets":
        for preset in PRESETS.values():
            print(f"{preset.name:<18} [{preset.lesson}] {preset.title} ({len(preset.runs)} run"
                  f"{'s' if len(preset.runs) > 1 else ''})")
        return 0
    if args.command == "gradcheck":
        return _gradcheck(args)
    if args.command == "sweep":
        return _sweep(args)
    if args.command == "warm" and args.lecture:
        return _warm_lecture(args.lecture)
    try:
        runs = _configs(args)
    except (ConfigError, ValueError, KeyError, OSError, IndexError) as exc:
        error(exc)
        return 2
    manager = get_manager()
    for problem in manager.store.problems:
        print(f"warning: {problem}", file=sys.stderr)
    failures = unsaved = 0
    for label, cfg in runs:
        try:
            key = manager.submit(cfg, force=args.force)
        except Refused as exc:
            error(f"{label}: {exc}")
            failures += 1
            continue
        result = _watch(label, key, args.quiet)
        _print_result(label, key, result, args.as_reported)
        failures += result["status"] == "failed"
        unsaved += result["status"] in RUN_ENDINGS and not result["saved"]
    if manager.store.health():
        print(f"warning: {manager.store.health()}", file=sys.stderr)
    return 1 if failures else (3 if unsaved else 0)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DatasetUnavailable as exc:
        error(exc)
        sys.exit(2)
