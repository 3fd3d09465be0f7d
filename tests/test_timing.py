"""Timing protocols, measure(), cost counting and the timing cache (issue 5; docs/architecture.md, "Timing").

CPU-only and fast: timings use tiny custom protocols, nothing asserts how fast anything is. CUDA paths are covered
by tests that skip without a GPU.
"""

import os

import pandas as pd
import pydantic
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sr_search import PRESETS, ArchSpec, build, reparameterize
from sr_search.errors import SrSearchError
from sr_search.model.presets import REFERENCE_PARAMS
from sr_search.model.cost import count_macs, count_params
from sr_search.run.timing.cache import TimingCache
from sr_search.run.timing.measure import device_name, measure, protocol_cost, time_spec
from sr_search.run.timing.result import Timing, TimingError
from sr_search.run.timing.table import format_table, timing_table
from sr_search.study.protocols import PROTOCOLS, TimingProtocol, default_protocol, get_protocol, lr_shape


TINY = TimingProtocol(name="tiny", device="cpu", lr_size=(16, 20), warmup=1, reps=3)
SMALL_SPEC = ArchSpec(block="plain", scale=2, colors=3, channels=8, depth=2)


def cpu_model_name():
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    pytest.skip("no /proc/cpuinfo model name")


# --- protocols ---------------------------------------------------------------------------------------------


def test_builtin_protocols_follow_the_papers():
    repsr, x2, x3, cpu = (PROTOCOLS[n] for n in ("repsr", "ntire23-x2", "ntire23-x3", "cpu"))
    assert (repsr.device, repsr.precision, repsr.batch, repsr.hr_size) == ("cuda", "fp16", 4, (720, 1280))
    for p in (x2, x3):
        assert (p.device, p.precision, p.batch, p.warmup, p.reps) == ("cuda", "fp16", 1, 50, 244)
        assert p.cudnn_benchmark and p.ntire
    assert (cpu.device, cpu.precision, cpu.batch, cpu.threads) == ("cpu", "fp32", 1, 1)
    assert not cpu.ntire and not repsr.ntire


def test_lr_shape_fixes_the_output_size_across_scales():
    ecb4, ecb2 = PRESETS["ecbsr-m4c16-x4"], PRESETS["ecbsr-m4c16-x2"]
    assert lr_shape("repsr", ecb4) == (4, 1, 180, 320)
    assert lr_shape("repsr", ecb2) == (4, 1, 360, 640)
    with pytest.raises(SrSearchError, match="not divisible by scale"):
        lr_shape("repsr", PRESETS["rtsrn-x3"])  # 1280 / 3 is not an integer
    # NTIRE23: the official demo's portrait input, H = 3840 / s
    assert lr_shape("ntire23-x2", PRESETS["rtsrn-x2"]) == (1, 3, 1920, 1080)
    assert lr_shape("ntire23-x3", PRESETS["rtsrn-x3"]) == (1, 3, 1280, 720)
    with pytest.raises(SrSearchError, match="x2 models"):
        lr_shape("ntire23-x2", PRESETS["rtsrn-x3"])
    assert lr_shape("cpu", PRESETS["rlfn-x4"]) == (1, 3, 108, 192)


def test_lr_shape_checks_unshuffle_and_minimum_tile():
    spec = ArchSpec(block="plain", scale=2, colors=3, channels=8, depth=1, unshuffle=2)
    odd = TimingProtocol(name="odd", device="cpu", lr_size=(15, 16))
    with pytest.raises(SrSearchError, match="unshuffle=2"):
        lr_shape(odd, spec)
    hr = TimingProtocol(name="hr", device="cpu", hr_size=(36, 40))
    with pytest.raises(SrSearchError, match=r"scale\*unshuffle = 3\*2"):
        lr_shape(hr, spec.replace(scale=3))  # 36/6 works, 40/6 does not
    with pytest.raises(SrSearchError, match="15 px"):
        lr_shape(TimingProtocol(name="small", device="cpu", lr_size=(12, 40)), PRESETS["rlfn-x4"])


