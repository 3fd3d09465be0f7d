"""The node's prepared-image cache and what sits on it: the banded degrade against sr-search 0.2's dense one, the
vectorised sampler against 0.2's per-sample one, concurrent and killed fills, changed files, an unwritable cache,
and a pruned study that decodes each image once per node and records where its time went."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sr_search.run import data as data_mod
from sr_search.run.data import DataSpec, degrade, degrade_dense, imresize, imresize_dense, load_train, prepare
from sr_search.study.data_cache import DataCache, FileIdentity, hr_name, lr_name, source_size

ROOT = Path(__file__).resolve().parents[1]


def _natural(h: int, w: int, seed: int) -> np.ndarray:
    """A crop of a scikit-image photo (natural content, so rounding ties are as rare as in real data)."""
    import skimage.data

    photo = skimage.data.astronaut() if seed % 2 else skimage.data.coffee()
    top, left = (seed * 7) % (photo.shape[0] - h), (seed * 13) % (photo.shape[1] - w)
    return np.ascontiguousarray(photo[top:top + h, left:left + w])


def _folder(tmp_path: Path, n: int, size=(96, 120)) -> Path:
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    for i in range(n):
        Image.fromarray(_natural(*size, seed=i)).save(folder / f"img{i:02d}.png")
    return folder


def _files(folder: Path) -> list[tuple[str, Path]]:
    return [(p.stem, p) for p in sorted(folder.glob("*.png"))]


def _decodes(cache: DataCache) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in cache.journal_lines():
        if line["what"] == "decode":
            out[Path(line["path"]).name] = out.get(Path(line["path"]).name, 0) + 1
    return out


# --- the degrade: banded equals 0.2's dense ------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_banded_degrade_equals_the_dense_one(scale):
    hr = data_mod.mod_crop(_natural(132, 180, seed=scale), scale)
    x = torch.from_numpy(hr.astype(np.float32)).permute(2, 0, 1) / 255
    banded, dense = imresize(x, 1 / scale), imresize_dense(x, 1 / scale)
    assert banded.shape == dense.shape
    assert float((banded - dense).abs().max()) <= 1e-5
    lr, lr_dense = degrade(hr, scale), degrade_dense(hr, scale)
    assert lr.shape == lr_dense.shape and lr.dtype == np.uint8
    # 8-bit output: equal but where the float value sits within float32 noise of a rounding tie
    assert int(np.abs(lr.astype(int) - lr_dense.astype(int)).max()) <= 1
    assert (lr != lr_dense).mean() < 1e-4


@pytest.mark.parametrize("scale", [0.5, 1 / 3, 0.25, 0.7, 1.5, 2.0, 3.0])
def test_banded_imresize_equals_dense_in_float64(scale):
    x = torch.rand(2, 37, 29, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(imresize(x, scale).numpy(), imresize_dense(x, scale).numpy(), atol=1e-12, rtol=0)


# --- the sampler: the same patches as 0.2 ------------------------------------------------------------------


def _sampler_0_2(data, batch_size, lr_patch, generator):
    """sr-search 0.2's TrainData.batch: one sample at a time, flips and transpose per sample (reference)."""
    s, p = data.scale, lr_patch
    hr_all = [data_mod.to_colors(h, data.colors, 255.0) if data.colors == 1 else h for h in data.hr]
    lr_all = [data_mod.to_colors(x, data.colors, 255.0) if data.colors == 1 else x for x in data.lr]
    draws = torch.rand((batch_size, 6), generator=generator, dtype=torch.float64).tolist()
    lrs, hrs = [], []
    for k, top_u, left_u, hflip, vflip, transpose in draws:
        i = int(k * len(lr_all))
        h, w = lr_all[i].shape[1:]
        top, left = int(top_u * (h - p + 1)), int(left_u * (w - p + 1))
        lr = lr_all[i][:, top:top + p, left:left + p]
        hr = hr_all[i][:, top * s:(top + p) * s, left * s:(left + p) * s]
        dims = (-1,) * (hflip < 0.5) + (-2,) * (vflip < 0.5)
        if dims:
            lr, hr = lr.flip(dims), hr.flip(dims)
        if transpose < 0.5:
            lr, hr = lr.transpose(-1, -2), hr.transpose(-1, -2)
        lrs.append(lr)
        hrs.append(hr)
    as_float = (lambda t: t.float().div_(255.0)) if data.colors == 3 else (lambda t: t)
    return as_float(torch.stack(lrs)), as_float(torch.stack(hrs))


