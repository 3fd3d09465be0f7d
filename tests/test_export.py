"""Export of a trial's deployed network, checked against the trained model (no study run needed)."""

import pytest
import torch

from sr_search import PRESETS, SrSearchError, build
from sr_search.results.export import export
from sr_search.results.store import spec_columns, write_trial_row


def kept_trial(study_dir, trial_id, preset, *, with_weights=True):
    spec = PRESETS[preset]
    if with_weights:
        (study_dir / "checkpoints").mkdir(exist_ok=True)
        torch.save(build(spec).state_dict(), study_dir / "checkpoints" / f"{trial_id}.pt")
    write_trial_row(study_dir, {"study": "s", "trial_id": trial_id, "status": "complete", **spec_columns(spec)})


@pytest.mark.parametrize("preset", ["repsr-m4c8-x4", "carn-m-x2"])
def test_torchscript_export_computes_the_trained_function(tmp_path, preset):
    kept_trial(tmp_path, "0003", preset)
    path, err = export(tmp_path, "0003", "pt")
    assert err <= 1e-4
    kinds = {m.original_name for m in torch.jit.load(str(path)).modules()}
    assert "Conv2d" in kinds and not {"RepBlock", "RepBranch", "FreezableBN"} & kinds  # the deployed form


def test_onnx_export_runs_in_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    kept_trial(tmp_path, "0001", "ecbsr-m4c8-x4")
    path, err = export(tmp_path, "0001", "onnx")
    assert path.suffix == ".onnx" and err <= 1e-4


def test_export_without_kept_weights_says_how_to_get_them(tmp_path):
    kept_trial(tmp_path, "0002", "rtsrn-x2", with_weights=False)
    with pytest.raises(SrSearchError, match="keep_checkpoints"):
        export(tmp_path, "0002", "pt")
    with pytest.raises(SrSearchError, match="no trial '0009'"):
        export(tmp_path, "0009", "pt")
