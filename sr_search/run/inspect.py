"""`sr-search inspect`: what a candidate costs and whether it deploys exactly, without training or timing. Under an
engine protocol (`ort-cpu`, `openvino-cpu`, ...) it also exports and builds the engine, and shows the ops the engine
could not take (they fall back to the CPU, or fail) where the runtime reports them, or why the export failed."""

from __future__ import annotations

import pandas as pd

from ..model.cost import deploy_pair
from ..model.deploy import check_equivalence
from ..model.spec import ArchSpec
from ..study.protocols import TimingProtocol, get_protocol, lr_shape
from .timing.measure import protocol_cost


def inspect_rows(specs: dict[str, ArchSpec], protocol: str | TimingProtocol) -> pd.DataFrame:
    proto = get_protocol(protocol)
    rows = []
    for name, spec in specs.items():
        model, deployed = deploy_pair(spec)
        c = protocol_cost(spec, proto, models=(model, deployed))
        _, _, h, w = lr_shape(proto, spec)
        rows.append({
            "model": name, "block": spec.block, "scale": spec.scale, "params_train": c.params_train,
            "params_deploy": c.params_deploy, "GMACs": round(c.gmacs, 3),
            "at": f"{h}x{w} -> {h * spec.scale}x{w * spec.scale}",
            "deploy_err": f"{check_equivalence(model, deployed):.1e}", "deploy_key": spec.deploy_key(),
        })
        if proto.engine:
            from .timing.engine import runtime_module, unsupported_ops

            runtime_module(proto)  # a missing runtime is the command's error, not every row's
            rows[-1]["engine"] = unsupported_ops(deployed, proto, lr_shape(proto, spec))
    return pd.DataFrame(rows)


def inspect_table(specs: dict[str, ArchSpec], protocol: str | TimingProtocol) -> str:
    df = inspect_rows(specs, protocol)
    return df.to_string(index=False, formatters={"params_train": "{:,}".format, "params_deploy": "{:,}".format})
