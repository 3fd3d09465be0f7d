"""Does timing in the deployed engine change the decision? Candidates ranked by eager PyTorch, ONNX Runtime and
OpenVINO latency on this CPU.

Candidates are sampled from searchspace/efficient_sr.yaml (x2 and x4 alternately, every block family in turn,
channels 8-48, depth 2-8), deployed, and timed in the three runtimes side by side (one candidate's three timings
back to back, the same thread count and the same seeded input: the `cpu`, `ort-cpu` and `openvino-cpu` protocols
with `--reps` repetitions), so load from other processes hits the three alike. Each engine's output is checked
against PyTorch before it is timed (a failure is reported, not timed). Printed:

1. per runtime, the median speed-up over eager PyTorch (and its range);
2. Kendall's tau between each pair of runtimes' latencies (1: the same order);
3. the largest rank flips between eager and each engine, each explained by the op category whose share of the
   forward's time moves most between the two runtimes (per-op profiles: torch.profiler, ONNX Runtime's profiler,
   OpenVINO's performance counters);
4. with each candidate's PSNR-Y after a short training (`--iterations`, the same for all; a cheap proxy), the Pareto
   front (PSNR-Y max, latency min) under each runtime, and how many front members change against eager's.

Wall-clock timings are noisy on a shared machine: compare the ratios and ranks, which are measured side by side.

    .venv/bin/python bench/runtime_rank.py                       # 24 candidates, ~10-15 min on 2 shared cores
    .venv/bin/python bench/runtime_rank.py --candidates 8 --iterations 40 --reps 5   # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from scipy.stats import kendalltau  # noqa: E402

from sr_search.model.cost import deploy_pair  # noqa: E402
from sr_search.model.network import build  # noqa: E402
from sr_search.model.spec import ArchSpec  # noqa: E402
from sr_search.results.pareto import pareto_front  # noqa: E402
from sr_search.run import data as data_mod  # noqa: E402
from sr_search.run import metrics, train  # noqa: E402
from sr_search.run.timing import engine as engines  # noqa: E402
from sr_search.run.timing.measure import measure  # noqa: E402
from sr_search.study.protocols import PROTOCOLS, TimingProtocol, lr_shape  # noqa: E402
from sr_search.study.settings import DataSpec, TrainBudget  # noqa: E402
from sr_search.study.space import RandomTrial  # noqa: E402
from sr_search.study.space_file import load_space  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = {"torch": "cpu", "onnxruntime": "ort-cpu", "openvino": "openvino-cpu"}
CHANNELS = (8, 16, 24, 32, 40, 48)


# --- candidates -----------------------------------------------------------------------------------------------


def sample_candidates(n: int, seed: int) -> list[ArchSpec]:
    """`n` candidates of the efficient-SR space: families in turn, x2 and x4 alternately, channels 8-48, depth 2-8."""
    space = load_space(ROOT / "searchspace" / "efficient_sr.yaml")
    families = [block for block, _ in space.plans]
    rng = random.Random(seed)
    out: list[ArchSpec] = []
    keys: set[str] = set()
    attempt = 0
    while len(out) < n:
        attempt += 1
        family, scale = families[len(out) % len(families)], (2, 4)[(len(out) // len(families)) % 2]
        trial = RandomTrial(seed * 10_000 + attempt)
        trial.params["block"] = family
        spec = space.sample(trial)
        step = 4 if family == "span" else 8
        channels = rng.choice([c for c in CHANNELS if c % step == 0] + ([28] if family == "span" else []))
        try:
            spec = spec.replace(scale=scale, channels=channels, depth=rng.randint(2, 8))
            lr_shape(PROTOCOLS["cpu"], spec)
        except Exception:  # noqa: BLE001 - a combination the family refuses (e.g. channels per group): draw again
            continue
        if spec.deploy_key() not in keys:
            keys.add(spec.deploy_key())
            out.append(spec)
    return out


def describe(spec: ArchSpec) -> str:
    extra = []
    if spec.unshuffle > 1:
        extra.append(f"unshuffle {spec.unshuffle}")
    return f"{spec.block} x{spec.scale} C{spec.channels} d{spec.depth} {spec.activation}" + (
        f" ({', '.join(extra)})" if extra else "")


# --- per-op profiles ------------------------------------------------------------------------------------------

CATEGORIES = (
    ("activation", ("relu", "prelu", "gelu", "silu", "sigmoid", "swish", "elu", "leaky", "clamp", "hardtanh", "clip",
                    "tanh", "mish", "erf")),
    ("conv", ("conv",)),
    ("pixel (un)shuffle", ("pixel_shuffle", "pixel_unshuffle", "depthtospace", "spacetodepth")),
    # reshape/transpose: how pixel_unshuffle exports to ONNX; reorder: OpenVINO's layout conversions
    ("layout copies", ("reshape", "transpose", "permute", "view", "reorder", "copy", "contiguous")),
    ("concat", ("cat", "concat")),
    ("pooling", ("pool",)),
    ("resize", ("interpolate", "upsample", "resize")),
    ("elementwise", ("add", "mul", "sub", "div", "eltwise", "multiply")),
)


def category(name: str) -> str:
    low = name.lower()
    for cat, words in CATEGORIES:
        if any(w in low for w in words):
            return cat
    return "other"


def _shares(times: Counter) -> dict[str, float]:
    total = sum(times.values()) or 1.0
    return {k: v / total for k, v in times.items()}


def torch_profile(model: torch.nn.Module, x: torch.Tensor, runs: int = 3) -> dict[str, float]:
    from torch.profiler import ProfilerActivity, profile

    model = model.eval()
    with torch.inference_mode():
        model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                model(x)
    times: Counter = Counter()
    for event in prof.key_averages():
        if event.key.startswith("aten::") and event.self_cpu_time_total > 0:
            times[category(event.key.removeprefix("aten::"))] += event.self_cpu_time_total
    return _shares(times)


def ort_profile(deployed: torch.nn.Module, p: TimingProtocol, shape: tuple[int, ...], runs: int = 3) -> dict:
    import onnxruntime as ort

    x = engines.input_tensor(shape)
    with tempfile.TemporaryDirectory() as tmp:
        path = engines.export(deployed, p, x, Path(tmp))
        so = ort.SessionOptions()
        so.intra_op_num_threads = p.threads
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "prof")
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        for _ in range(runs + 1):
            session.run(None, {"lr": x.numpy()})
        events = json.loads(Path(session.end_profiling()).read_text())
    times: Counter = Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            times[category(event["args"]["op_name"])] += event["dur"]
    return _shares(times)


def openvino_profile(deployed: torch.nn.Module, p: TimingProtocol, shape: tuple[int, ...], runs: int = 3) -> dict:
    import openvino as ov

    x = engines.input_tensor(shape)
    with tempfile.TemporaryDirectory() as tmp:
        path = engines.export(deployed, p, x, Path(tmp))
        core = ov.Core()
        compiled = core.compile_model(core.read_model(str(path)), "CPU", {
            "PERF_COUNT": "YES", "INFERENCE_NUM_THREADS": str(p.threads), "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"})
        request = compiled.create_infer_request()
        times: Counter = Counter()
        for i in range(runs + 1):
            request.infer({0: x.numpy()})
            if i:
                for info in request.profiling_info:
                    if info.status == ov.ProfilingInfo.Status.EXECUTED:
                        times[category(info.node_type)] += info.real_time.total_seconds()
    return _shares(times)


def why(spec: ArchSpec, runtime: str, ms: tuple[float, float], median_speedup: float, up: bool) -> str:
    """The op category that explains a flip: with the forward's time split by op category (per-op profiles), the
    category whose engine time deviates most from its eager time divided by the median speed-up (what the engine
    would take if this candidate sped up like the typical one), in the flip's direction (`up`: the candidate ranks
    better in the engine, so the category saved more than the typical speed-up would)."""
    deployed = deploy_pair(spec)[1]
    p = PROTOCOLS[RUNTIMES[runtime]]
    shape = lr_shape(p, spec)
    torch.set_num_threads(1)
    eager = torch_profile(deployed, engines.input_tensor(shape))
    other = (ort_profile if runtime == "onnxruntime" else openvino_profile)(deployed, p, shape)
    eager_ms = {c: share * ms[0] for c, share in eager.items()}
    other_ms = {c: share * ms[1] for c, share in other.items()}
    cats = set(eager_ms) | set(other_ms)
    sign = 1.0 if up else -1.0
    top = max(cats, key=lambda c: sign * (eager_ms.get(c, 0.0) / median_speedup - other_ms.get(c, 0.0)))
    a, b = eager_ms.get(top, 0.0), other_ms.get(top, 0.0)
    ratio = f"{a / b:.1f}x faster" if b and a >= b else (f"{b / a:.1f}x slower" if a else "only in the engine")
    return (f"{top}: {a:.0f} ms eager -> {b:.0f} ms {runtime} ({ratio}; the median candidate "
            f"{median_speedup:.2f}x faster overall)")


# --- short trainings ------------------------------------------------------------------------------------------


def short_psnr(args: tuple[str, int, int, int]) -> float:
    """PSNR-Y (built-in validation images) after a short training: a cheap, equal-for-all proxy of quality."""
    spec_json, iterations, batch, patch = args
    torch.set_num_threads(1)
    spec = ArchSpec.from_json(spec_json)
    patch = next(p for p in range(patch, patch + 128) if _patch_fits(spec, p))  # ESA, unshuffle: the smallest >=
    data_spec = DataSpec(val_max_size=192)  # LR 48 px at x4: enough for ESA after a 2x unshuffle
    train_data = data_mod.load_train(data_spec, spec.scale, spec.colors)
    val_sets = data_mod.load_val(data_spec, spec.scale, spec.colors)
    torch.manual_seed(0)
    model = build(spec)
    budget = TrainBudget(iterations=iterations, batch_size=batch, lr_patch=patch, lr=1e-3)
    try:
        result = train.Trainer(model, train_data, budget, seed=0).run_until(iterations)
        if result.status != "complete":
            return math.nan
        model.eval()
        return metrics.evaluate(model, val_sets, spec.scale, spec.colors, "cpu")["psnr_y"]
    except Exception as exc:  # noqa: BLE001 - one candidate's failure is its NaN, not the benchmark's end
        print(f"  training {spec.block} failed: {exc}", flush=True)
        return math.nan


def _patch_fits(spec: ArchSpec, patch: int) -> bool:
    try:
        data_mod.check_patch(spec, patch)
        return True
    except Exception:  # noqa: BLE001 - SrSearchError: too small for the family or the unshuffle factor
        return False


# --- the benchmark --------------------------------------------------------------------------------------------


def time_all(specs: list[ArchSpec], reps: int) -> pd.DataFrame:
    rows = []
    for i, spec in enumerate(specs):
        deployed = deploy_pair(spec)[1]
        row = {"candidate": i, "spec": describe(spec), "block": spec.block, "scale": spec.scale,
               "arch_json": spec.to_json()}
        for runtime, name in RUNTIMES.items():
            p = PROTOCOLS[name].model_copy(update={"reps": reps})
            try:
                t = measure(deployed, p, spec=spec)
                row[f"ms@{runtime}"] = t.latency_ms
                if t.engine_build_s is not None:
                    row[f"build_s@{runtime}"] = t.engine_build_s
                    row[f"err@{runtime}"] = t.engine_max_abs_err
            except engines.EngineError as exc:
                row[f"ms@{runtime}"] = math.nan
                row[f"failed@{runtime}"] = f"{exc.stage}: {exc}"
        # eager once more, after the engines: two timings of one runtime disagree only by noise (the noise floor)
        row["ms@torch-again"] = measure(deployed, PROTOCOLS["cpu"].model_copy(update={"reps": reps}),
                                        spec=spec).latency_ms
        rows.append(row)
        print(f"  [{i + 1}/{len(specs)}] {row['spec']}: " + ", ".join(
            f"{r} {row[f'ms@{r}']:.1f} ms" for r in RUNTIMES), flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=24)
    parser.add_argument("--reps", type=int, default=10, help="timed runs per candidate and runtime")
    parser.add_argument("--iterations", type=int, default=60, help="short training per candidate (PSNR proxy)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2, help="processes for the short trainings")
    parser.add_argument("--flips", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the table and results here")
    parser.add_argument("--psnr-from", type=Path, default=None,
                        help="a --json file of an earlier run with the same candidates: its PSNRs are reused (the "
                             "candidates are timed again)")
    parser.add_argument("--reuse", type=Path, default=None,
                        help="a --json file of an earlier run with the same --candidates and --seed: its latencies "
                             "and PSNRs are reused (the analysis and the flips' profiles run again)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    specs = sample_candidates(args.candidates, args.seed)
    print(f"{len(specs)} candidates, families {dict(Counter(s.block for s in specs))}, scales "
          f"{dict(Counter(s.scale for s in specs))}; LR input 108x192, 1 thread, {args.reps} timed runs each "
          f"(protocols cpu, ort-cpu, openvino-cpu side by side)")
    reused = None
    if args.reuse is not None:
        reused = pd.DataFrame(json.loads(args.reuse.read_text())["table"])
        if list(reused["spec"]) != [describe(s) for s in specs]:
            raise SystemExit(f"{args.reuse} holds other candidates (another --candidates or --seed)")
        df = reused.assign(arch_json=[s.to_json() for s in specs])
    else:
        df = time_all(specs, args.reps)
        if args.json is not None:  # the expensive part, kept at once (--reuse reads it)
            args.json.write_text(json.dumps({"table": json.loads(df.drop(columns=["arch_json"]).to_json(
                orient="records"))}, indent=1))
    timed_s = time.perf_counter() - start

    taus: dict[str, float] = {}
    print("\n1. Median speed-up over eager PyTorch (latency eager / latency engine; per candidate)")
    for runtime in list(RUNTIMES)[1:]:
        ratio = (df["ms@torch"] / df[f"ms@{runtime}"]).dropna()
        failed = int(df[f"ms@{runtime}"].isna().sum())
        print(f"  {runtime:12s} median {ratio.median():.2f}x  (min {ratio.min():.2f}x, max {ratio.max():.2f}x; "
              f"{failed} failed the engine check)")
        by_block = (df["ms@torch"] / df[f"ms@{runtime}"]).groupby(df["block"]).median()
        print("    by family: " + ", ".join(f"{b} {v:.2f}x" for b, v in by_block.items()))

    print("\n2. Kendall's tau between runtimes' latencies (1 = the same order)")
    if "ms@torch-again" in df:
        again = df[["ms@torch", "ms@torch-again"]].dropna()
        floor = kendalltau(again["ms@torch"], again["ms@torch-again"]).statistic
        taus["torch~torch-again"] = floor
        print(f"  noise floor: eager timed twice in this run, tau {floor:.3f} (a pair of runtimes below it differs "
              f"by no more than noise)")
    names = list(RUNTIMES)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ok = df[[f"ms@{a}", f"ms@{b}"]].dropna()
            tau = kendalltau(ok[f"ms@{a}"], ok[f"ms@{b}"]).statistic
            taus[f"{a}~{b}"] = tau
            print(f"  {a:12s} ~ {b:12s} tau {tau:.3f}  ({len(ok)} candidates)")

    print("\n3. Largest rank flips against eager (rank 1 = fastest), and the op that explains each")
    ranks = {r: df[f"ms@{r}"].rank(method="min") for r in RUNTIMES}
    flips = []
    for runtime in names[1:]:
        moved = (ranks[runtime] - ranks["torch"]).abs().sort_values(ascending=False).head(args.flips)
        for idx, step in moved.items():
            if step == 0 or math.isnan(step):
                continue
            spec = specs[int(df.loc[idx, "candidate"])]
            speedups = df["ms@torch"] / df[f"ms@{runtime}"]
            reason = why(spec, runtime, (float(df.loc[idx, "ms@torch"]), float(df.loc[idx, f"ms@{runtime}"])),
                         float(speedups.median()), bool(ranks[runtime][idx] < ranks["torch"][idx]))
            flips.append({"runtime": runtime, "spec": df.loc[idx, "spec"], "rank_torch": int(ranks["torch"][idx]),
                          "rank_engine": int(ranks[runtime][idx]), "why": reason})
            print(f"  {runtime:12s} {df.loc[idx, 'spec']:42s} eager #{int(ranks['torch'][idx]):2d} -> "
                  f"#{int(ranks[runtime][idx]):2d}   {reason}")

    print(f"\n4. Pareto fronts (PSNR-Y after {args.iterations} iterations: max; latency: min)")
    t0 = time.perf_counter()
    jobs = [(s.to_json(), args.iterations, args.batch, args.patch) for s in specs]
    if args.psnr_from is not None and "psnr_y" not in df:
        earlier = pd.DataFrame(json.loads(args.psnr_from.read_text())["table"])
        if list(earlier["spec"]) != list(df["spec"]):
            raise SystemExit(f"{args.psnr_from} holds other candidates (another --candidates or --seed)")
        df["psnr_y"] = earlier["psnr_y"].to_numpy()
    if "psnr_y" not in df:
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            df["psnr_y"] = list(pool.map(short_psnr, jobs))
    train_s = time.perf_counter() - t0
    fronts: dict[str, list[int]] = {}
    for scale in sorted(df["scale"].unique()):  # PSNR at x2 and at x4 are not comparable: one front per scale
        part = df[df["scale"] == scale].dropna(subset=["psnr_y"])
        front = {}
        for runtime in names:
            ranked = part.rename(columns={f"ms@{runtime}": "latency_ms"}).dropna(subset=["latency_ms"])
            front[runtime] = set(pareto_front(ranked, {"psnr_y": "max", "latency_ms": "min"})["candidate"])
            fronts[f"x{scale}@{runtime}"] = sorted(int(c) for c in front[runtime])
        print(f"  x{scale} ({len(part)} candidates)")
        for runtime in names:
            members = sorted(front[runtime], key=lambda c: df.loc[c, f"ms@{runtime}"])
            change = "" if runtime == "torch" else (
                f"; vs eager: {len(front[runtime] - front['torch'])} joined, "
                f"{len(front['torch'] - front[runtime])} left")
            print(f"    {runtime:12s} {len(members)} on the front{change}")
            for c in members:
                print(f"        #{c:2d} {df.loc[c, 'spec']:42s} PSNR-Y {df.loc[c, 'psnr_y']:.2f} dB, "
                      f"{df.loc[c, f'ms@{runtime}']:.1f} ms")
    print(f"\ntiming {timed_s:.0f} s, short trainings {train_s:.0f} s ({args.workers} processes), total "
          f"{time.perf_counter() - start:.0f} s; latencies measured side by side on a shared machine: compare "
          f"ratios and ranks, not absolute figures")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "table": json.loads(df.drop(columns=["arch_json"]).to_json(orient="records")), "kendall_tau": taus,
            "flips": flips, "fronts": fronts,
            "args": {k: str(v) for k, v in vars(args).items()}}, indent=1))


if __name__ == "__main__":
    main()
