"""Export a trial's deployed network: rebuild it from its row, load the trained weights the study kept,
reparameterize, write TorchScript (`pt`) or ONNX, and check that the exported file computes what the
trained model computes.

What it reads is derived from the trial id, which must be one of the runner's ids (`7` and `0007` name the same
trial), and resolves inside the study folder (a symlink out of it is refused). It writes one file: the output
path (default `<study>/export/<id>.<fmt>`), through a temporary file in the same folder that becomes the output
only once the export has been checked, so a failure (a full disk, a bad export) leaves nothing behind.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..errors import SrSearchError
from ..columns import TrialStatus
from ..model.deploy import check_equivalence, default_check_size, reparameterize
from ..model.network import build
from ..model.spec import ArchSpec
from .store import load_study_blocks, read_trial_row
from .study_dir import StudyDir, atomic_write, normalize_trial_id

#: fp32 rounding of the merge plus the exporter's own rounding
EXPORT_TOLERANCE = 1e-4
FORMATS = ("pt", "onnx")


def load_trained(study_dir: str | Path, trial_id: str) -> torch.nn.Module:
    """The trained (training-form) model of a trial, from the checkpoint its study kept."""
    folder = StudyDir(study_dir).require()
    trial_id = normalize_trial_id(trial_id)
    folder.inside(folder.trial_file(trial_id))  # a symlink out of the study folder is refused
    row = read_trial_row(folder, trial_id)
    if row is None:
        aside = folder.aside_of(folder.trial_file(trial_id))
        if aside.exists():
            raise SrSearchError(f"trial {trial_id}'s row was damaged and set aside ({aside}); it runs again on "
                                f"launch --resume, and can be exported after that")
        raise SrSearchError(f"no trial {trial_id!r} in {folder.root} (its rows are {folder.trials}/*.parquet)")
    if row["status"] != TrialStatus.COMPLETE:
        raise SrSearchError(f"trial {trial_id} did not complete (status {row['status']}: {row.get('error')})")
    ckpt = folder.inside(folder.checkpoint(trial_id))
    if not ckpt.exists():
        raise SrSearchError(
            f"trial {trial_id} has no kept weights ({ckpt} is missing): its study ran with keep_checkpoints: false, "
            f"and resuming a study never trains a finished trial again. To export this candidate, train it again "
            f"with keep_checkpoints: true: either run the study again as a new one (another --out), or train just "
            f"this candidate with a study file of the same space, data and train settings plus mode: ablation, "
            f"keep_checkpoints: true, factors: {{}}, seeds: [{row.get('seed')}], base: {row['arch_json']}"
        )
    load_study_blocks(study_dir)  # a family of the user's own (block_modules) is not registered in a fresh process
    model = build(ArchSpec.from_json(row["arch_json"]))
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
    return model.eval()


def export(study_dir: str | Path, trial_id: str, fmt: str = "pt", out: str | Path | None = None) -> tuple[Path, float]:
    """Write the deployed network of `trial_id`; returns the file and the max abs error of the export."""
    if fmt not in FORMATS:
        raise SrSearchError(f"export format {fmt!r} is not supported; allowed: {', '.join(FORMATS)}")
    folder = StudyDir(study_dir).require()
    trial_id = normalize_trial_id(trial_id)
    target = _output(folder, trial_id, fmt, out)
    trained = load_trained(folder.root, trial_id)
    deployed = reparameterize(trained)
    h, w = default_check_size(trained)
    param = next(trained.parameters())
    example = torch.rand(1, trained.spec.colors, h, w, device=param.device, dtype=param.dtype)
    errors: list[float] = []

    def write(tmp: Path) -> None:
        if fmt == "pt":
            with warnings.catch_warnings():
                # the traced network takes one input size's control flow as constant (e.g. the unshuffle
                # divisibility check); equivalence is checked on the reloaded file below
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.jit.trace(deployed, example).save(str(tmp))
                reloaded = torch.jit.load(str(tmp))
            errors.append(check_equivalence(trained, reloaded, tolerance=EXPORT_TOLERANCE))
        else:
            errors.append(_export_onnx(trained, deployed, example, tmp))

    if target.parent == folder.exports:
        folder.exports.mkdir(parents=True, exist_ok=True)
    atomic_write(target, write)
    return target, errors[0]


def _output(folder: StudyDir, trial_id: str, fmt: str, out: str | Path | None) -> Path:
    """Where the export goes: `out` (a file, or a folder to put `<id>.<fmt>` in), else the study's export folder.
    Nothing but that file is written, so an explicit output's folder must exist."""
    if out is None:
        return folder.inside(folder.export_file(trial_id, fmt))
    target = Path(out).expanduser()
    if target.is_dir():
        target = target / f"{trial_id}.{fmt}"
    if not target.parent.is_dir():
        raise SrSearchError(f"--out {out}: folder {target.parent} does not exist (create it first)")
    return target.resolve()


def write_onnx(deployed: torch.nn.Module, example: torch.Tensor, out: str | Path, *, dynamic: bool = True,
               opset: int | None = None) -> None:
    """The one ONNX export path (`sr-search export` and the engine timing runtimes): the TorchScript-based exporter
    with input `lr` and output `sr`; batch, height and width dynamic unless `dynamic` is False (an engine timed at one
    input shape gets that shape fixed, as a deployment would). `opset`: the exporter's default when None."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(deployed, (example,), str(out), input_names=["lr"], output_names=["sr"],
                          dynamic_axes={"lr": {0: "batch", 2: "height", 3: "width"}} if dynamic else None,
                          opset_version=opset, dynamo=False)


def _export_onnx(trained: torch.nn.Module, deployed: torch.nn.Module, example: torch.Tensor, out: Path) -> float:
    try:
        import onnxruntime as ort
    except ImportError:
        raise SrSearchError("ONNX export needs onnx and onnxruntime: pip install 'sr-search[onnx]'") from None
    write_onnx(deployed, example, out)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.rand(2, *example.shape[1:], generator=torch.Generator().manual_seed(0)).to(example)
    with torch.no_grad():
        expected = trained(x)
    got = torch.from_numpy(session.run(None, {"lr": x.numpy()})[0])
    err = (expected - got).abs().max().item()
    if not err <= EXPORT_TOLERANCE:
        raise SrSearchError(f"the ONNX export differs from the trained model: max abs error {err:.3g}")
    return err
