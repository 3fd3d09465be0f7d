"""Real data without idle GPUs: DIV2K-sized training images through sr-search 0.2's data path and today's, side by
side in one run (a busy machine slows both alike: read the ratios, not the absolute times).

It generates N DIV2K-sized PNGs (2040x1356) with natural content - mosaics of the scikit-image photos, flipped and
shifted, not noise, so PNG decode costs what it costs on DIV2K (about 3-4 MB a file) - and measures:

1. per image: PNG decode, and the MATLAB-bicubic degrade at x2 and x4, 0.2's dense resize vs the banded one;
2. per trial process: the data cost of a trial after the node's first fill (mapping the cache), against the fill
   itself and against 0.2 (every process decoded and degraded everything);
3. memory: the combined resident set (PSS) the dataset adds to two concurrent worker processes, each holding its
   own copy (0.2, `data.cache: off`) vs mapping the node's one copy;
4. the sampler: patches/s at batch 64, LR patch 64, x2 and x4, RGB and Y, one torch thread and two: 0.2's
   per-sample sampler vs today's host-side cut (uint8 patches, what a GPU is fed) and the whole CPU batch;
5. with `--studies`: a study with and without successive halving on the generated images: decodes per image (the
   cache's journal), per-trial data seconds, wall time against the share of iterations each trained.

    .venv/bin/python bench/real_data.py [--n 8] [--keep DIR] [--studies] [--trials 6]

`--keep DIR` reuses the generated images (and the cache) of an earlier run. Targets (issue 21): loads per study 1
per node; data cost per trial after the first fill <= 1 s; two workers' dataset RSS <= 1.2x one copy; host-side
sampler >= 20,000 patches/s at x2 RGB on one thread; pruned wall <= unpruned wall x iteration share + 15%.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sr_search.run import data as data_mod  # noqa: E402
from sr_search.run.data import DataSpec, load_train  # noqa: E402
from sr_search.study.data_cache import DataCache  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZE = (1356, 2040)  # DIV2K's typical HR (height, width)


# --- images ------------------------------------------------------------------------------------------------


def mosaic(seed: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    """A DIV2K-sized RGB image tiled from the scikit-image photos (random crops, flips and tile sizes)."""
    import skimage.data

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    rng = np.random.default_rng(seed)
    h, w = size
    out = np.zeros((h, w, 3), dtype=np.uint8)
    y = 0
    while y < h:
        th = int(rng.integers(200, 300))
        x = 0
        while x < w:
            photo = photos[int(rng.integers(len(photos)))]
            tw = int(rng.integers(200, 400))
            ph, pw = photo.shape[:2]
            cy, cx = int(rng.integers(0, ph - min(th, ph) + 1)), int(rng.integers(0, pw - min(tw, pw) + 1))
            tile = photo[cy:cy + th, cx:cx + tw]
            if rng.random() < 0.5:
                tile = tile[:, ::-1]
            hh, ww = min(tile.shape[0], h - y), min(tile.shape[1], w - x)
            out[y:y + hh, x:x + ww] = tile[:hh, :ww]
            x += ww
        y += th
    return out


def make_images(folder: Path, n: int) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:04d}.png"
        if not path.exists():
            Image.fromarray(mosaic(i)).save(path)
        paths.append(path)
    return paths


def best_ms(fn, repeat: int = 2) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * min(times)


# --- 1. decode and degrade ------------------------------------------------------------------------------------


def per_image(paths: list[Path], count: int) -> list[tuple[str, float, float]]:
    """(what, 0.2 ms, now ms) per image, medians over `count` images; both sides on the same image, alternating."""
    rows: dict[str, list[tuple[float, float]]] = {}
    for path in paths[:count]:
        decode = best_ms(lambda p=path: data_mod.read_image(p), 1)
        rows.setdefault("PNG decode", []).append((decode, decode))  # the same PIL decode (now on several threads)
        hr = data_mod.read_image(path)
        for scale in (2, 4):
            cropped = data_mod.mod_crop(hr, scale)
            dense = best_ms(lambda c=cropped, s=scale: data_mod.degrade_dense(c, s))
            banded = best_ms(lambda c=cropped, s=scale: data_mod.degrade(c, s))
            rows.setdefault(f"degrade x{scale}", []).append((dense, banded))
    return [(what, float(np.median([a for a, _ in v])), float(np.median([b for _, b in v])))
            for what, v in rows.items()]


# --- 2 and 3. one trial process: data seconds and memory --------------------------------------------------------

_WORKER = """
import json, sys, time, torch
torch.set_num_threads(1)
from sr_search.run.data import DataSpec, load_train
def pss():
    out = {}
    for line in open("/proc/self/smaps_rollup"):
        k, _, v = line.partition(":")
        if k in ("Rss", "Pss", "Pss_Anon", "Pss_File"):
            out[k] = int(v.split()[0]) * 1024
    return out
