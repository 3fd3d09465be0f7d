"""Timing runtimes: ONNX Runtime and OpenVINO (on this CPU), TensorRT (CUDA-marked, run by `make gpu-check`).

Every built-in family's preset is exported, built, checked against PyTorch and timed in each CPU engine; a network
that exports wrongly is recorded failed and never timed; the timing cache keeps runtimes apart; a resumed study may
not change its runtime; torch protocols fingerprint (and so cache) exactly as before runtimes existed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sr_search import load_study
from sr_search.cli import app
from sr_search.errors import SrSearchError
from sr_search.model.blocks import REGISTRY
from sr_search.model.cost import deploy_pair
from sr_search.model.presets import PRESETS, preset
from sr_search.run import resources
from sr_search.run.inspect import inspect_rows
from sr_search.run.timing import measure as measure_mod
from sr_search.run.timing.cache import TimingCache
from sr_search.run.timing.engine import EngineError
from sr_search.run.timing.measure import measure, time_spec
from sr_search.run.trial import run_trial, timing_columns
from sr_search.run.plan import make_plan
from sr_search.study import protocols as protocols_mod
from sr_search.study.identity import changes, resolved
from sr_search.study.protocols import PROTOCOLS, TimingProtocol

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

#: a small input every family takes (ESA needs 15 px), short warm-up and repetitions: these tests check, not time
SMALL = dict(device="cpu", precision="fp32", batch=1, lr_size=(16, 24), warmup=1, reps=2, threads=1)
ENGINES = {
    "onnxruntime": TimingProtocol(name="ort-small", runtime="onnxruntime", **SMALL),
    "openvino": TimingProtocol(name="ov-small", runtime="openvino", **SMALL),
}
TORCH_SMALL = TimingProtocol(name="torch-small", **SMALL)


def smallest_preset(family: str) -> str:
    """The family's smallest x4 preset (channels x depth)."""
    names = [n for n, s in PRESETS.items() if s.block == family and s.scale == 4]
    return min(names, key=lambda n: PRESETS[n].channels * PRESETS[n].depth)


BUILT_IN = sorted(name for name, fam in REGISTRY.items() if type(fam).__module__.startswith("sr_search."))


def test_every_built_in_family_has_a_preset_to_time():
    assert len(BUILT_IN) >= 7
    assert all(smallest_preset(f) for f in BUILT_IN)


@pytest.mark.parametrize("runtime", sorted(ENGINES))
@pytest.mark.parametrize("family", BUILT_IN)
def test_engine_times_every_family_after_checking_it_against_pytorch(family, runtime):
    # the family's smallest x4 preset, at most 2 blocks deep (every op the preset has, a fraction of the export time)
    spec = preset(smallest_preset(family))
    spec = spec.replace(depth=min(spec.depth, 2))
    p = ENGINES[runtime]
    timing = measure(deploy_pair(spec)[1], p, spec=spec)
    assert timing.runtime == runtime and timing.protocol == p.name
    assert timing.engine_max_abs_err is not None and timing.engine_max_abs_err <= 1e-4
    assert timing.output_shape == (1, spec.colors, 16 * spec.scale, 24 * spec.scale)
    assert timing.latency_ms > 0 and timing.engine_build_s > 0 and timing.cpu_ms is not None
    assert runtime in json.loads(timing.engine_versions)
    row = timing_columns(timing, cached=False)
    assert row["timing_runtime"] == runtime and row["engine_build_s"] == timing.engine_build_s


class ExportsWrongly(torch.nn.Module):
    """A test double whose exported graph is not the network: under ONNX export it drops the last convolution's
    output and returns the upsampled input instead (a graph broken by tracing-dependent control flow)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.spec = net, net.spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        if torch.onnx.is_in_onnx_export():
            return y * 0.5
        return y


class DoesNotExport(torch.nn.Module):
    """A test double with an op the ONNX exporter cannot take."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.spec = net, net.spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + torch.fft.fft2(x).real.mean() * 0  # no ONNX symbolic for fft_fft2


