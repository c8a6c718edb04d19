"""A full gradient check of the B network (784-13-13-13-3, every entry): batched vs the naive loop.

    python bench/bench_gradcheck.py [--threads N] [--repeat 3] [--examples 32]

The network is the first config of the B-regularization preset on fashion3 (3 classes of
Fashion-MNIST, read from GRADIENT_LAB_DATA_DIR or ../shared/datasets). Both ways compute the same
10,611 central differences (21,222 forwards) in float64: batched = functional_call under vmap in
chunks (core.lab.gradcheck), naive = one in-place perturbation and one forward at a time. Prints each
wall time (fastest of --repeat), their ratio and the largest difference between the two results.
"""
from __future__ import annotations

import argparse
import time

import benchlib  # noqa: F401,E402  (repo on sys.path, datasets folder, offline)

import torch  # noqa: E402

from core.lab.gradcheck.numeric import check_gradients  # noqa: E402
from core.lab.gradcheck.result import format_table  # noqa: E402
from core.lessons.presets import get_preset  # noqa: E402


def best_of(repeat: int, **options):
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = check_gradients(CFG, max_entries=None, **options)
        best = min(best, time.perf_counter() - start)
    return best, result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--examples", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    CFG = get_preset("B-regularization").config
    check_gradients(CFG, max_entries=10, n_examples=args.examples)  # load the data, warm up
    batched_s, batched = best_of(args.repeat, n_examples=args.examples)
    loop_s, loop = best_of(args.repeat, n_examples=args.examples, batched=False)
    gap = max(abs(a["numeric"] - b["numeric"]) for a, b in zip(batched.pairs, loop.pairs))
    print(f"B network {CFG.dataset} {'-'.join(str(w) for w in CFG.hidden)}: {batched.checked} entries "
          f"({2 * batched.checked} forwards), {args.examples} examples, float64, {args.threads} CPU thread(s)")
    print(format_table(batched))
    print(f"batched (functional_call + vmap): {batched_s:.2f} s")
    print(f"naive loop:                       {loop_s:.2f} s")
    print(f"ratio loop / batched:             {loop_s / batched_s:.2f}x")
    print(f"largest |numeric batched - numeric loop| over sampled pairs: {gap:.2e}")