import PIL.Image, numpy  # what loading imports, before the baseline: the delta is the data
from sr_search.run.data import degrade
degrade(numpy.zeros((8, 8, 3), numpy.uint8), 2)
before = pss()
t = time.perf_counter()
data = load_train(DataSpec(train=sys.argv[1], cache=sys.argv[2]), int(sys.argv[3]), 3)
seconds = time.perf_counter() - t
touched = sum(int(h.sum()) + int(l.sum()) for h, l in zip(data.hr, data.lr))  # every page resident
print(json.dumps({"seconds": seconds, "bytes": data.nbytes(), "before": before, "after": pss()}), flush=True)
sys.stdin.readline()  # hold the data until told to exit, so the other worker's share is measured alongside
"""


def cache_pss(pid: int, cache: str) -> int:
    """PSS of a process's mappings of files under the cache folder (the dataset it maps)."""
    total, inside = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5:  # a mapping's header line
                inside = len(head) >= 6 and cache != "off" and head[5].startswith(str(Path(cache).resolve()))
            elif inside and line.startswith("Pss:"):
                total += int(head[1]) * 1024
    return total


def workers(folder: Path, cache: str, scale: int, count: int) -> list[dict]:
    """Start `count` trial-like processes at once that load the training data and touch all of it; their PSS
    (each shared page counted 1/n per process) before and after, and how long loading took."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(folder), cache, str(scale)], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(count)]
    lines = [p.stdout.readline() for p in procs]
    time.sleep(0.5)
    # PSS again now that all hold the data (a page shared by two counts half in each)
    out = []
    for p, line in zip(procs, lines):
        info = json.loads(line)
        with open(f"/proc/{p.pid}/smaps_rollup") as f:
            now = {k: int(v.split()[0]) * 1024 for k, _, v in (ln.partition(":") for ln in f)
                   if k in ("Rss", "Pss")}
        info["pss_all"] = now["Pss"]
        info["pss_cache"] = cache_pss(p.pid, cache)
        out.append(info)
    for p in procs:
        p.communicate("\n", timeout=60)
    return out


# --- 4. the sampler -----------------------------------------------------------------------------------------


def sampler_0_2(hr: list[torch.Tensor], lr: list[torch.Tensor], scale: int, batch: int, p: int,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """sr-search 0.2's TrainData.batch (per-sample crops, flips, transposes; stack; float per batch)."""
    draws = torch.rand((batch, 6), generator=generator, dtype=torch.float64).tolist()
    lrs, hrs = [], []
    for k, top_u, left_u, hflip, vflip, transpose in draws:
        i = int(k * len(lr))
        h, w = lr[i].shape[1:]
        top, left = int(top_u * (h - p + 1)), int(left_u * (w - p + 1))
        a = lr[i][:, top:top + p, left:left + p]
        b = hr[i][:, top * scale:(top + p) * scale, left * scale:(left + p) * scale]
        dims = (-1,) * (hflip < 0.5) + (-2,) * (vflip < 0.5)
        if dims:
            a, b = a.flip(dims), b.flip(dims)
        if transpose < 0.5:
            a, b = a.transpose(-1, -2), b.transpose(-1, -2)
        lrs.append(a)
        hrs.append(b)
    as_float = (lambda t: t.float().div_(255.0)) if hr[0].dtype == torch.uint8 else (lambda t: t)
    return as_float(torch.stack(lrs)), as_float(torch.stack(hrs))