@pytest.mark.parametrize("runtime", sorted(ENGINES))
def test_a_network_that_exports_wrongly_is_refused_not_timed(runtime, tmp_path):
    spec = preset("ecbsr-m4c8-x4")
    broken = ExportsWrongly(deploy_pair(spec)[1])
    cache = TimingCache(tmp_path / "timings.parquet")
    with pytest.raises(EngineError, match="differs from the PyTorch network") as err:
        time_spec(spec, ENGINES[runtime], cache=cache, deployed=broken)
    assert err.value.stage == "check"
    assert len(cache) == 0  # nothing was timed, nothing cached


def test_a_network_that_cannot_be_exported_is_an_export_failure():
    spec = preset("ecbsr-m4c8-x4")
    with pytest.raises(EngineError, match="export to ONNX failed") as err:
        measure(DoesNotExport(deploy_pair(spec)[1]), ENGINES["onnxruntime"], spec=spec)
    assert err.value.stage == "export"


STUDY = """\
name: engines
space: space.yaml
mode: ablation
base: {block: plain, scale: 2, channels: 8, depth: 1}
factors: {channels: [8, 12]}
timing: mine
protocols:
  mine: {device: cpu, precision: fp32, batch: 1, lr_size: [16, 16], warmup: 1, reps: 2, threads: 1, runtime: RUNTIME}
train: {iterations: 2, batch_size: 2, lr_patch: 16}
data: {val_max_size: 32}
"""
SPACE = "params: {block: plain, scale: 2, colors: 3, channels: [8, 12], depth: 1}\n"


def engine_study(tmp_path: Path, runtime: str = "onnxruntime", name: str = "engines.yaml"):
    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / name).write_text(STUDY.replace("RUNTIME", runtime))
    return load_study(tmp_path / name)


def test_a_trial_whose_export_is_wrong_is_recorded_failed_and_the_study_goes_on(tmp_path, monkeypatch):
    study = engine_study(tmp_path)
    real = deploy_pair

    def broken_deploy(spec):
        model, deployed = real(spec)
        return model, ExportsWrongly(deployed)

    monkeypatch.setattr(measure_mod, "deploy_pair", broken_deploy)
    tasks = [planned.task(f"{i:04d}", study) for i, planned in enumerate(make_plan(study))]
    row = run_trial(tasks[0], study, device=torch.device("cpu"), exclusive_timing=True).row
    assert row["status"] == "failed" and "differs from the PyTorch network" in row["error"]
    assert row["engine_failure"] == "check" and row["timing_runtime"] == "onnxruntime"
    assert row.get("latency_ms") is None and "psnr_y" not in row  # not timed, not trained
    monkeypatch.setattr(measure_mod, "deploy_pair", real)
    row = run_trial(tasks[1], study, device=torch.device("cpu"), exclusive_timing=True).row
    assert row["status"] == "complete", row["error"]
    assert row["timing_runtime"] == "onnxruntime" and row["engine_max_abs_err"] <= 1e-4 and row["latency_ms"] > 0


def test_the_timing_cache_keeps_runtimes_apart(tmp_path):
    spec = preset("ecbsr-m4c8-x4")
    cache = TimingCache(tmp_path / "timings.parquet")
    by_runtime = {"torch": TORCH_SMALL, **ENGINES}
    for p in by_runtime.values():
        timing, cached = time_spec(spec, p, cache=cache)
        assert not cached
    assert len(cache) == 3
    reread = TimingCache(tmp_path / "timings.parquet")
    for runtime, p in by_runtime.items():
        hit = reread.get(spec.deploy_key(), p, measure_mod.device_name(p))
        assert hit is not None and hit.runtime == runtime
        assert time_spec(spec, p, cache=reread)[1]  # served from the cache, under its own runtime only
    # one protocol name, redefined with another runtime: the torch timing is never served for it
    renamed = TimingProtocol(**{**ENGINES["onnxruntime"].model_dump(), "name": "torch-small"})
    assert reread.get(spec.deploy_key(), renamed, measure_mod.device_name(renamed)) is None
    assert renamed.fingerprint() != TORCH_SMALL.fingerprint()
    timing, cached = time_spec(spec, renamed, cache=reread)
    assert not cached and timing.runtime == "onnxruntime"


