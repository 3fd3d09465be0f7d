"""CPU forward time of the training form vs the deployed (reparameterized) form, measured side by side.

    python bench/deploy_speed.py [--reps 10] [--threads 2]

Models: RepSR and ECBSR at M4C16 and M16C64, x4, 160x90 LR input (-> 640x360), batch 1, fp32, eval mode.
Both forms of one model are timed interleaved (A, B, A, B, ...) so machine noise hits them alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sr_search import PRESETS, build, reparameterize

MODELS = ["repsr-m4c16-x4", "repsr-m16c64-x4", "ecbsr-m4c16-x4", "ecbsr-m16c64-x4"]


def _once(model: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model(x)
    return (time.perf_counter() - start) * 1e3


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, LR 90x160 -> 360x640, median of {args.reps}")
    print(f"{'model':18s} {'train form ms':>14s} {'deployed ms':>12s} {'speed-up':>9s}")
    for name in MODELS:
        spec = PRESETS[name]
        model = build(spec).eval()
        deployed = reparameterize(model)
        x = torch.rand(1, spec.colors, 90, 160)
        for _ in range(2):  # warm-up both
            model(x), deployed(x)
        train_ms, deploy_ms = [], []
        for _ in range(args.reps):
            train_ms.append(_once(model, x))
            deploy_ms.append(_once(deployed, x))
        t, d = statistics.median(train_ms), statistics.median(deploy_ms)
        print(f"{name:18s} {t:14.2f} {d:12.2f} {t / d:8.2f}x")


if __name__ == "__main__":
    main()
