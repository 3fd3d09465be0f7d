"""Data: MATLAB bicubic against hand-computed values, image folders, the built-in set, patch sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sr_search import PRESETS, ArchSpec
from sr_search.run.data import (
    BUILTIN_TRAIN,
    BUILTIN_VAL,
    DataSpec,
    builtin_folder,
    check_patch,
    check_val,
    imresize,
    load_train,
    load_val,
    to_colors,
)
from sr_search.errors import SrSearchError



# --- imresize ---------------------------------------------------------------------------------------
# Keys cubic, a = -0.5: k(0.25) = 111/128, k(0.75) = 29/128, k(1.25) = -9/128, k(1.75) = -3/128
# (1.5|x|^3 - 2.5|x|^2 + 1 inside [0, 1], -0.5|x|^3 + 2.5|x|^2 - 4|x| + 2 inside [1, 2]).


def test_upscale_impulse_gives_kernel_samples():
    # x2: output j (1-based) sits at input coordinate u = j/2 + 1/4; an impulse at input 4 contributes k(u - 4).
    x = torch.zeros(1, 12, dtype=torch.float64)
    x[0, 3] = 1.0
    y = imresize(x, 2.0)[0] * 128
    expected = torch.zeros(24, dtype=torch.float64)
    expected[3:11] = torch.tensor([-3, -9, 29, 111, 111, 29, -9, -3], dtype=torch.float64)
    torch.testing.assert_close(y, expected, atol=1e-12, rtol=0)


def test_downscale_is_antialiased():
    # x1/2: the kernel is stretched to 0.5 * k(d / 2), u = 2j - 1/2; impulse at input 5 (1-based).
    x = torch.zeros(1, 16, dtype=torch.float64)
    x[0, 4] = 1.0
    y = imresize(x, 0.5)[0] * 256
    expected = torch.tensor([-3, 29, 111, -9, 0, 0, 0, 0], dtype=torch.float64)
    torch.testing.assert_close(y, expected, atol=1e-12, rtol=0)


def test_symmetric_padding_at_the_border():
    # [a, b] = [0, 1] upscaled x2; MATLAB pads symmetrically: ..., b, a | a, b | b, a, ...
    # out1 (u=0.75): taps b,a,a,b with k(1.75), k(0.75), k(0.25), k(1.25) -> (-3 - 9)/128
    # out2 (u=1.25): taps a,a,b,b with k(1.25), k(0.25), k(0.75), k(1.75) -> (29 - 3)/128; the rest by symmetry
    y = imresize(torch.tensor([[0.0, 1.0]], dtype=torch.float64), 2.0)[0] * 128
    torch.testing.assert_close(y, torch.tensor([-12.0, 26.0, 102.0, 140.0], dtype=torch.float64))


@pytest.mark.parametrize("scale", [0.25, 1 / 3, 0.5, 2.0, 3.0, 4.0])
def test_constant_image_stays_constant_and_size_is_ceil(scale):
    x = np.full((3, 13, 10), 0.37)
    y = imresize(x, scale)
    assert isinstance(y, np.ndarray) and y.dtype == x.dtype
    assert y.shape == (3, int(np.ceil(13 * scale - 1e-9)), int(np.ceil(10 * scale - 1e-9)))
    np.testing.assert_allclose(y, 0.37, atol=1e-12)


def test_downscale_of_upscale_is_close():
    import skimage.data

    img = torch.from_numpy(skimage.data.camera()[100:228, 100:228].astype(np.float64) / 255)
    for s in (2, 3, 4):
        back = imresize(imresize(img, float(s)), 1 / s)
        assert back.shape == img.shape
        assert (back - img).abs().mean() < 0.01


def test_imresize_rejects_integer_input():
    with pytest.raises(SrSearchError, match="float"):
        imresize(torch.zeros(4, 4, dtype=torch.uint8), 0.5)


def test_y_conversion_matches_matlab_weights():
    rgb = torch.eye(3).view(3, 3, 1, 1)  # pure red, green, blue in [0, 1]
    y = to_colors(rgb, 1).flatten() * 255
    torch.testing.assert_close(y, torch.tensor([16 + 65.481, 16 + 128.553, 16 + 24.966]))
    white = to_colors(torch.full((3, 1, 1), 255, dtype=torch.uint8), 1, peak=255.0)
    assert white.item() == pytest.approx(235 / 255)


# --- built-in set and folders -----------------------------------------------------------------------


def test_builtin_split_has_no_shared_scene_and_is_bundled():
    assert not set(BUILTIN_TRAIN) & set(BUILTIN_VAL)
    train_files = {f for files in BUILTIN_TRAIN.values() for f in files}
    val_files = {f for files in BUILTIN_VAL.values() for f in files}
    assert not train_files & val_files
    assert {"motorcycle_left.png", "motorcycle_right.png"} <= train_files  # one scene, one side
    for f in train_files | val_files:
        assert (builtin_folder() / f).is_file(), f


def test_load_train_builtin_pairs():
    data = load_train(DataSpec(train_max_images=2), scale=3, colors=3)
    assert data.names == ["coffee", "rocket"]
    for hr, lr in zip(data.hr, data.lr):
        assert hr.dtype == torch.uint8 and lr.dtype == torch.uint8
        assert hr.shape[0] == 3 and hr.shape[1] % 3 == 0 and hr.shape[2] % 3 == 0
        assert hr.shape[1:] == (lr.shape[1] * 3, lr.shape[2] * 3)


def _write(path, arr, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return path


def _noise(h, w, seed=0, channels=3):
    rng = np.random.default_rng(seed)
    shape = (h, w, channels) if channels else (h, w)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def test_folder_is_searched_recursively_for_all_formats(tmp_path):
    _write(tmp_path / "a.png", _noise(40, 48, 1))
    _write(tmp_path / "sub" / "b.JPG", _noise(41, 50, 2))
    _write(tmp_path / "sub" / "deeper" / "c.bmp", _noise(44, 44, 3))
    _write(tmp_path / "gray.png", _noise(40, 40, 4, channels=0))
    _write(tmp_path / "rgba.png", _noise(40, 40, 5, channels=4))
    (tmp_path / "notes.txt").write_text("not an image")
    data = load_train(DataSpec(train=str(tmp_path)), scale=4, colors=3)
    assert sorted(data.names) == ["a", "gray", "rgba", "sub/b", "sub/deeper/c"]
    b = data.hr[data.names.index("sub/b")]
    assert tuple(b.shape) == (3, 40, 48)  # 41x50 mod-cropped to x4
    gray = data.hr[data.names.index("gray")]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def test_sixteen_bit_grey_png_is_scaled_to_eight_bits(tmp_path):
    from sr_search.run.data import read_image

    arr = np.zeros((4, 4), dtype=np.uint16)
    arr[0, 0], arr[0, 1] = 65535, 32896  # 32896 / 65535 * 255 = 128.0
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    img = read_image(path)
    assert img.shape == (4, 4, 3) and img.dtype == np.uint8
    assert img[0, 0].tolist() == [255] * 3 and img[0, 1].tolist() == [128] * 3 and img[1, 1].tolist() == [0] * 3


def test_empty_and_missing_folders_name_the_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(SrSearchError, match=f"{empty}.*contains no images"):
        load_train(DataSpec(train=str(empty)), 4, 3)
    with pytest.raises(SrSearchError, match="nowhere.*does not exist"):
        load_val(DataSpec(val={"set5": str(tmp_path / "nowhere")}), 4, 3)


def test_corrupt_image_names_its_path(tmp_path):
    _write(tmp_path / "good.png", _noise(32, 32))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(SrSearchError, match=f"cannot read image {bad}"):
        load_val(DataSpec(val={"mine": str(tmp_path)}), 2, 3)


def test_builtin_must_be_spelled_exactly():
    with pytest.raises(SrSearchError, match="spelled exactly 'builtin:'"):
        load_train(DataSpec(train="builtin"), 4, 3)


def test_dataspec_rejects_bad_fields_and_is_hashable():
    with pytest.raises(SrSearchError, match="'val_max'.*unknown field"):
        DataSpec(val_max=3)
    with pytest.raises(SrSearchError, match="'set 5'.*letters, digits"):
        DataSpec(val={"set 5": "x"})
    with pytest.raises(SrSearchError, match="at least one validation set"):
        DataSpec(val={})
    assert hash(DataSpec()) == hash(DataSpec(val={"builtin": "builtin:"}))


# --- validation data --------------------------------------------------------------------------------


def test_load_val_centre_crops_and_mod_crops(tmp_path):
    img = _noise(90, 130, 7)
    _write(tmp_path / "x.png", img)
    sets = load_val(DataSpec(val={"mine": str(tmp_path)}, val_max_size=50), 3, 1)
    (one,) = sets["mine"]
    assert one.name == "x"
    assert tuple(one.hr.shape) == (3, 48, 48)
    top, left = (90 - 50) // 2, (130 - 50) // 2
    np.testing.assert_array_equal(one.hr.permute(1, 2, 0).numpy(), img[top:top + 48, left:left + 48])
    assert tuple(one.lr.shape) == (1, 16, 16)
    full = load_val(DataSpec(val={"mine": str(tmp_path)}, val_max_size=None), 3, 3)["mine"][0]
    assert tuple(full.hr.shape) == (3, 90, 129) and tuple(full.lr.shape) == (3, 30, 43)


def test_builtin_val_set():
    sets = load_val(DataSpec(), 4, 1)
    assert list(sets) == ["builtin"]
    assert [v.name for v in sets["builtin"]] == list(BUILTIN_VAL)
    for v in sets["builtin"]:
        assert tuple(v.hr.shape) == (3, 256, 256) and tuple(v.lr.shape) == (1, 64, 64)
        assert 16 / 255 - 1e-6 <= v.lr.min() and v.lr.max() <= 235 / 255 + 1e-6


def test_small_validation_image_is_reported_not_skipped(tmp_path):
    _write(tmp_path / "big.png", _noise(80, 80))
    _write(tmp_path / "tiny.png", _noise(40, 60))
    sets = load_val(DataSpec(val={"mine": str(tmp_path)}, val_max_size=None), 4, 3)
    with pytest.raises(SrSearchError, match="'tiny'.*'mine'.*too small.*at least 15"):
        check_val(PRESETS["rlfn-x4"], sets)
    check_val(PRESETS["ecbsr-m4c16-x4"], sets)  # no minimum tile for plain convs


# --- patches ----------------------------------------------------------------------------------------


def test_check_patch_minimum_and_unshuffle():
    with pytest.raises(SrSearchError, match="lr_patch=14.*minimum 15.*'rlfb'"):
        check_patch(PRESETS["rlfn-x4"], 14)
    check_patch(PRESETS["rlfn-x4"], 15)
    spec = ArchSpec(block="plain", unshuffle=2, scale=4, colors=1, channels=8, depth=1)
    with pytest.raises(SrSearchError, match="lr_patch=33 is not divisible by the spec's unshuffle=2"):
        check_patch(spec, 33)
    check_patch(spec, 32)


def test_batch_shapes_range_and_determinism():
    data = load_train(DataSpec(train_max_images=2), scale=4, colors=1)
    lr, hr = data.batch(5, 12, torch.Generator().manual_seed(3))
    assert lr.shape == (5, 1, 12, 12) and hr.shape == (5, 1, 48, 48)
    assert lr.dtype == hr.dtype == torch.float32
    assert 16 / 255 - 1e-6 <= hr.min() and hr.max() <= 235 / 255 + 1e-6
    lr2, hr2 = data.batch(5, 12, torch.Generator().manual_seed(3))
    assert torch.equal(lr, lr2) and torch.equal(hr, hr2)
    lr3, _ = data.batch(5, 12, torch.Generator().manual_seed(4))
    assert not torch.equal(lr, lr3)


def test_patches_stay_aligned_through_augmentation():
    data = load_train(DataSpec(train_max_images=3), scale=4, colors=3)
    lr, hr = data.batch(32, 16, torch.Generator().manual_seed(0))
    # The LR is the clipped bicubic of the HR, so away from the patch border the two must agree to 8-bit rounding.
    down = imresize(hr.double(), 0.25).clamp(0, 1)
    assert (down - lr)[..., 2:-2, 2:-2].abs().max() <= 0.5 / 255 + 1e-6


def test_augmentation_reaches_all_eight_orientations(tmp_path):
    _write(tmp_path / "one.png", _noise(16, 16, 9))  # LR 4x4 at x4: the patch is the whole image
    data = load_train(DataSpec(train=str(tmp_path)), scale=4, colors=3)
    lr, hr = data.batch(200, 4, torch.Generator().manual_seed(0))
    distinct = {tuple(p.flatten().tolist()) for p in hr}
    assert len(distinct) == 8
    base = data.hr[0].float() / 255
    variants = [base, base.flip(-1), base.flip(-2), base.flip(-1).flip(-2)]
    variants += [v.transpose(-1, -2) for v in variants]
    assert distinct == {tuple(v.flatten().tolist()) for v in variants}


def test_patch_larger_than_an_image_names_it(tmp_path):
    _write(tmp_path / "small.png", _noise(40, 64))
    _write(tmp_path / "large.png", _noise(128, 128))
    data = load_train(DataSpec(train=str(tmp_path)), scale=4, colors=3)
    with pytest.raises(SrSearchError, match="lr_patch=12 does not fit training image 'small'"):
        data.batch(2, 12, torch.Generator().manual_seed(0))