def test_a_resume_may_not_change_the_runtime(tmp_path):
    first = engine_study(tmp_path, "onnxruntime")
    frozen, frozen_resolved = first.dump(), resolved(first)
    assert changes(frozen, frozen_resolved, engine_study(tmp_path, "onnxruntime", "again.yaml")) == []
    other = engine_study(tmp_path, "openvino", "other.yaml")
    found = changes(frozen, frozen_resolved, other)
    assert any("runtime" in line and "onnxruntime" in line and "openvino" in line for line in found), found
    torch_again = engine_study(tmp_path, "torch", "torch.yaml")
    assert any("runtime" in line for line in changes(frozen, frozen_resolved, torch_again))


# 0.2's fingerprints of the built-in protocols: a torch protocol's cached timings stay valid
FINGERPRINTS_0_2 = {"repsr": "9e4d7509831746b3", "ntire23-x2": "0675c86f7f5eb168", "ntire23-x3": "2f3dbbf330c3c17d",
                    "ntire26-esr": "d40d9f44553589ee", "ntire26-esr-warm": "063db40af17f3758",
                    "ntire25-esr": "c20e4ccebf3c6902", "ntire25-esr-warm": "fbc693c73194ab78",
                    "cpu": "ec1167cc3e4b831c"}


def test_torch_protocols_are_what_they_were():
    for name, fingerprint in FINGERPRINTS_0_2.items():
        p = PROTOCOLS[name]
        assert p.runtime == "torch" and p.fingerprint() == fingerprint, name
        assert "runtime" not in p.model_dump() and "opset" not in p.model_dump(mode="json")
    spec = preset("ecbsr-m4c8-x4")
    timing = measure(deploy_pair(spec)[1], TORCH_SMALL, spec=spec)
    assert timing.runtime == "torch" and timing.engine_build_s is None
    assert not {"timing_runtime", "engine_build_s"} & set(timing_columns(timing, cached=False))


def test_engine_protocols_carry_their_options_in_the_fingerprint():
    p = PROTOCOLS["ort-cpu"]
    assert (p.runtime, p.provider, p.graph_optimization, p.opset) == ("onnxruntime", "cpu", "all", 17)
    assert PROTOCOLS["openvino-cpu"].provider is None and PROTOCOLS["trt-fp16"].device == "cuda"
    basic = TimingProtocol(**{**p.model_dump(), "graph_optimization": "basic"})
    assert basic.fingerprint() != p.fingerprint()
    assert TimingProtocol(**{**p.model_dump(), "threads": 2}).fingerprint() != p.fingerprint()


@pytest.mark.parametrize("fields, key", [
    (dict(runtime="torch", provider="cpu"), "provider"),
    (dict(runtime="openvino", provider="cpu"), "provider"),
    (dict(runtime="tensorrt"), "device"),
    (dict(runtime="onnxruntime", precision="fp16"), "precision"),
    (dict(runtime="onnxruntime", provider="cuda"), "provider"),
    (dict(runtime="onnxruntime", channels_last=True), "channels_last"),
])
def test_runtime_options_are_checked(fields, key):
    with pytest.raises(SrSearchError, match=key):
        TimingProtocol(**{**SMALL, "name": "bad", **fields})


def test_a_missing_runtime_is_refused_at_validate_naming_the_extra(tmp_path, monkeypatch):
    study = engine_study(tmp_path, "openvino")
    real = protocols_mod.importlib.util.find_spec
    monkeypatch.setattr(protocols_mod.importlib.util, "find_spec",
                        lambda name, *a: None if name == "openvino" else real(name, *a))
    with pytest.raises(SrSearchError, match=r"pip install 'sr-search\[openvino\]'"):
        resources.check_timing_device(study)
    problems = resources.resource_problems([tmp_path / "engines.yaml"])
    assert len(problems) == 1 and "sr-search[openvino]" in problems[0]


def test_cli_time_and_inspect_in_an_engine(tmp_path):
    result = CliRunner().invoke(app, ["time", "ecbsr-m4c8-x4", "--protocol", "ort-cpu"])
    assert result.exit_code == 0, result.output
    assert "protocol ort-cpu (onnxruntime, fp32" in result.output and "build s" in result.output
    result = CliRunner().invoke(app, ["inspect", "ecbsr-m4c8-x4", "--protocol", "openvino-cpu"])
    assert result.exit_code == 0, result.output
    assert "all ops" in result.output