@pytest.mark.parametrize("scale,colors", [(2, 3), (4, 3), (3, 1)])
def test_vectorised_sampler_draws_the_patches_0_2_drew(scale, colors):
    data = load_train(DataSpec(train_max_images=3), scale, colors)
    for seed, augment in ((0, True), (1, True), (2, False), (3, False)):  # augmented on the host (CPU) or after
        cut = data.cut(16, 12, torch.Generator().manual_seed(seed), augment=augment)
        lr, hr = data.finish(cut, "cpu", torch.float32)
        lr0, hr0 = _sampler_0_2(data, 16, 12, torch.Generator().manual_seed(seed))
        assert lr.shape == lr0.shape and hr.shape == hr0.shape and lr.dtype == hr.dtype == torch.float32
        if colors == 3:
            assert torch.equal(lr, lr0) and torch.equal(hr, hr0)
        else:  # Y from the same uint8 RGB, per patch instead of per image: equal to float rounding
            torch.testing.assert_close(lr, lr0, atol=1e-6, rtol=0)
            torch.testing.assert_close(hr, hr0, atol=1e-6, rtol=0)


def test_batches_follow_the_model_dtype_and_the_uint8_cut_is_small(tmp_path):
    data = load_train(DataSpec(train_max_images=2), 2, 3)
    cut = data.cut(4, 8, torch.Generator().manual_seed(0))
    assert cut.lr.dtype == cut.hr.dtype == torch.uint8 and tuple(cut.hr.shape) == (4, 16, 16, 3)
    lr, hr = data.finish(cut, "cpu", torch.float64)
    assert lr.dtype == hr.dtype == torch.float64 and tuple(hr.shape) == (4, 3, 16, 16)


# --- the cache ------------------------------------------------------------------------------------------------


def test_prepared_once_then_mapped_read_only_and_equal_to_preparing_in_memory(tmp_path):
    folder = _folder(tmp_path, 3)
    cache = DataCache(tmp_path / "cache")
    first = prepare(_files(folder), 4, None, cache, "training")
    again = prepare(_files(folder), 4, None, cache, "training")
    assert _decodes(cache) == {f"img{i:02d}.png": 1 for i in range(3)}
    off = prepare(_files(folder), 4, None, DataCache(None), "training")
    for a, b, c in zip(first, again, off):
        assert np.array_equal(a.hr, c.hr) and np.array_equal(a.lr, c.lr) and np.array_equal(b.lr, c.lr)
        assert not b.hr.flags.writeable
    assert cache.info().entries == 6  # one decoded image and one x4 LR per file
    prepare(_files(folder), 2, None, cache, "training")  # another scale degrades again but never decodes again
    assert _decodes(cache) == {f"img{i:02d}.png": 1 for i in range(3)}
    assert cache.info().entries == 9 and cache.info().degrades == 6
    assert source_size(cache, folder / "img00.png") == (120, 96)


_FILL = """
import sys, time
from pathlib import Path
from sr_search.run.data import prepare
from sr_search.study import data_cache
folder, root, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
if mode == "stall":  # stop just before the first entry would appear, and wait to be killed
    def stall(src, dst):
        print("STALLED", flush=True)
        time.sleep(600)
    data_cache.os.replace = stall
files = [(p.stem, p) for p in sorted(folder.glob("*.png"))]
prepare(files, 2, None, data_cache.DataCache(root), "training")
print("DONE", flush=True)
"""


