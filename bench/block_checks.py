"""What the block contract costs: the pre-training equivalence check per trial, and `validate`'s quick contract run.

    python bench/block_checks.py [--reps 5] [--threads 1] [--block-module FILE ...]

(1) per trial, on the CPU: the untrained network (random BN statistics) deployed and compared
    (`run.trial._check_untrained`), timed interleaved with one training iteration of the same candidate
    (batch 16, 48 px LR patches, Adam), so machine noise hits both alike; the ratio is what matters.
(2) `check_family(block, quick=True)` (what `sr-search validate` runs once per family of your own) and the full
    `check_family(block)`, for the families named (default: a few built-ins, as stand-ins of a user's family).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sr_search import PRESETS
from sr_search.model.blocks import load_block_module
from sr_search.model.network import build
from sr_search.model.spec import ArchSpec
from sr_search.model.testing import check_family
from sr_search.run.trial import _check_untrained

SPECS = {
    "plain C32 D4 x2": ArchSpec(block="plain", scale=2, channels=32, depth=4),
    "rep C32 D8 x2 (BN)": ArchSpec(block="rep", scale=2, channels=32, depth=8),
    "ecb C16 D4 x4": PRESETS["ecbsr-m4c16-x4"],
    "rlfb C48 D6 x4": ArchSpec(block="rlfb", scale=4, channels=48, depth=6),
}


def _ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def train_step(spec: ArchSpec):
    model = build(spec)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    x = torch.rand(16, spec.colors, 48, 48)
    y = torch.rand(16, spec.colors, 48 * spec.scale, 48 * spec.scale)

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.l1_loss(model(x), y).backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--block-module", action="append", default=[])
    parser.add_argument("--families", nargs="*", default=["plain", "rep", "ecb", "span"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for ref in args.block_module:
        load_block_module(ref)

    print(f"(1) pre-training check vs one training iteration, CPU, {args.threads} thread(s), median of {args.reps}, "
          f"interleaved")
    print(f"{'candidate':22s} {'check ms':>9s} {'1 train it ms':>14s} {'ratio':>7s}")
    for name, spec in SPECS.items():
        step = train_step(spec)
        step()  # warm-up
        _check_untrained(spec, torch.device("cpu"), 0)
        checks, steps = [], []
        for _ in range(args.reps):
            checks.append(_ms(lambda s=spec: _check_untrained(s, torch.device("cpu"), 0)))
            steps.append(_ms(step))
        c, s = statistics.median(checks), statistics.median(steps)
        print(f"{name:22s} {c:9.1f} {s:14.1f} {c / s:7.2f}")

    print("\n(2) contract run per family: quick (what validate runs) and full (check_family), seconds")
    print(f"{'family':12s} {'quick s':>8s} {'full s':>8s}")
    for block in [*args.families]:
        start = time.perf_counter()
        check_family(block, quick=True)
        quick = time.perf_counter() - start
        start = time.perf_counter()
        check_family(block)
        print(f"{block:12s} {quick:8.2f} {time.perf_counter() - start:8.2f}")


if __name__ == "__main__":
    main()
