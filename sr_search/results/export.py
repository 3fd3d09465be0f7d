"""Export a trial's deployed network: rebuild it from its row, load the trained weights the study kept,
reparameterize, write TorchScript (`pt`) or ONNX, and check that the exported file computes what the
trained model computes."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import SrSearchError
from ..model.deploy import check_equivalence, default_check_size, reparameterize
from ..model.network import build
from ..model.spec import ArchSpec
from .store import load_study_blocks, read_trial_row
from .study_dir import StudyDir

#: fp32 rounding of the merge plus the exporter's own rounding
EXPORT_TOLERANCE = 1e-4


def load_trained(study_dir: str | Path, trial_id: str) -> torch.nn.Module:
    """The trained (training-form) model of a trial, from the checkpoint its study kept."""
    study_dir = Path(study_dir)
    row = read_trial_row(study_dir, trial_id)
    if row is None:
        raise SrSearchError(f"no trial {trial_id!r} in {study_dir} (see trials/*.parquet)")
    if row["status"] != "complete":
        raise SrSearchError(f"trial {trial_id} did not complete (status {row['status']}: {row.get('error')})")
    ckpt = StudyDir(study_dir).checkpoint(trial_id)
    if not ckpt.exists():
        raise SrSearchError(
            f"trial {trial_id} has no kept weights ({ckpt} is missing): the study ran with keep_checkpoints: false. "
            f"Set keep_checkpoints: true in the study file and re-run it to export trained networks"
        )
    load_study_blocks(study_dir)  # a family of the user's own (block_modules) is not registered in a fresh process
    model = build(ArchSpec.from_json(row["arch_json"]))
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
    return model.eval()


def export(study_dir: str | Path, trial_id: str, fmt: str = "pt", out: str | Path | None = None) -> tuple[Path, float]:
    """Write the deployed network of `trial_id`; returns the file and the max abs error of the export."""
    if fmt not in ("pt", "onnx"):
        raise SrSearchError(f"export format {fmt!r} is not supported; allowed: pt, onnx")
    trained = load_trained(study_dir, trial_id)
    deployed = reparameterize(trained)
    h, w = default_check_size(trained)
    param = next(trained.parameters())
    example = torch.rand(1, trained.spec.colors, h, w, device=param.device, dtype=param.dtype)
    out = Path(out) if out else StudyDir(study_dir).export_file(trial_id, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "pt":
        scripted = torch.jit.trace(deployed, example)
        scripted.save(str(out))
        reloaded = torch.jit.load(str(out))
        err = check_equivalence(trained, reloaded, tolerance=EXPORT_TOLERANCE)
    else:
        err = _export_onnx(trained, deployed, example, out)
    return out, err


def _export_onnx(trained: torch.nn.Module, deployed: torch.nn.Module, example: torch.Tensor, out: Path) -> float:
    try:
        import onnxruntime as ort
    except ImportError:
        raise SrSearchError("ONNX export needs onnx and onnxruntime: pip install 'sr-search[onnx]'") from None
    torch.onnx.export(deployed, (example,), str(out), input_names=["lr"], output_names=["sr"],
                      dynamic_axes={"lr": {0: "batch", 2: "height", 3: "width"}}, dynamo=False)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.rand(2, *example.shape[1:], generator=torch.Generator().manual_seed(0)).to(example)
    with torch.no_grad():
        expected = trained(x)
    got = torch.from_numpy(session.run(None, {"lr": x.numpy()})[0])
    err = (expected - got).abs().max().item()
    if not err <= EXPORT_TOLERANCE:
        raise SrSearchError(f"the ONNX export differs from the trained model: max abs error {err:.3g}")
    return err
