"""One trial, without Ray: `run_trial` as the runner's workers call it."""

from pathlib import Path

import pytest
import torch

from sr_search import load_study
from sr_search.model.network import SRNet
from sr_search.run.plan import make_plan
from sr_search.run.trial import run_trial
from sr_search.study.config import with_overrides

STUDY = """\
name: oom
space: space.yaml
mode: ablation
base: {block: plain, scale: 2, channels: 8, depth: 1}
factors: {channels: [8, 12, 16]}
timing: {device: cpu, precision: fp32, batch: 1, lr_size: [24, 24], warmup: 1, reps: 3, threads: 1}
train: {iterations: 6, batch_size: 4, lr_patch: 16}
data: {val_max_size: 48}
"""
SPACE = "params: {block: plain, scale: 2, colors: 3, channels: [8, 12, 16], depth: 1}\n"


@pytest.fixture
def study(tmp_path: Path):
    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / "oom.yaml").write_text(STUDY)
    return load_study(tmp_path / "oom.yaml")


def test_out_of_gpu_memory_fails_one_trial_and_the_next_one_runs(study, tmp_path, monkeypatch):
    """A CUDA OOM (raised here from a patched forward) is one failed row naming GPU memory and the batch/patch
    size; the trials after it, in the same worker process, complete."""
    forward = SRNet.forward

    def oom_for_12_channels(self, x):
        if self.spec.channels == 12 and self.training:  # a training step of the second candidate
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return forward(self, x)

    monkeypatch.setattr(SRNet, "forward", oom_for_12_channels)
    rows = [run_trial(planned.task(f"{i:04d}", study), study, device=torch.device("cpu"), exclusive_timing=True).row
            for i, planned in enumerate(make_plan(study))]
    assert [r["status"] for r in rows] == ["complete", "failed", "complete"]
    error = rows[1]["error"]
    assert "out of GPU memory" in error and "batch 4, LR patch 16" in error, error


def test_fractional_gpus_and_shared_cpus_mark_timings_non_exclusive(study):
    from sr_search.run.tune.launch import exclusive_timing as _exclusive_timing

    def with_resources(**resources):
        return with_overrides(study, resources=resources)

    assert _exclusive_timing(with_resources(gpus_per_trial=1, concurrency=4))  # each trial holds a whole GPU
    assert not _exclusive_timing(with_resources(gpus_per_trial=0.5, concurrency=2))  # two trainings share one GPU
    assert _exclusive_timing(with_resources(gpus_per_trial=0, concurrency=1))
    assert not _exclusive_timing(with_resources(gpus_per_trial=0, concurrency=2))  # trials share the CPU


@pytest.mark.cuda
def test_a_real_cuda_out_of_memory_fails_the_trial_and_frees_the_gpu(study, tmp_path):
    """On a GPU: cap this process at a sliver of the device, so a big batch really runs out of memory."""
    big = with_overrides(study, train={"batch_size": 4096, "lr_patch": 48})
    task = make_plan(big)[0].task("0000", big)
    free, total = torch.cuda.mem_get_info()
    torch.cuda.set_per_process_memory_fraction(min(1.0, 2**30 / total))  # 1 GiB
    try:
        row = run_trial(task, big, device=torch.device("cuda"), exclusive_timing=True).row
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert row["status"] == "failed" and "out of GPU memory" in row["error"], row["error"]
    assert torch.cuda.memory_allocated() < 2**28  # released: less than 256 MiB still held
    assert run_trial(task, study, device=torch.device("cuda"), exclusive_timing=True).row["status"] == "complete"