def sampler_rows(folder: Path, cache: str, batches: int) -> list[tuple[str, int, float, float, float]]:
    """(case, threads, 0.2 patches/s, host cut patches/s, whole CPU batch patches/s), alternating rounds."""
    out = []
    before = torch.get_num_threads()
    for scale in (2, 4):
        for colors in (3, 1):
            data = load_train(DataSpec(train=str(folder), cache=cache), scale, colors)
            # 0.2 held contiguous CHW tensors: uint8 RGB, or float32 Y
            old_hr = [data_mod.to_colors(h.contiguous(), 1, 255.0) if colors == 1 else h.contiguous()
                      for h in data.hr]
            old_lr = [data_mod.to_colors(x.contiguous(), 1, 255.0) if colors == 1 else x.contiguous()
                      for x in data.lr]
            for threads in (1, 2):
                torch.set_num_threads(threads)
                g = torch.Generator().manual_seed(0)
                sides = {
                    "0.2": lambda h=old_hr, lo=old_lr, s=scale, g=g: sampler_0_2(h, lo, s, 64, 64, g),
                    "cut": lambda d=data, g=g: d.cut(64, 64, g),
                    "batch": lambda d=data, g=g: d.batch(64, 64, g),
                }
                best = {k: 0.0 for k in sides}
                for _ in range(3):  # alternating rounds; the best of each side
                    for k, fn in sides.items():
                        fn()
                        t = time.perf_counter()
                        for _ in range(batches):
                            fn()
                        best[k] = max(best[k], 64 * batches / (time.perf_counter() - t))
                out.append((f"x{scale} {'RGB' if colors == 3 else 'Y'}", threads, best["0.2"], best["cut"],
                            best["batch"]))
    torch.set_num_threads(before)
    return out


# --- on a GPU: what the trainer feeds it, and how long it waits --------------------------------------------------


def gpu_feed(folder: Path, cache: str, device: str, batches: int) -> None:
    """Batches/s reaching the GPU (0.2: the per-sample sampler, float batch copied; now: uint8 cut into pinned memory,
    copied non-blocking, augmented and converted there; on_gpu: images on the GPU, cut there), and the share of a
    training step's wall time the GPU waits for data (the trainer feeds serially) for a RepSR-M4C16-sized x2 net."""
    from sr_search import ArchSpec, build

    dev = torch.device(device)
    batch, patch = 32, 64
    data = load_train(DataSpec(train=str(folder), cache=cache), 2, 3, dev)
    ongpu = load_train(DataSpec(train=str(folder), cache=cache, on_gpu=True), 2, 3, dev)
    old_hr = [h.contiguous().to(dev) for h in data.hr]  # 0.2 kept the images on the training device
    old_lr = [x.contiguous().to(dev) for x in data.lr]
    g = torch.Generator().manual_seed(0)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    sides = {
        "0.2": lambda: sampler_0_2(old_hr, old_lr, 2, batch, patch, g),
        "now": lambda: data.finish(data.cut(batch, patch, g, pin=dev.type == "cuda"), dev, torch.float32),
        "on_gpu": lambda: ongpu.finish(ongpu.cut(batch, patch, g), dev, torch.float32),
    }
    rate = {}
    for k, fn in sides.items():
        fn()
        sync()
        t = time.perf_counter()
        for _ in range(batches):
            fn()
        sync()
        rate[k] = batches / (time.perf_counter() - t)
    model = build(ArchSpec(block="rep", scale=2, colors=3, channels=16, depth=4)).to(dev)
    opt = torch.optim.Adam(model.parameters())
    lr_b, hr_b = sides["now"]()
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.l1_loss(model(lr_b), hr_b).backward()
        opt.step()
    sync()
    t = time.perf_counter()
    steps = max(3, batches)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.l1_loss(model(lr_b), hr_b).backward()
        opt.step()
    sync()
    step = (time.perf_counter() - t) / steps
    print(f"\n6. feeding {device}: batch {batch}, LR patch {patch}, x2 RGB; a RepSR-M4C16-sized step takes "
          f"{1e3 * step:.1f} ms")
    for k, r in rate.items():
        feed = 1 / r
        print(f"   {k:7s} {r * batch:9.0f} patches/s, {1e3 * feed:6.1f} ms a batch: the GPU waits "
              f"{feed / (feed + step):.0%} of each step")
    idle = {k: (1 / r) / (1 / r + step) for k, r in rate.items()}
    print(f"GPU idle for data: 0.2 {idle['0.2']:.0%}, now {idle['now']:.0%}, on_gpu {idle['on_gpu']:.0%}")