@pytest.mark.parametrize("data, match", [
    ({"name": "p", "device": "cpu"}, "exactly one of 'lr_size'"),
    ({"name": "p", "device": "cpu", "lr_size": (8, 8), "hr_size": (16, 16)}, "exactly one of 'lr_size'"),
    ({"name": "p", "device": "cpu", "lr_size": (8, 8), "cudnn_benchmark": True}, "'cudnn_benchmark'"),
    ({"name": "p", "device": "cuda", "lr_size": (8, 8), "threads": 2}, "'threads'"),
    ({"name": "p", "device": "tpu", "lr_size": (8, 8)}, "'device'.*'tpu'"),
    ({"name": "p", "device": "cpu", "lr_size": (8, 8), "precison": "fp16"}, "'precison': unknown field"),
    ({"name": "p", "device": "cpu", "lr_size": (8, 0)}, "'lr_size.1'"),
    ({"name": "p", "device": "cpu", "lr_size": (8, 8), "precision": "int8"}, "'precision'.*'int8'"),
])
def test_bad_protocols_are_reported_by_field(data, match):
    with pytest.raises(SrSearchError, match=match):
        TimingProtocol(**data)


def test_custom_protocols_validate_from_a_dict_and_are_frozen():
    p = TimingProtocol(**{"name": "edge", "device": "cpu", "lr_size": [64, 64], "threads": 2, "reps": 7})
    assert p.lr_size == (64, 64) and p.threads == 2 and p.warmup == 10
    assert TimingProtocol(name="c", device="cpu", lr_size=(8, 8)).threads == 1  # CPU threads are always pinned
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        p.reps = 3
    assert get_protocol("edge", {"edge": p}) is p
    assert get_protocol(p) is p
    assert get_protocol("repsr", {"edge": p}) is PROTOCOLS["repsr"]
    with pytest.raises(SrSearchError, match="allowed: repsr, ntire23-x2, ntire23-x3, ntire26-esr, ntire26-esr-warm, ntire25-esr, ntire25-esr-warm, cpu, ort-cpu, openvino-cpu, ort-cuda, trt-fp16, edge"):
        get_protocol("egde", {"edge": p})
    with pytest.raises(SrSearchError, match="names must match"):
        get_protocol("edge", {"other": p})
    with pytest.raises(SrSearchError, match="redefines the built-in"):
        get_protocol("cpu", {"cpu": p.model_copy(update={"name": "cpu"})})
    assert p.fingerprint() != p.model_copy(update={"reps": 8}).fingerprint()


def test_default_protocol_follows_cuda_availability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_protocol() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_protocol() == "repsr"


# --- measure -----------------------------------------------------------------------------------------------


def test_measure_reports_consistent_figures():
    model = reparameterize(build(SMALL_SPEC))
    t = measure(model, TINY, exclusive=False)
    assert isinstance(t, Timing)
    assert t.input_shape == (1, 3, 16, 20) and t.output_shape == (1, 3, 32, 40)
    assert (t.protocol, t.precision, t.batch, t.reps, t.exclusive) == ("tiny", "fp32", 1, 3, False)
    assert t.device_name == cpu_model_name()
    assert 0 < t.latency_ms <= t.latency_ms_p90
    assert t.throughput == pytest.approx(1000 / t.latency_ms)
    assert t.mpix_per_s == pytest.approx(32 * 40 * 1000 / t.latency_ms / 1e6)
    assert t.peak_mem_mb >= 0 and t.cpu_ms > 0
    batch3 = measure(model, TINY.model_copy(update={"batch": 3}))
    assert batch3.output_shape[0] == 3 and batch3.exclusive
    assert batch3.throughput == pytest.approx(3000 / batch3.latency_ms)


SEEN = []  # module-level, so the copies measure() makes still report here


