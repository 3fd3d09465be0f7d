"""Iterations/s of `sr_search.train.run` vs a bare PyTorch loop on the same model, batch and patch size (CPU).

The bare loop is the minimum anyone would write: whole images already converted to float in the model's colour
space (float32), random crops without augmentation, Adam (foreach, as in `train.run`), L1, no schedule, no
logging, no guard. `train.run` adds patch augmentation, uint8 -> float/Y conversion per batch, the learning-rate
schedule, loss history and the NaN guard.
Both sides are timed by wall clock around the whole loop, in alternating rounds (the best round of each counts),
so a busy machine slows both alike. Target: ratio >= 0.9.

    .venv/bin/python bench/train_throughput.py [--iterations 40] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sr_search import PRESETS, ArchSpec, build  # noqa: E402
from sr_search.run.data import DataSpec, TrainData, load_train, to_colors  # noqa: E402
from sr_search.run.train import TrainBudget, run  # noqa: E402

CASES = [
    # (label, spec, batch, LR patch)
    ("repsr-m4c16-x4", PRESETS["repsr-m4c16-x4"], 16, 32),
    ("repsr-m4c16-x4", PRESETS["repsr-m4c16-x4"], 8, 16),
    ("ecbsr-m4c8-x4", PRESETS["ecbsr-m4c8-x4"], 16, 16),
    ("plain c8 d1 x2 (overhead-bound)", ArchSpec(block="plain", channels=8, depth=1, scale=2, colors=1), 16, 16),
]


def bare_loop(spec: ArchSpec, data: TrainData, iterations: int, batch: int, patch: int, seed: int) -> float:
    torch.manual_seed(seed)
    model = build(spec).train()
    # whole images in the model's colour space (RGB or Y), float, once (the data holds uint8 RGB)
    lrs = [to_colors(t, data.colors, 255.0) for t in data.lr]
    hrs = [to_colors(t, data.colors, 255.0) for t in data.hr]
    rng = random.Random(seed)
    s = data.scale
    opt = torch.optim.Adam(model.parameters(), lr=5e-4, foreach=True)  # same update kernel as train.run
    start = time.perf_counter()
    for _ in range(iterations):
        xs, ys = [], []
        for _ in range(batch):
            i = rng.randrange(len(lrs))
            h, w = lrs[i].shape[-2:]
            top, left = rng.randrange(h - patch + 1), rng.randrange(w - patch + 1)
            xs.append(lrs[i][:, top:top + patch, left:left + patch])
            ys.append(hrs[i][:, top * s:(top + patch) * s, left * s:(left + patch) * s])
        loss = F.l1_loss(model(torch.stack(xs)), torch.stack(ys))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return iterations / (time.perf_counter() - start)


def train_run(spec: ArchSpec, data: TrainData, iterations: int, batch: int, patch: int, seed: int) -> float:
    torch.manual_seed(seed)
    model = build(spec)
    budget = TrainBudget(iterations=iterations, batch_size=batch, lr_patch=patch, lr=5e-4)
    start = time.perf_counter()
    result = run(model, data, budget, seed)
    elapsed = time.perf_counter() - start
    assert result.status == "complete", result.error
    return iterations / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: small ops thrash with 2 threads on a shared 2-core box)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, CPU, {args.threads} thread(s), {args.iterations} iterations x "
          f"{args.rounds} alternating rounds, best round each, built-in training set")
    print(f"| {'model':<32} | batch | LR patch | bare it/s | train.run it/s | ratio |")
    print(f"|{'-' * 34}|-------|----------|-----------|----------------|-------|")
    for label, spec, batch, patch in CASES:
        data = load_train(DataSpec(), spec.scale, spec.colors)
        warm = max(2, args.iterations // 10)
        bare_loop(spec, data, warm, batch, patch, 0)
        train_run(spec, data, warm, batch, patch, 0)
        bare, ours = [], []
        for r in range(args.rounds):
            bare.append(bare_loop(spec, data, args.iterations, batch, patch, r))
            ours.append(train_run(spec, data, args.iterations, batch, patch, r))
        b, o = max(bare), max(ours)
        print(f"| {label:<32} | {batch:>5} | {patch:>8} | {b:>9.2f} | {o:>14.2f} | {o / b:>5.2f} |", flush=True)


if __name__ == "__main__":
    main()