def test_inspect_names_what_an_engine_could_not_take():
    spec = preset("ecbsr-m4c8-x4")
    rows = inspect_rows({"ok": spec}, ENGINES["openvino"])
    assert rows.iloc[0]["engine"] == "all ops"


# --- TensorRT and ONNX Runtime's CUDA provider: `make gpu-check` runs these -----------------------------------------


@pytest.mark.cuda
def test_tensorrt_engine_builds_checks_and_times_like_a_hand_written_loop():
    trt = pytest.importorskip("tensorrt")
    from sr_search.run.timing import engine as engines

    spec = preset("repsr-m4c16-x4")
    p = TimingProtocol(name="trt-check", device="cuda", precision="fp16", batch=1, lr_size=(180, 320), warmup=20,
                       reps=100, runtime="tensorrt")
    deployed = deploy_pair(spec)[1]
    timing = measure(deployed, p, spec=spec)
    assert timing.runtime == "tensorrt" and timing.engine_max_abs_err <= 2e-2
    assert json.loads(timing.engine_versions)["tensorrt"] == trt.__version__
    # the same engine timed by hand: CUDA events around execute_async_v3 on its stream, in the same run
    built = engines.build(deployed, p, (1, spec.colors, 180, 320))
    eng = built.engine
    for _ in range(20):
        eng.infer()
    eng.synchronize()
    times = []
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(100):
        start.record(eng.stream)
        eng.infer()
        end.record(eng.stream)
        eng.synchronize()
        times.append(start.elapsed_time(end))
    by_hand = sorted(times)[50]
    assert abs(timing.latency_ms - by_hand) <= 0.25 * by_hand + 0.05, (timing.latency_ms, by_hand)


@pytest.mark.cuda
def test_tensorrt_protocol_refuses_a_wrong_export():
    pytest.importorskip("tensorrt")
    spec = preset("ecbsr-m4c8-x4")
    p = TimingProtocol(name="trt-small", device="cuda", precision="fp32", batch=1, lr_size=(16, 24), warmup=1, reps=2,
                       runtime="tensorrt")
    with pytest.raises(EngineError, match="differs"):
        measure(ExportsWrongly(deploy_pair(spec)[1]), p, spec=spec)
    assert measure(deploy_pair(spec)[1], p, spec=spec).engine_max_abs_err <= 1e-4


@pytest.mark.cuda
def test_ort_cuda_protocol_times_on_the_gpu_or_says_what_to_install():
    import onnxruntime as ort

    spec = preset("ecbsr-m4c8-x4")
    p = TimingProtocol(name="ortc", device="cuda", precision="fp32", batch=1, lr_size=(16, 24), warmup=2, reps=5,
                       runtime="onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():  # the CPU wheel ([test]): a clear refusal
        with pytest.raises(EngineError, match="install onnxruntime-gpu"):
            measure(deploy_pair(spec)[1], p, spec=spec)
        return
    timing = measure(deploy_pair(spec)[1], p, spec=spec)
    assert timing.runtime == "onnxruntime" and timing.engine_max_abs_err <= 1e-4


# --- several runtimes in one study (`also_time`) -------------------------------------------------------------------

ALSO = STUDY.replace("RUNTIME", "torch").replace("protocols:\n", """protocols:
  ov: {device: cpu, precision: fp32, batch: 1, lr_size: [16, 16], warmup: 1, reps: 2, threads: 1, runtime: openvino}
  ort: {device: cpu, precision: fp32, batch: 1, lr_size: [16, 16], warmup: 1, reps: 2, threads: 1, runtime: onnxruntime}
""") + """\
also_time: [ov, ort]
objectives: {psnr_y: max, latency_ms@ov: min}
"""


def also_study(tmp_path: Path, text: str = ALSO, name: str = "also.yaml"):
    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / name).write_text(text)
    return load_study(tmp_path / name)


