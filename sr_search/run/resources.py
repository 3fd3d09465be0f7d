"""What a study needs from the machine or cluster it runs on, checked before anything starts (`validate`,
`launch --dry-run` and `launch` give the same message), so a study never waits forever for a GPU that is not there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..errors import SrSearchError
from ..study.model import Study


def needs(study: Study) -> dict[str, tuple[float, str]]:
    """Resource -> (amount the study needs at least once, the study key that asks for it)."""
    r = study.resources
    out: dict[str, tuple[float, str]] = {"CPU": (r.cpus_per_trial, "resources.cpus_per_trial")}
    if r.gpus_per_trial > 0:
        out["GPU"] = (r.gpus_per_trial, "resources.gpus_per_trial")
    if study.timing_on is not None:
        for name, amount in study.timing_on.resources.items():
            out[name] = (amount, f"timing_on.resources.{name}")
    if study.protocol.device == "cuda" and "GPU" not in out:
        out["GPU"] = (1.0, f"timing: {study.protocol.name} (a CUDA protocol)")
    return out


def local_resources() -> dict[str, float]:
    """What a local Ray instance on this machine offers."""
    import torch

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def check_resources(study: Study, available: Mapping[str, float], where: str = "this machine") -> None:
    """Raise `SrSearchError` naming what the study needs that `available` lacks, and what there is."""
    problems = []
    for name, (amount, key) in needs(study).items():
        if available.get(name, 0.0) < amount:
            problems.append(f"{name} {amount:g} ({key})")
    if not problems:
        return
    has = ", ".join(f"{k} {v:g}" for k, v in sorted(available.items()) if not k.startswith(("node:", "memory",
                                                                                              "object_store")))
    hint = []
    if any(p.startswith("GPU") for p in problems):
        hint.append("run it where there is a GPU (or join a cluster with --address), or set resources.gpus_per_trial: "
                    "0 and timing: cpu")
    if study.timing_on is not None:
        hint.append("start the deployment node with `ray start --resources '{...}'` naming the timing_on resource")
    hint.append("or set resources.autoscaling: true if the cluster adds nodes on demand")
    raise SrSearchError(f"study {study.name!r} needs {'; '.join(problems)}, but {where} has: {has or 'nothing'}; "
                        + "; ".join(hint))
