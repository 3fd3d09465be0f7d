"""What a study needs from the machine or cluster it runs on, checked before anything starts (`validate`,
`launch --dry-run` and `launch` give the same message), so a study never waits forever for a GPU that is not there.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

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
    for p in (study.protocol, *study.also_protocols()):
        if p.device == "cuda" and "GPU" not in out:
            out["GPU"] = (1.0, f"timing: {p.name} (a CUDA protocol)")
    return out


def local_resources() -> dict[str, float]:
    """What a local Ray instance on this machine offers."""
    import torch

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def check_timing_device(study: Study) -> None:
    """A CUDA protocol times where the trial trains unless a deployment node is named (`timing_on`): trials without a
    GPU would each fail at timing, wherever the study runs. Raise `SrSearchError` for such a study, and for one whose
    timing runtime (onnxruntime, openvino, tensorrt) is not installed, naming the extra that installs it."""
    from ..study.protocols import missing_runtime

    for protocol in study_protocols(study):
        missing = missing_runtime(protocol)
        if missing is not None:
            raise SrSearchError(f"study {study.name!r}: {missing}")
    cuda = next((p for p in study_protocols(study) if p.device == "cuda"), None)
    if cuda is not None and study.resources.gpus_per_trial == 0 and study.timing_on is None:
        import torch

        here = "" if torch.cuda.is_available() else "; this machine has no CUDA"
        raise SrSearchError(
            f"study {study.name!r} times with a CUDA protocol ({'timing' if cuda is study.protocol else 'also_time'}: "
            f"{cuda.name}), but its trials get no "
            f"GPU (resources.gpus_per_trial is 0{here}) and no deployment node is named (timing_on): set "
            f"resources.gpus_per_trial (1 for exclusive timings) where there is a GPU, add timing_on, or use a CPU "
            f"protocol (timing: cpu)")


def study_protocols(study: Study) -> list:
    """Every protocol the study times under: its `timing`, then any it also times in (`also_time`)."""
    return [study.protocol, *study.also_protocols()]


def check_resources(study: Study, available: Mapping[str, float], where: str = "this machine") -> None:
    """Raise `SrSearchError` naming what the study needs that `available` lacks, and what there is (or, first, that
    the study cannot time at all: `check_timing_device`)."""
    check_timing_device(study)
    problems = [f"{name} {amount:g} ({key})" for (name, amount), key in
                ((k, key) for k, key in _missing(study, available))]
    if not problems:
        return
    has = ", ".join(f"{k} {v:g}" for k, v in sorted(available.items()) if not k.startswith(("node:", "memory",
                                                                                              "object_store")))
    hint = []
    if any(key == "resources.gpus_per_trial" for _, key in _missing(study, available)):
        hint.append("run it where there is a GPU (or join a cluster that has one with --address), or set "
                    "resources.gpus_per_trial: 0")
    if any(key.startswith("timing:") for _, key in _missing(study, available)):
        hint.append("time where there is a GPU, or use a CPU protocol (timing: cpu)")
    if study.timing_on is not None:
        hint.append("start the deployment node with `ray start --resources '{...}'` naming the timing_on resource")
    hint.append("or set resources.autoscaling: true if the cluster adds nodes on demand")
    raise SrSearchError(f"study {study.name!r} needs {'; '.join(problems)}, but {where} has: {has or 'nothing'}; "
                        + "; ".join(hint))


def _missing(study: Study, available: Mapping[str, float]) -> list[tuple[tuple[str, float], str]]:
    """((resource, amount), study key) for everything the study needs beyond `available`."""
    return [((name, amount), key) for name, (amount, key) in needs(study).items()
            if available.get(name, 0.0) < amount]


def resource_problems(paths: Iterable[str | Path]) -> list[str]:
    """For `sr-search validate`: every study among `paths` that this machine cannot run, as launch would say it."""
    from ..study.config import detect_kind, load_study
    from ..study.yamlfile import read_yaml

    problems = []
    for path in paths:
        doc = read_yaml(path, "YAML")
        if doc.problems or detect_kind(doc) != "study":
            continue
        try:
            check_resources(load_study(path), local_resources())
        except SrSearchError as exc:
            problems.append(f"{path}: {exc} (the file itself is valid)")
    return problems