def test_a_study_times_in_several_runtimes_and_optimises_the_one_it_names(tmp_path, monkeypatch):
    study = also_study(tmp_path)
    assert [p.runtime for p in study.also_protocols()] == ["openvino", "onnxruntime"]
    assert study.timing_protocol("ort").runtime == "onnxruntime"
    task = make_plan(study)[0].task("0000", study)
    row = run_trial(task, study, device=torch.device("cpu"), exclusive_timing=True).row
    assert row["status"] == "complete", row["error"]
    assert row["latency_ms"] > 0 and row["latency_ms@ov"] > 0 and row["latency_ms@ort"] > 0
    # an engine that fails in a runtime the study only watches: recorded, and the trial goes on
    real = deploy_pair
    monkeypatch.setattr(measure_mod, "deploy_pair", lambda spec: (real(spec)[0], ExportsWrongly(real(spec)[1])))
    row = run_trial(make_plan(study)[1].task("0001", study), study, device=torch.device("cpu"),
                    exclusive_timing=True).row
    # the objective's runtime (ov) failed: the trial fails naming it; the torch latency was measured
    assert row["status"] == "failed" and "'ov' (an objective)" in row["error"]
    assert "differs from the PyTorch network" in row["timing_error@ov"]


def test_also_time_is_checked_and_part_of_what_a_study_means(tmp_path):
    with pytest.raises(SrSearchError, match="does not also time: add it to also_time"):
        also_study(tmp_path, ALSO.replace("latency_ms@ov", "latency_ms@cpu"), "bad.yaml")
    with pytest.raises(SrSearchError, match="timed already"):
        also_study(tmp_path, ALSO.replace("also_time: [ov, ort]", "also_time: [ov, mine]"), "twice.yaml")
    first = also_study(tmp_path)
    frozen, frozen_resolved = first.dump(), resolved(first)
    assert changes(frozen, frozen_resolved, also_study(tmp_path, name="again.yaml")) == []
    fewer = also_study(tmp_path, ALSO.replace("also_time: [ov, ort]", "also_time: [ov]"), "fewer.yaml")
    assert any(line.startswith("also_time") for line in changes(frozen, frozen_resolved, fewer))
    # a study without also_time resumes as before (0.2 froze no such key)
    plain = engine_study(tmp_path)
    frozen_plain = {k: v for k, v in plain.dump().items() if k != "also_time"}
    assert changes(frozen_plain, resolved(plain), plain) == []


def test_the_driver_files_every_runtime_s_fresh_timing_under_its_protocol():
    from sr_search.run.tune.recorder import timings_of
    from sr_search.run.tune.trainable import fresh_json

    from sr_search.run.timing.result import Timing

    def timing(protocol: str, runtime: str) -> Timing:
        return Timing(protocol=protocol, device_name="cpu", precision="fp32", batch=1, input_shape=(1, 3, 16, 24),
                      output_shape=(1, 3, 64, 96), exclusive=True, reps=2, latency_ms=1.0, latency_ms_p90=1.0,
                      latency_ms_mean=1.0, throughput=1e3, mpix_per_s=6.1, peak_mem_mb=1.0, runtime=runtime,
                      engine_build_s=None if runtime == "torch" else 0.5)

    fresh = [timing("torch-small", "torch"), timing("ort-small", "onnxruntime")]
    text = fresh_json(fresh)
    assert fresh == [] and [t.runtime for t in timings_of(text)] == ["torch", "onnxruntime"]
    one = timing("torch-small", "torch")
    assert timings_of(one.model_dump_json()) == [one]  # what 0.2's workers sent


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_launched_study_records_every_runtime_and_caches_each_apart(tmp_path, ray_cluster):
    from sr_search import launch, load_results

    study = also_study(tmp_path, ALSO.replace("also_time: [ov, ort]", "also_time: [ort]").replace(
        "latency_ms@ov", "latency_ms@ort"))
    out = launch(study, out_dir=tmp_path / "run", echo=lambda _: None)
    df = load_results(out)
    assert (df["status"] == "complete").all(), df[["status", "error"]]
    assert (df["latency_ms@ort"] > 0).all() and (df["timing_protocol"] == "mine").all()
    cache = TimingCache(out / "timing_cache.parquet")
    for spec_json in df["arch_json"]:
        from sr_search.model.spec import ArchSpec

        key = ArchSpec.from_json(spec_json).deploy_key()
        assert [e["runtime"] or "torch" for e in cache.entries(key, study.protocol)] == ["torch"]
        assert [e["runtime"] for e in cache.entries(key, study.timing_protocol("ort"))] == ["onnxruntime"]