# --- 5. studies ---------------------------------------------------------------------------------------------


def studies(work: Path, folder: Path, val: Path, trials: int, iterations: int) -> dict[str, dict]:
    from sr_search import launch, load_results, load_study

    (work / "space.yaml").write_text("params:\n  block: [plain, rep]\n  scale: 2\n  colors: 3\n"
                                     "  channels: [8, 16]\n  depth: 1\n")
    out = {}
    for name, pruning in (("unpruned", ""), ("pruned", f"pruning: {{min_iterations: {iterations // 4}, "
                                                      f"reduction_factor: 2}}\n")):
        cache = work / f"cache-{name}"
        path = work / f"{name}.yaml"
        path.write_text(textwrap.dedent(f"""\
            name: {name}
            space: space.yaml
            timing: {{device: cpu, precision: fp32, batch: 1, lr_size: [24, 24], warmup: 1, reps: 3, threads: 1}}
            train: {{iterations: {iterations}, batch_size: 16, lr_patch: 32}}
            data: {{train: {folder}, val: {{v: {val}}}, val_max_size: 128, cache: {cache}}}
            n_trials: {trials}
            sampler: random
            seed: 3
            resources: {{concurrency: 2}}
            """) + pruning)
        t = time.perf_counter()
        run = launch(load_study(path), out_dir=work / f"run-{name}", echo=lambda _: None)
        wall = time.perf_counter() - t
        df = load_results(run)
        journal = DataCache(cache).journal_lines()
        decodes = sum(1 for x in journal if x["what"] == "decode")
        segments = int(len(df) + (df["rung"].fillna(-1) + 1).clip(lower=0).sum()) if "rung" in df else len(df)
        out[name] = {"wall": wall, "iterations": int(df["train_iterations"].sum()), "decodes": decodes,
                     "images": len(list(folder.glob("*.png"))) + len(list(val.glob("*.png"))),
                     "trials": len(df), "segments_upper": segments,
                     "data_seconds": df["data_seconds"].tolist(), "train_seconds": df["train_seconds"].tolist(),
                     "paused_seconds": float(df["paused_seconds"].fillna(0).sum())}
    return out


