"""Proxy fidelity (issue 27): does a short training rank candidates as a longer one would?

On this machine's CPU and the built-in images, x2, Y channel: a search of `--candidates` sampled candidates over
every block family plus two named baselines at `--iterations` (the proxy), then `sr-search confirm` of its top `--top`
(by non-dominated rank, then crowding distance) plus the baselines at `--confirm-iterations`, `--seeds` seeds each.
Printed: Kendall tau and Spearman rho between proxy and confirmed PSNR-Y with bootstrap 95% intervals, which proxy
front members stay on the confirmed front and which join it, the largest rank changes, and the wall time and
training iterations of the confirmation vs the search, measured side by side in one run (the machine is shared, so
wall times are noisy; their ratio is what to read).

    python bench/proxy_fidelity.py                     # the issue's sizes: 16 + 2 at 300, top 8 + 2 at 1,500 x 2
    python bench/proxy_fidelity.py --keep runs/pf      # keep the folders; a finished search is reused
    python bench/proxy_fidelity.py --keep runs/pf --seeds 2   # again, one more seed: the confirmation grows
    python bench/proxy_fidelity.py --candidates 6 --iterations 60 --confirm-iterations 200 --top 3 --seeds 1
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from sr_search import launch, load_results, load_study
from sr_search.results.fidelity import study_fidelity
from sr_search.run.confirm import confirm

#: Y-channel models (as ECBSR and RepSR publish theirs): the shared 2-core CPU trains them in reasonable time
BASELINES = ["ecbsr-m4c8-x2", "repsr-m4c16-x2"]
SPACE = """\
description: a small x2 space over every block family (issue 27 benchmark)
params:
  scale: 2
  colors: 1
  channels: {low: 8, high: 32, step: 8}
  depth: {low: 2, high: 6}
  activation: [relu, prelu, lrelu, silu]
  global_skip: [nearest, none]
blocks:
  rep: {branches: [1, 2], width_mult: [1.0, 2.0]}
  ecb: {with_idt: [true, false]}
  rlfb: {esa_channels: [8, 16], long_skip: true}
  esdb: {esa_channels: [8], long_skip: true}
  eresidual: {groups: [1, 2, 4], fusion: [none, cascade]}
  plain: {}
  span: {depth: {low: 1, high: 4}}
"""


def study_text(n: int, iterations: int, concurrency: int, batch: int, patch: int) -> str:
    return (f"name: search\nspace: space.yaml\nsampler: random\nseed: 11\nn_trials: {n + len(BASELINES)}\n"
            f"baselines: [{', '.join(BASELINES)}]\n"
            f"objectives: {{psnr_y: max, throughput: max}}\ntiming: cpu\n"
            f"train: {{iterations: {iterations}, batch_size: {batch}, lr_patch: {patch}, lr: 0.002}}\n"
            f"data: {{val_max_size: 128}}\nresources: {{concurrency: {concurrency}, gpus_per_trial: 0}}\n")


def retimed(df) -> int:
    """Rows the end-of-study pass re-timed exclusively (front members whose timing was shared, DESIGN 6)."""
    return int(df["timing_retimed"].fillna(False).astype(bool).sum()) if "timing_retimed" in df else 0


def timed_by_trials(df) -> int:
    """Rows whose trial measured its own timing (not from the cache, not re-timed afterwards)."""
    own = ~df["timing_cached"].fillna(False).astype(bool)
    if "timing_retimed" in df:
        own &= ~df["timing_retimed"].fillna(False).astype(bool)
    return int(own.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=16, help="sampled candidates (the baselines come on top)")
    parser.add_argument("--iterations", type=int, default=300, help="the proxy budget")
    parser.add_argument("--confirm-iterations", type=int, default=1500)
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8, help="training batch size")
    parser.add_argument("--patch", type=int, default=32, help="LR training patch side")
    parser.add_argument("--keep", type=Path, default=None, help="keep the study folders here (a finished search "
                                                                  "with the same settings is reused)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "space.yaml").write_text(SPACE)
        text = study_text(args.candidates, args.iterations, args.concurrency, args.batch, args.patch)
        search_dir, seconds = folder / "search", folder / "search.seconds"
        if seconds.exists() and (folder / "search.yaml").exists() and (folder / "search.yaml").read_text() == text:
            search_s = float(seconds.read_text())
        else:
            (folder / "search.yaml").write_text(text)
            start = time.perf_counter()
            launch(load_study(folder / "search.yaml"), out_dir=search_dir, echo=lambda _: None)
            search_s = time.perf_counter() - start
            seconds.write_text(str(search_s))
        start = time.perf_counter()
        conf_dir = confirm(search_dir, args.confirm_iterations, top=args.top, include_baselines=True,
                           seeds=args.seeds, out_dir=folder / f"confirm-{args.confirm_iterations}",
                           echo=lambda _: None)
        confirm_s = time.perf_counter() - start
        spent = folder / f"confirm-{args.confirm_iterations}.seconds"  # a grown confirmation: every session's time
        confirm_s += float(spent.read_text()) if spent.exists() else 0.0
        spent.write_text(str(confirm_s))
        fid = study_fidelity(conf_dir)
        search, confirmed = load_results(search_dir), load_results(conf_dir)
        families = sorted(search.loc[search["baseline"].isna(), "block"].astype(str).unique())
        iters = (int(search["train_iterations"].fillna(0).sum()), int(confirmed["train_iterations"].fillna(0).sum()))
        s = fid.stats
        print(f"search: {len(search)} trials ({args.candidates} sampled over {', '.join(families)}; baselines "
              f"{', '.join(BASELINES)}) at {args.iterations} iterations; confirmation: {len(fid.pairs)} candidates "
              f"(top {args.top} + baselines) x {args.seeds} seed(s) at {args.confirm_iterations} iterations; CPU, "
              f"built-in images, x2, Y channel")
        print()
        print(f"{'':26s} {'value':>7s} {'95% interval':>18s}")
        for name, label in (("tau", "Kendall tau (PSNR-Y)"), ("rho", "Spearman rho (PSNR-Y)")):
            lo, hi = s[f"{name}_ci"]
            interval = "" if math.isnan(lo) else f"[{lo:.2f}, {hi:.2f}]"
            print(f"{label:26s} {s[name]:7.2f} {interval:>18s}")
        print(f"{'proxy front kept':26s} {len(fid.kept)} of {len(fid.proxy_front)} ({', '.join(fid.kept) or '-'}); "
              f"left: {', '.join(fid.left) or '-'}; joined: {', '.join(fid.joined) or '-'}")
        print(f"{'':26s} {'search':>10s} {'confirmation':>13s} {'ratio':>7s}")
        print(f"{'wall time (s)':26s} {search_s:10.0f} {confirm_s:13.0f} {confirm_s / search_s:7.2f}")
        print(f"{'training iterations':26s} {iters[0]:10d} {iters[1]:13d} {iters[1] / max(iters[0], 1):7.2f}")
        print(f"{'timed by a trial':26s} {timed_by_trials(search):10d} {timed_by_trials(confirmed):13d}")
        print(f"{'re-timed (front, exclusive)':26s} {retimed(search):10d} {retimed(confirmed):13d}")
        print()
        print(fid.text())


if __name__ == "__main__":
    main()