def _filler(folder: Path, root: Path, mode: str = "fill") -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", _FILL, str(folder), str(root), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def test_two_processes_filling_one_cache_leave_one_valid_entry_per_image(tmp_path):
    folder = _folder(tmp_path, 8)
    root = tmp_path / "cache"
    procs = [_filler(folder, root), _filler(folder, root)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    cache = DataCache(root)
    assert _decodes(cache) == {f"img{i:02d}.png": 1 for i in range(8)}  # each image decoded by one of them
    assert cache.info().entries == 16 and cache.info().partial == 0
    reference = prepare(_files(folder), 2, None, DataCache(None), "training")
    for (name, path), ref in zip(_files(folder), reference):
        identity = FileIdentity.of(path)
        for key, arr in ((hr_name(identity), ref.hr), (lr_name(identity, 2, None), ref.lr)):
            entry = cache.lookup(key)
            assert entry is not None, name
            stored = cache.read(entry)
            assert np.array_equal(stored["hr" if key == hr_name(identity) else "lr"][:arr.shape[0], :arr.shape[1]],
                                  arr)


def test_a_fill_killed_midway_is_never_read_and_is_redone(tmp_path):
    folder = _folder(tmp_path, 2)
    root = tmp_path / "cache"
    proc = _filler(folder, root, "stall")
    deadline = time.time() + 60
    line = proc.stdout.readline()
    assert "STALLED" in line, line + proc.stdout.read() if proc.poll() is not None else line
    assert time.time() < deadline
    os.kill(proc.pid, signal.SIGKILL)  # while its temp file is complete on disk but not yet an entry
    proc.wait(timeout=30)
    cache = DataCache(root)
    assert cache.info().entries == 0 and cache.info().partial >= 1  # what it wrote is not an entry
    for _, path in _files(folder):
        assert cache.lookup(hr_name(FileIdentity.of(path))) is None
    prepared = prepare(_files(folder), 2, None, cache, "training")  # its lock died with it: redone at once
    reference = prepare(_files(folder), 2, None, DataCache(None), "training")
    assert all(np.array_equal(a.lr, b.lr) and np.array_equal(a.hr, b.hr) for a, b in zip(prepared, reference))
    assert cache.info().entries == 4 and cache.info().partial == 0  # the killed fill's temp file is gone
    assert sum(_decodes(cache).values()) >= 3  # the killed process decoded too: redone, not read


def test_a_changed_image_file_is_prepared_again(tmp_path):
    folder = _folder(tmp_path, 2)
    cache = DataCache(tmp_path / "cache")
    before = prepare(_files(folder), 2, None, cache, "training")
    path = folder / "img01.png"
    new = _natural(96, 120, seed=11)
    Image.fromarray(new).save(path)  # same name, new content
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # as a copy seconds later would stamp it
    after = prepare(_files(folder), 2, None, cache, "training")
    assert np.array_equal(after[1].hr, new) and not np.array_equal(after[1].hr, before[1].hr)
    assert np.array_equal(after[1].lr, degrade(new, 2))
    assert np.array_equal(after[0].hr, before[0].hr)
    assert _decodes(cache) == {"img00.png": 1, "img01.png": 2}


def test_an_unwritable_cache_falls_back_to_memory_with_a_clear_message(tmp_path):
    folder = _folder(tmp_path, 2)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    data_mod._WARNED.clear()
    with pytest.warns(UserWarning, match=r"data cache .*not-a-folder.*cannot be written.*in memory.*nothing is lost"):
        got = prepare(_files(folder), 2, None, DataCache(blocker / "cache"), "training")
    reference = prepare(_files(folder), 2, None, DataCache(None), "training")
    assert all(np.array_equal(a.lr, b.lr) for a, b in zip(got, reference))


def test_a_full_disk_keeps_the_images_in_memory_and_leaves_no_partial_entry(tmp_path, monkeypatch):
    folder = _folder(tmp_path, 2)
    cache = DataCache(tmp_path / "cache")
    def full(self, name, arrays, meta):
        tmp = self._dir("tmp") / f"{name}.x.part"
        tmp.write_bytes(b"partial")
        tmp.unlink()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(DataCache, "write", full)
    data_mod._WARNED.clear()
    with pytest.warns(UserWarning, match=r"cannot write a prepared image .*No space left.*in memory"):
        got = prepare(_files(folder), 2, None, cache, "training")
    reference = prepare(_files(folder), 2, None, DataCache(None), "training")
    assert all(np.array_equal(a.lr, b.lr) and np.array_equal(a.hr, b.hr) for a, b in zip(got, reference))
    assert cache.info().entries == 0 and cache.info().partial == 0


def test_a_read_only_cache_that_holds_the_entries_serves_them_silently(tmp_path):
    folder = _folder(tmp_path, 2)
    root = tmp_path / "cache"
    prepare(_files(folder), 2, None, DataCache(root), "training")
    tmp = root / "v1" / "tmp"
    tmp.rmdir()
    tmp.write_text("writes fail here now")  # as on a read-only mount: nothing can be created
    cache = DataCache(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = prepare(_files(folder), 2, None, cache, "training")
    assert len(got) == 2 and _decodes(cache) == {"img00.png": 1, "img01.png": 1}


def test_eviction_keeps_the_data_in_use_and_removes_the_least_recently_used(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, seed in ((a, 0), (b, 5)):
        folder.mkdir()
        for i in range(2):
            Image.fromarray(_natural(96, 120, seed=seed + i)).save(folder / f"x{i}.png")
    root = tmp_path / "cache"
    prepare(_files(a), 2, None, DataCache(root), "training")
    one_set = DataCache(root).info().bytes
    time.sleep(0.01)
    small = DataCache(root, max_gb=one_set * 1.5 / 1e9)
    prepare(_files(b), 2, None, small, "training")
    info = small.info()
    assert info.bytes <= one_set * 1.5 and 4 <= info.entries < 8  # entries of set a went, as few as needed
    for _, path in _files(b):  # set b, in use, stayed whole
        assert small.lookup(hr_name(FileIdentity.of(path))) is not None
        assert small.lookup(lr_name(FileIdentity.of(path), 2, None)) is not None
    with pytest.warns(UserWarning, match="above data.cache_max_gb"):  # a bound below the data in use: kept, said
        DataCache(root, max_gb=one_set * 0.5 / 1e9).evict(
            {n for _, p in _files(b) for n in (hr_name(FileIdentity.of(p)), lr_name(FileIdentity.of(p), 2, None))})


def test_cache_clear_and_info(tmp_path):
    folder = _folder(tmp_path, 2)
    cache = DataCache(tmp_path / "cache")
    prepare(_files(folder), 3, None, cache, "training")
    info = cache.info()
    assert info.entries == 4 and info.bytes > 0 and info.decodes == 2
    assert cache.clear() >= info.bytes
    assert cache.info().entries == 0 and cache.info().decodes == 0


# --- a pruned study on a generated dataset -------------------------------------------------------------------


def test_a_pruned_study_decodes_each_image_once_per_node_and_rows_say_where_time_went(tmp_path, ray_cluster):
    from sr_search import load_results, load_study
    from sr_search.run.tune.launch import launch

    train = tmp_path / "train"
    train.mkdir()
    for i in range(4):
        Image.fromarray(_natural(64, 80, seed=i)).save(train / f"t{i}.png")
    val = tmp_path / "val"
    val.mkdir()
    Image.fromarray(_natural(48, 48, seed=9)).save(val / "v.png")
    cache = tmp_path / "cache"
    (tmp_path / "space.yaml").write_text("params:\n  block: [plain, rep]\n  scale: 2\n  colors: 3\n"
                                         "  channels: 8\n  depth: 1\n")
    (tmp_path / "s.yaml").write_text(textwrap.dedent(f"""\
        name: cached
        space: space.yaml
        timing: {{device: cpu, precision: fp32, batch: 1, lr_size: [24, 24], warmup: 1, reps: 3, threads: 1}}
        train: {{iterations: 12, batch_size: 4, lr_patch: 16}}
        data: {{train: {train}, val: {{mine: {val}}}, val_max_size: 48, cache: {cache}}}
        n_trials: 4
        sampler: random
        resources: {{concurrency: 2}}
        pruning: {{min_iterations: 3, reduction_factor: 2}}
        """))
    out = launch(load_study(tmp_path / "s.yaml"), out_dir=tmp_path / "run", echo=lambda _: None)
    df = load_results(out)
    assert set(df["status"]) <= {"complete", "pruned"} and (df["status"] == "pruned").any(), df[["status", "error"]]
    decodes = _decodes(DataCache(cache))
    assert decodes == {**{f"t{i}.png": 1 for i in range(4)}, "v.png": 1}  # 4 trials, more segments: one each
    for column in ("train_seconds", "data_seconds", "validate_seconds", "timing_seconds", "paused_seconds"):
        assert df[column].notna().all() and (df[column] >= 0).all(), column
    complete = df[df["status"] == "complete"]
    assert complete["deploy_seconds"].notna().all() and (complete["deploy_seconds"] > 0).all()
    assert (df["data_seconds"] > 0).all()


# --- before anything starts: the image check and the memory estimate -------------------------------------------


def test_the_pre_start_check_does_not_open_images_the_cache_has_decoded(tmp_path, monkeypatch):
    from sr_search.study import images

    folder = _folder(tmp_path, 6)
    cache = DataCache(tmp_path / "cache")
    prepare(_files(folder), 2, None, cache, "training")
    opened = []
    real = images._read_size
    monkeypatch.setattr(images, "_read_size", lambda p: opened.append(p) or real(p))
    images._SEEN.clear()
    paths = [p for _, p in _files(folder)]
    assert images.image_sizes(paths, cache) == [(120, 96)] * 6 and opened == []
    Image.fromarray(_natural(64, 80, seed=3)).save(paths[2])  # a changed file is checked again
    os.utime(paths[2], ns=(paths[2].stat().st_atime_ns, paths[2].stat().st_mtime_ns + 1_000_000))
    assert images.image_sizes(paths, cache)[2] == (80, 64) and opened == [paths[2]]


def _study_file(tmp_path: Path, data: str, resources: str = "") -> Path:
    train = _folder(tmp_path, 2)
    (tmp_path / "space.yaml").write_text("params:\n  block: plain\n  scale: 2\n  colors: 3\n  channels: 8\n"
                                         "  depth: 1\n")
    path = tmp_path / "s.yaml"
    path.write_text(f"name: mem\nspace: space.yaml\ntrain: {{lr_patch: 16}}\n"
                    f"data: {{train: {train}, val: {{v: {train}}}, {data}}}\n{resources}")
    return path


def test_validate_estimates_the_prepared_data_against_host_and_gpu_memory(tmp_path, monkeypatch):
    from sr_search.study import data_check
    from sr_search.study.config import validate_files

    per_image = data_check.prepared_bytes(120, 96, 2)
    assert per_image == 120 * 96 * 3 + 60 * 48 * 3
    monkeypatch.setattr(data_check, "host_memory", lambda: 4 * per_image)  # 2 train + 2 val images: above 80%
    with pytest.warns(UserWarning, match=r"prepared images take .* GB .* above 80% of this machine"):
        assert validate_files([_study_file(tmp_path, "cache: off")]) == []
    monkeypatch.setattr(data_check, "host_memory", lambda: 10**12)
    monkeypatch.setattr(data_check, "gpu_memory", lambda: 3 * per_image)  # 2 images x 2 trials per GPU > half
    problems = validate_files([_study_file(tmp_path, "on_gpu: true", "resources: {gpus_per_trial: 0.5}\n")])
    assert any("data.on_gpu copies the training images" in str(p) and "2 trial(s) per GPU" in str(p)
               for p in problems), problems
    assert validate_files([_study_file(tmp_path, "on_gpu: false", "resources: {gpus_per_trial: 0.5}\n")]) == []


def test_cache_info_and_clear_from_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from sr_search.cli import app

    folder = _folder(tmp_path, 2)
    root = tmp_path / "cache"
    prepare(_files(folder), 2, None, DataCache(root), "training")
    runner = CliRunner()
    info = runner.invoke(app, ["cache", "info", "--dir", str(root)])
    assert info.exit_code == 0 and "4 entries" in info.output and "2 decodes" in info.output, info.output
    cleared = runner.invoke(app, ["cache", "clear", "--dir", str(root)])
    assert cleared.exit_code == 0 and "cleared" in cleared.output
    assert DataCache(root).info().entries == 0
    assert runner.invoke(app, ["cache", "wipe"]).exit_code == 1


def test_time_shares_line_for_status_and_report():
    from sr_search.results.time_shares import shares_line, totals

    total = totals({"train_seconds": [60.0, 20.0, None], "data_seconds": [10.0, float("nan"), 10.0],
                    "validate_seconds": [0.0, 0.0, 0.0], "paused_seconds": [0.0, 300.0]})
    assert total["train_seconds"] == 80 and total["data_seconds"] == 20 and total["deploy_seconds"] == 0
    line = shares_line(total)
    assert line == ("trial time 100 s: training 80%, data 20%, validation 0%, deploy check 0%, timing 0%; "
                    "paused 5.0 min between rung segments")
    assert shares_line(totals({})) is None  # rows of 0.2 have no time columns: no line


def test_batches_drawn_ahead_in_a_thread_train_the_same_and_leave_the_same_state_at_a_rung():
    from sr_search import ArchSpec, build
    from sr_search.run.train import Trainer
    from sr_search.study.settings import TrainBudget

    data = load_train(DataSpec(train_max_images=2), 2, 3)
    budget = TrainBudget(iterations=12, batch_size=4, lr_patch=16)
    outcomes = []
    for prefetch in (False, True):
        torch.manual_seed(0)
        model = build(ArchSpec(block="plain", scale=2, colors=3, channels=8, depth=1))
        trainer = Trainer(model, data, budget, seed=1, prefetch=prefetch)
        trainer.run_until(5)  # a rung: the sampler's state must not have run ahead
        state = trainer.generator.get_state().clone()
        result = trainer.run_until(12)
        outcomes.append((state, result.history, [p.detach().clone() for p in model.parameters()]))
    (state0, hist0, w0), (state1, hist1, w1) = outcomes
    assert torch.equal(state0, state1) and hist0 == hist1
    assert all(torch.equal(a, b) for a, b in zip(w0, w1))
