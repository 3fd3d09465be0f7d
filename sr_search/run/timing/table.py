"""The `sr-search time` table: size, cost and timing of named specs under one protocol, and its text form."""

from __future__ import annotations

from typing import Any, Callable

import pandas as pd
import torch

from ...errors import SrSearchError
from ...model.cost import deploy_pair
from ...model.spec import ArchSpec
from ...study.protocols import TimingProtocol, get_protocol, lr_shape, missing_runtime
from .cache import TimingCache
from .measure import device_name, protocol_cost, time_spec
from .result import TimingError

__all__ = ["TABLE_COLUMNS", "timing_table", "format_table"]

TABLE_COLUMNS = ["name", "params_train", "params_deploy", "gmacs", "latency_ms", "latency_ms_p90", "throughput",
                 "mpix_per_s", "peak_mem_mb", "cached", "error"]
#: an engine protocol's table adds how long each engine took to build and how far its output was from PyTorch's
ENGINE_COLUMNS = ["engine_build_s", "engine_max_abs_err"]


def timing_table(
    specs: dict[str, ArchSpec],
    protocol: str | TimingProtocol,
    device: str | torch.device | None = None,
    *,
    cache: TimingCache | None = None,
    exclusive: bool = True,
) -> pd.DataFrame:
    """One row per named spec: parameters, deployed GMACs (one image), latency, throughput and memory.

    Every spec's input size is checked before anything is timed. A model that cannot be timed (fp16 overflow,
    out of memory) gets its reason in `error` and empty timings; bad input raises `SrSearchError`.
    The frame's `attrs` carry the protocol and device name.

    Specs that deploy to the same network (one `deploy_key`, e.g. RepSR and ECBSR of one size) are timed once and
    share that timing, also without a `cache` (an in-memory one then): one network, one set of figures.

    Under an engine protocol (`ort-cpu`, `openvino-cpu`, `trt-fp16`) each network is exported and built once and
    checked against PyTorch before it is timed; the table adds the build time and the check's max abs error, and a
    network the engine does not reproduce gets the reason in `error`.
    """
    if cache is None:
        cache = TimingCache.in_memory()
    p = get_protocol(protocol)
    if not specs:
        raise SrSearchError("timing_table: no models given; name presets or pass ArchSpec JSON")
    for spec in specs.values():
        lr_shape(p, spec)
    where = device_name(p, device)  # fails here, not per row, when the device is missing
    if missing_runtime(p) is not None:  # and when the runtime is not installed
        raise SrSearchError(missing_runtime(p))
    rows = []
    for label, spec in specs.items():
        model, deployed = deploy_pair(spec)
        size = protocol_cost(spec, p, models=(model, deployed))
        row: dict[str, Any] = {"name": label, "params_train": size.params_train,
                               "params_deploy": size.params_deploy, "gmacs": size.gmacs, "error": None}
        try:
            timing, cached = time_spec(spec, p, device, cache, exclusive=exclusive, deployed=deployed)
            row.update(latency_ms=timing.latency_ms, latency_ms_p90=timing.latency_ms_p90,
                       throughput=timing.throughput, mpix_per_s=timing.mpix_per_s, peak_mem_mb=timing.peak_mem_mb,
                       cached=cached, engine_build_s=timing.engine_build_s,
                       engine_max_abs_err=timing.engine_max_abs_err)
        except TimingError as exc:
            row["error"] = str(exc)
        rows.append(row)
    columns = [*TABLE_COLUMNS[:-1], *ENGINE_COLUMNS, TABLE_COLUMNS[-1]] if p.engine else TABLE_COLUMNS
    df = pd.DataFrame(rows).reindex(columns=columns)
    df.attrs.update(protocol=p.name, runtime=p.runtime, device_name=where, precision=p.precision, batch=p.batch,
                    input_shape=lr_shape(p, next(iter(specs.values()))))
    return df


def format_table(df: pd.DataFrame) -> str:
    """The table as aligned text, with a header line naming the protocol and device when known."""
    def num(fmt: str) -> Callable[[Any], str]:
        return lambda v: "-" if pd.isna(v) else format(v, fmt)

    formats = {"params_train": num(",.0f"), "params_deploy": num(",.0f"), "gmacs": num(".3f"),
               "latency_ms": num(".2f"), "latency_ms_p90": num(".2f"), "throughput": num(".1f"),
               "mpix_per_s": num(".2f"), "peak_mem_mb": num(".1f"), "cached": lambda v: "-" if pd.isna(v) else
               ("yes" if v else "no"), "engine_build_s": num(".2f"), "engine_max_abs_err": num(".1e")}
    shown = df.drop(columns=["error"]) if "error" in df and df["error"].isna().all() else df
    headers = {"params_train": "params (train)", "params_deploy": "params (deploy)", "gmacs": "GMACs",
               "latency_ms": "median ms", "latency_ms_p90": "p90 ms", "throughput": "images/s",
               "mpix_per_s": "Mpix/s", "peak_mem_mb": "peak MB", "engine_build_s": "build s",
               "engine_max_abs_err": "check err"}
    text = shown.rename(columns=headers).to_string(
        index=False, formatters={headers.get(k, k): f for k, f in formats.items()}, na_rep="-")
    a = df.attrs
    if a.get("protocol"):
        engine = f"{a['runtime']}, " if a.get("runtime", "torch") != "torch" else ""
        head = (f"protocol {a['protocol']} ({engine}{a['precision']}, batch {a['batch']}, LR input "
                f"{a['input_shape'][-2]}x{a['input_shape'][-1]}) on {a['device_name']}")
        return head + "\n" + text
    return text