class Probe(nn.Module):
    """Records what the timed forward saw: threads, dtype, memory format."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)

    def forward(self, x):
        SEEN.append((torch.get_num_threads(), x.dtype, x.is_contiguous(memory_format=torch.channels_last)))
        return nn.functional.pixel_shuffle(self.conv(x), 2)


def test_measure_pins_threads_and_restores_them():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    SEEN.clear()
    try:
        measure(Probe(), TINY.model_copy(update={"threads": 1, "channels_last": True}), spec=SMALL_SPEC)
        assert len(SEEN) == TINY.warmup + TINY.reps
        assert all(s == (1, torch.float32, True) for s in SEEN)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_measure_never_mutates_the_callers_model():
    model = build(SMALL_SPEC).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.requires_grad for p in model.parameters()]
    half_cl = TINY.model_copy(update={"name": "half", "precision": "fp16", "channels_last": True})
    measure(model, half_cl)
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == grads
    after = model.state_dict()
    for k, v in before.items():
        assert after[k].dtype == v.dtype and after[k].is_contiguous() and torch.equal(after[k], v)


def test_cpu_path_makes_no_cuda_calls(monkeypatch, tmp_path):
    def forbidden(*a, **k):
        raise AssertionError("CUDA API called on the CPU path")

    for name in ("is_available", "synchronize", "Event", "get_device_name", "reset_peak_memory_stats",
                 "max_memory_allocated", "device", "empty_cache", "current_device", "set_device", "device_count"):
        monkeypatch.setattr(torch.cuda, name, forbidden)
    model = reparameterize(build(SMALL_SPEC))
    measure(model, TINY)
    timing, cached = time_spec(SMALL_SPEC, TINY, "cpu", TimingCache(tmp_path / "c.parquet"))
    assert not cached and timing.device_name == cpu_model_name()


class Overflow(nn.Module):
    def forward(self, x):
        return (x * 300.0) ** 2  # up to 9e4: fine in fp32, inf in fp16 (max 65504)


class HalfUnsupported(nn.Module):
    def forward(self, x):
        SEEN.append(x.dtype)
        if x.dtype == torch.float16:
            raise RuntimeError('"fancy_op" not implemented for \'Half\'')
        return x


def test_fp16_failures_are_reported_not_retimed_in_fp32():
    half = TINY.model_copy(update={"name": "half", "precision": "fp16"})
    measure(Overflow(), TINY, spec=SMALL_SPEC)  # fp32 is fine
    with pytest.raises(TimingError, match="not finite in fp16"):
        measure(Overflow(), half, spec=SMALL_SPEC)
    SEEN.clear()
    with pytest.raises(TimingError, match=r"fp16 on cpu.*fancy_op"):
        measure(HalfUnsupported(), half, spec=SMALL_SPEC)
    assert SEEN == [torch.float16]  # no second attempt in another precision
    assert issubclass(TimingError, SrSearchError)


def test_measure_rejects_missing_spec_and_wrong_device():
    with pytest.raises(SrSearchError, match="spec="):
        measure(nn.Conv2d(3, 3, 1), TINY)
    with pytest.raises(SrSearchError, match="protocols for cpu: cpu"):
        measure(build(SMALL_SPEC), "repsr", "cpu")
    with pytest.raises(SrSearchError, match="times on 'cpu'"):
        device_name(TINY, "cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_protocol_without_gpu_says_so():
    with pytest.raises(TimingError, match="CUDA is not available"):
        measure(build(PRESETS["ecbsr-m4c8-x4"]), "repsr")


# --- cost ----------------------------------------------------------------------------------------------------


def test_count_params_counts_shared_modules_once():
    conv = nn.Conv2d(4, 4, 3)
    assert count_params(nn.Sequential(conv, nn.ReLU(), conv)) == 4 * 4 * 9 + 4
    carn = reparameterize(build(PRESETS["carn-m-x4"]))

    def naive(module):  # every occurrence in the module tree, as a per-layer sum would count it
        return sum(p.numel() for p in module._parameters.values()) + sum(naive(c) for c in module._modules.values())

    assert count_params(carn) == REFERENCE_PARAMS["carn-m-x4"] < naive(carn)


def ecbsr_macs(depth, channels, scale, h, w):
    """Closed form: 3x3 convs head (1->C), body (C->C) x depth, tail (C->s^2); one PReLU per non-tail conv."""
    conv = 9 * (channels + depth * channels * channels + channels * scale * scale)
    prelu = (depth + 1) * channels
    return (conv + prelu) * h * w


@pytest.mark.parametrize("name, depth, channels, low, high", [
    ("ecbsr-m4c16-x4", 4, 16, 0.67e9, 0.70e9), ("ecbsr-m16c64-x4", 16, 64, 34e9, 35.5e9),
])
def test_ecbsr_macs_for_a_720p_output(name, depth, channels, low, high):
    spec = PRESETS[name]
    _, c, h, w = lr_shape("repsr", spec)
    macs = count_macs(reparameterize(build(spec)), (1, c, h, w))
    assert low <= macs <= high
    assert macs == ecbsr_macs(depth, channels, 4, 180, 320)
    if depth == 4:  # the RepSR twin deploys to the same network (checked on the small one: merging takes a while)
        assert protocol_cost(PRESETS[name.replace("ecbsr", "repsr")], "repsr").macs_deploy == macs


@pytest.mark.parametrize("name", ["ecbsr-m4c8-x4", "repsr-m4c8-x4", "rlfn-s-x4", "bsrn-x4", "carn-m-x4", "rtsrn-x2"])
def test_macs_equal_torch_conv_count_plus_prelu(name):
    """thop's count = PyTorch's own convolution FLOPs / 2 + one per PReLU element (no BN/Linear once deployed)."""
    spec = PRESETS[name]
    deployed = reparameterize(build(spec))
    x = torch.rand(2, spec.colors, 17, 21)
    prelu = []
    hooks = [m.register_forward_hook(lambda m, i, o: prelu.append(i[0].numel()))
             for m in deployed.modules() if isinstance(m, nn.PReLU)]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        deployed(x)
    for h in hooks:
        h.remove()
    assert count_macs(deployed, tuple(x.shape)) == counter.get_total_flops() // 2 + sum(prelu)
    assert not any(hasattr(m, "total_ops") for m in deployed.modules())  # counted on a copy


def test_subclasses_of_counted_layers_are_counted():
    class MyConv(nn.Conv2d):
        pass

    plain, sub = nn.Conv2d(3, 5, 3, padding=1), MyConv(3, 5, 3, padding=1)
    assert count_macs(sub, (1, 3, 8, 8)) == count_macs(plain, (1, 3, 8, 8)) == 8 * 8 * 5 * 3 * 9


def test_cost_of_a_preset():
    c = protocol_cost(PRESETS["ecbsr-m4c16-x4"], "repsr")
    assert (c.params_train, c.params_deploy) == (49_712, 11_840)
    assert c.input_shape == (1, 1, 180, 320) and c.gmacs == pytest.approx(c.macs_deploy / 1e9)
    with pytest.raises(SrSearchError, match=r"input_shape must be \(batch, channels, height, width\)"):
        count_macs(nn.Identity(), (1, 3, 8))


# --- cache ---------------------------------------------------------------------------------------------------


def fake_timing(protocol=TINY, device="cpu-x", exclusive=True, latency=5.0):
    return Timing(protocol=protocol.name, device_name=device, precision=protocol.precision, batch=protocol.batch,
                  input_shape=(1, 3, 16, 20), output_shape=(1, 3, 32, 40), exclusive=exclusive, reps=protocol.reps,
                  latency_ms=latency, latency_ms_p90=latency + 1, latency_ms_mean=latency + 0.5,
                  throughput=1000 / latency, mpix_per_s=1.0, peak_mem_mb=2.5)


def test_cache_persists_as_parquet_and_reopens(tmp_path):
    path = tmp_path / "study" / "timing_cache.parquet"
    cache = TimingCache(path)  # neither the file nor its folder exists yet
    assert len(cache) == 0 and cache.get("k1", TINY, "cpu-x") is None
    t = fake_timing()
    cache.put("k1", TINY, t)
    assert TimingCache(path).get("k1", TINY, "cpu-x") == t
    df = pd.read_parquet(path)
    assert list(df[["deploy_key", "protocol", "device_name"]].iloc[0]) == ["k1", "tiny", "cpu-x"]
    assert sorted(os.listdir(path.parent)) == ["timing_cache.parquet"]  # no temp file left behind
    # the key is (deploy_key, protocol, device name)
    other = TINY.model_copy(update={"name": "other"})
    assert cache.get("k2", TINY, "cpu-x") is None
    assert cache.get("k1", other, "cpu-x") is None
    assert cache.get("k1", TINY, "cpu-y") is None
    # a protocol redefined under the same name does not get the old numbers
    assert cache.get("k1", TINY.model_copy(update={"reps": 99}), "cpu-x") is None


def test_cache_sees_entries_written_by_another_instance(tmp_path):
    path = tmp_path / "tc.parquet"
    a, b = TimingCache(path), TimingCache(path)
    a.put("k1", TINY, fake_timing(latency=1.0))
    b.put("k2", TINY, fake_timing(latency=2.0))  # b re-reads under the lock: k1 survives
    assert a.get("k2", TINY, "cpu-x").latency_ms == 2.0
    assert len(TimingCache(path)) == 2 and pq.read_table(path).num_rows == 2


def test_cache_prefers_exclusive_timings(tmp_path):
    cache = TimingCache(tmp_path / "tc.parquet")
    cache.put("k", TINY, fake_timing(exclusive=False, latency=9.0))
    assert cache.get("k", TINY, "cpu-x").latency_ms == 9.0
    assert cache.get("k", TINY, "cpu-x", require_exclusive=True) is None
    cache.put("k", TINY, fake_timing(exclusive=True, latency=4.0))
    cache.put("k", TINY, fake_timing(exclusive=False, latency=7.0))  # does not displace the exclusive one
    assert cache.get("k", TINY, "cpu-x", require_exclusive=True).latency_ms == 4.0
    cache.put("k", TINY, fake_timing(exclusive=False, latency=7.0), replace=True)
    assert cache.get("k", TINY, "cpu-x").latency_ms == 7.0
    with pytest.raises(SrSearchError, match="measured under 'tiny'"):
        cache.put("k", PROTOCOLS["cpu"], fake_timing())


def test_unreadable_cache_file_is_reported(tmp_path):
    path = tmp_path / "tc.parquet"
    path.write_text("not parquet")
    with pytest.raises(SrSearchError, match=f"timing cache {path} is not a readable parquet file"):
        TimingCache(path).get("k", TINY, "cpu-x")


def test_repsr_and_ecbsr_of_one_size_share_one_timing(tmp_path):
    cache = TimingCache(tmp_path / "tc.parquet")
    ecb, rep = PRESETS["ecbsr-m4c8-x4"], PRESETS["repsr-m4c8-x4"]
    first, cached_first = time_spec(ecb, TINY, "cpu", cache, exclusive=True)
    second, cached_second = time_spec(rep, TINY, "cpu", cache, exclusive=True)
    assert (cached_first, cached_second) == (False, True)
    assert second == first and len(cache) == 1
    # a non-exclusive request may reuse the exclusive entry; refresh always re-times
    assert time_spec(rep, TINY, None, cache, exclusive=False) == (first, True)
    fresh, cached = time_spec(rep, TINY, None, cache, exclusive=True, refresh=True)
    assert not cached and TimingCache(cache.path).get(rep.deploy_key(), TINY, first.device_name) == fresh
    # a different deployed network is a different entry
    assert time_spec(PRESETS["ecbsr-m4c16-x4"], TINY, None, cache)[1] is False and len(cache) == 2


# --- the table the CLI prints ---------------------------------------------------------------------------------


def test_timing_table_and_its_text(tmp_path, monkeypatch):
    specs = {"ecbsr-m4c8-x4": PRESETS["ecbsr-m4c8-x4"], "repsr-m4c8-x4": PRESETS["repsr-m4c8-x4"],
             "mine": SMALL_SPEC}
    df = timing_table(specs, TINY, "cpu", cache=TimingCache(tmp_path / "tc.parquet"))
    assert list(df["name"]) == list(specs)
    assert list(df["params_deploy"]) == [3_624, 3_624, count_params(reparameterize(build(SMALL_SPEC)))]
    assert list(df["cached"]) == [False, True, False]
    assert df["gmacs"].iloc[0] == pytest.approx(protocol_cost(specs["ecbsr-m4c8-x4"], TINY).macs_deploy / 1e9)
    assert (df["latency_ms_p90"] >= df["latency_ms"]).all() and df["error"].isna().all()
    text = format_table(df)
    assert text.splitlines()[0] == f"protocol tiny (fp32, batch 1, LR input 16x20) on {cpu_model_name()}"
    assert "3,624" in text and "median ms" in text and "error" not in text

    import sr_search.run.timing.measure as timing_mod
    real = timing_mod.measure

    def failing(model, protocol, device=None, *, exclusive=True, spec=None):
        if spec == SMALL_SPEC:
            raise TimingError("the model's output is not finite in fp16")
        return real(model, protocol, device, exclusive=exclusive, spec=spec)

    monkeypatch.setattr(timing_mod, "measure", failing)
    df = timing_table(specs, TINY)
    assert df["error"].iloc[2].startswith("the model's output is not finite") and pd.isna(df["latency_ms"].iloc[2])
    assert "not finite" in format_table(df)
    with pytest.raises(SrSearchError, match="no models given"):
        timing_table({}, TINY)
    with pytest.raises(SrSearchError, match="not divisible"):  # bad input fails before anything is timed
        timing_table({"x3": PRESETS["rtsrn-x3"]}, TimingProtocol(name="hr", device="cpu", hr_size=(32, 40)))


# --- CUDA (skipped without a GPU) -----------------------------------------------------------------------------


@pytest.mark.cuda
def test_cuda_measure_fp16_restores_cudnn_flag():
    proto = TimingProtocol(name="cuda-tiny", device="cuda", precision="fp16", batch=2, hr_size=(64, 96),
                           warmup=2, reps=5, cudnn_benchmark=True, channels_last=True)
    torch.backends.cudnn.benchmark = False
    model = reparameterize(build(PRESETS["ecbsr-m4c16-x4"]))
    t = measure(model, proto, "cuda")
    assert torch.backends.cudnn.benchmark is False
    assert t.device_name == torch.cuda.get_device_name(0) and t.precision == "fp16"
    assert t.output_shape == (2, 1, 64, 96) and t.peak_mem_mb > 0 and t.latency_ms <= t.latency_ms_p90
    assert t.cpu_ms is None
    assert next(model.parameters()).device.type == "cpu" and next(model.parameters()).dtype == torch.float32


@pytest.mark.cuda
def test_cuda_fp16_overflow_is_an_error():
    proto = TimingProtocol(name="cuda-half", device="cuda", precision="fp16", lr_size=(16, 20), warmup=1, reps=2)
    with pytest.raises(TimingError, match="not finite in fp16"):
        measure(Overflow(), proto, spec=SMALL_SPEC)


@pytest.mark.cuda
def test_cuda_timing_is_cached_per_gpu_name(tmp_path):
    proto = TimingProtocol(name="cuda-tiny", device="cuda", lr_size=(32, 32), warmup=1, reps=3)
    cache = TimingCache(tmp_path / "tc.parquet")
    t, cached = time_spec(PRESETS["ecbsr-m4c8-x4"], proto, "cuda", cache)
    assert not cached and t.device_name == torch.cuda.get_device_name(0)
    assert time_spec(PRESETS["repsr-m4c8-x4"], proto, "cuda", cache) == (t, True)


def test_a_large_cache_appends_instead_of_rewriting_and_reads_as_one(tmp_path, monkeypatch):
    """Past FOLD_ALWAYS entries a put appends one journal line (O(1)); the parquet file is rewritten only when the
    journal holds an eighth of the entries, and at `flush`. Another instance, a reopened one and a torn last line
    (a kill mid-append) all read the same cache."""
    from sr_search.run.timing import cache as cache_module

    monkeypatch.setattr(cache_module, "FOLD_ALWAYS", 8)
    path = tmp_path / "tc.parquet"
    cache, other = TimingCache(path), TimingCache(path)
    writes = []
    real_write = cache_module.TimingCache._write
    monkeypatch.setattr(cache_module.TimingCache, "_write", lambda self: (writes.append(1), real_write(self)))
    for k in range(200):
        cache.put(f"k{k}", TINY, fake_timing(latency=1.0 + k))
    assert len(writes) < 8 + 40  # not 200: one rewrite per put only up to FOLD_ALWAYS entries
    assert cache.journal.exists() and pq.read_table(path).num_rows < 200
    assert len(other) == 200 and other.get("k150", TINY, "cpu-x").latency_ms == 151.0
    other.put("k150", TINY, fake_timing(latency=0.5), replace=True)  # the other instance's append is seen
    assert cache.get("k150", TINY, "cpu-x").latency_ms == 0.5
    with open(cache.journal, "ab") as fh:
        fh.write(b'\n{"deploy_key": "torn", "protoc')  # killed mid-append
    reopened = TimingCache(path)
    assert len(reopened) == 200 and reopened.get("k199", TINY, "cpu-x").latency_ms == 200.0
    reopened.put("k200", TINY, fake_timing(latency=3.0))  # the next line starts after the torn one
    assert TimingCache(path).get("k200", TINY, "cpu-x").latency_ms == 3.0 and len(TimingCache(path)) == 201
    reopened.flush()
    assert not reopened.journal.exists() and pq.read_table(path).num_rows == 201
    assert TimingCache(path).get("k150", TINY, "cpu-x").latency_ms == 0.5