# --- main ---------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=8, help="DIV2K-sized training images to generate (issue: 100)")
    parser.add_argument("--keep", type=Path, default=None, help="a folder to keep (and reuse) images and cache in")
    parser.add_argument("--timed-images", type=int, default=3, help="images timed for decode/degrade")
    parser.add_argument("--batches", type=int, default=4, help="batches per sampler round")
    parser.add_argument("--studies", action="store_true", help="also run a study with and without pruning")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--iterations", type=int, default=80)
    parser.add_argument("--device", default="cpu", help="cuda: only the GPU feed (2 images unless --n; under 60 s)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = args.keep or Path(tempfile.mkdtemp(prefix="sr-search-real-data-"))
    folder = work / "train"
    if args.device != "cpu":
        make_images(folder, args.n if "--n" in sys.argv else 2)
        gpu_feed(folder, str(work / "cache"), args.device, args.batches * 5)
        return
    t = time.perf_counter()
    paths = make_images(folder, args.n)
    mb = sum(p.stat().st_size for p in paths) / len(paths) / 1e6
    print(f"{args.n} DIV2K-sized PNGs ({SIZE[1]}x{SIZE[0]}, {mb:.1f} MB each) in {folder} "
          f"({time.perf_counter() - t:.0f} s); timings side by side in one run on a shared machine: read ratios\n")

    print("1. per image (ms, median of", min(args.timed_images, args.n), "images)")
    print(f"   {'':14s} {'0.2':>9s} {'now':>9s} {'0.2/now':>8s}")
    timed = per_image(paths, args.timed_images)
    for what, old, new in timed:
        print(f"   {what:14s} {old:9.0f} {new:9.0f} {old / new:8.1f}")
    load_0_2 = args.n * sum(old for what, old, _ in timed if what in ("PNG decode", "degrade x2")) / 1e3

    cache = str(work / "cache")
    DataCache(cache).clear()
    print("\n2. one trial process loading the training data at x2 (s)")
    cold = workers(folder, cache, 2, 1)[0]
    warm = workers(folder, cache, 2, 1)[0]
    off = workers(folder, "off", 2, 1)[0]
    print(f"   0.2, every process (decode + dense degrade, from 1.): {load_0_2:7.2f}")
    print(f"   cache off: every process, today's degrade:        {off['seconds']:7.2f}")
    print(f"   now, the node's first fill (once per node):       {cold['seconds']:7.2f}")
    print(f"   now, every later trial process (maps):            {warm['seconds']:7.2f}   target <= 1 s")

    print("\n3. memory the dataset adds to two concurrent workers (PSS: a shared page counts half in each)")
    one = cold["bytes"]
    for label, mode in (("cache off: a copy each (as 0.2)", "off"), ("now: the node's copy, mapped", cache)):
        both = workers(folder, mode, 2, 2)
        added = sum(w["pss_all"] - w["before"]["Pss"] for w in both)
        mapped = sum(w["pss_cache"] for w in both)
        print(f"   {label:32s} {added / 1e9:6.2f} GB = {added / one:4.2f}x one copy ({one / 1e9:.2f} GB)"
              + (f"; of it the mapped images {mapped / 1e9:.2f} GB = {mapped / one:.2f}x (target <= 1.2x)"
                 if mode != "off" else ""))

    print("\n4. sampler, batch 64, LR patch 64 (patches/s; 'cut': host side, uint8, what a GPU is fed; 'batch': "
          "whole CPU batch, float)")
    print(f"   {'case':8s} {'threads':>7s} {'0.2':>8s} {'cut':>8s} {'batch':>8s} {'cut/0.2':>8s} {'batch/0.2':>9s}")
    for case, threads, old, cut, whole in sampler_rows(folder, cache, args.batches):
        print(f"   {case:8s} {threads:7d} {old:8.0f} {cut:8.0f} {whole:8.0f} {cut / old:8.1f} {whole / old:9.1f}")

    if args.studies:
        val = work / "val"
        val.mkdir(exist_ok=True)
        from PIL import Image

        for i in range(2):
            if not (val / f"v{i}.png").exists():
                Image.fromarray(mosaic(1000 + i, (256, 256))).save(val / f"v{i}.png")
        print(f"\n5. a study of {args.trials} trials, {args.iterations} iterations, concurrency 2, with and "
              f"without successive halving")
        res = studies(work, folder, val, args.trials, args.iterations)
        for name, r in res.items():
            print(f"   {name:9s} wall {r['wall']:6.0f} s, {r['iterations']} iterations, {r['decodes']} decodes of "
                  f"{r['images']} images (0.2: one load per trial segment, >= {r['trials']} loads), data "
                  f"{np.mean(r['data_seconds']):.2f} s/trial (max {max(r['data_seconds']):.2f}), paused "
                  f"{r['paused_seconds']:.0f} s in all")
        share = res["pruned"]["iterations"] / res["unpruned"]["iterations"]
        bound = res["unpruned"]["wall"] * share * 1.15
        verdict = "met" if res["pruned"]["wall"] <= bound else "NOT met"
        print(f"   pruned trained {share:.0%} of the unpruned iterations; wall {res['pruned']['wall']:.0f} s vs "
              f"bound {bound:.0f} s (unpruned wall x share + 15%): {verdict}")
    print(f"\nkept in {work}" if args.keep else "")


if __name__ == "__main__":
    main()
