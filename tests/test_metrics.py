"""Metrics against closed forms and an independent implementation (scikit-image), and `evaluate`'s plumbing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from sr_search import PRESETS, ArchSpec, build
from sr_search.run.data import DataSpec, ValImage, imresize, load_val, to_colors
from sr_search.errors import SrSearchError
from sr_search.run.metrics import (
    bicubic_baseline,
    evaluate,
    psnr,
    rgb_to_y,
    ssim,
    to_uint8,
)



def test_y_of_primaries_is_the_matlab_weights():
    img = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 0, 0], [255, 255, 255]]], dtype=np.uint8)
    np.testing.assert_allclose(rgb_to_y(img)[0], [16 + 65.481, 16 + 128.553, 16 + 24.966, 16.0, 235.0])


def test_psnr_of_known_noise():
    a = np.full((20, 30), 128, dtype=np.uint8)
    b = a.astype(int)
    b[::2] += 5  # half the pixels off by 5, half by -5: MSE = 25
    b[1::2] -= 5
    assert psnr(a, b.astype(np.uint8)) == pytest.approx(10 * math.log10(255**2 / 25))
    assert psnr(a, a) == math.inf


def test_psnr_crops_the_border():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    b = a.copy()
    b[:4] = 0  # damage only inside the 4-px border
    b[:, -4:] = 255
    assert psnr(a, b, crop_border=4) == math.inf
    assert psnr(a, b, crop_border=3) < 30


def test_psnr_y_channel_uses_luma():
    a = np.full((16, 16, 3), 100, dtype=np.uint8)
    b = a.copy()
    b[..., 0] += 10  # red +10 moves Y by 65.481 * 10 / 255 everywhere
    expected = 10 * math.log10(255**2 / (65.481 * 10 / 255) ** 2)
    assert psnr(a, b, y_channel=True) == pytest.approx(expected)
    # green and blue changes that cancel in Y leave the Y PSNR infinite but not the RGB one
    c = a.astype(float)
    c[..., 1] += 24.966 * 2
    c[..., 2] -= 128.553 * 2
    assert psnr(a.astype(float), c, y_channel=True) > 200
    assert psnr(a.astype(float), c) < 20


def test_psnr_matches_scikit_image():
    from skimage.metrics import peak_signal_noise_ratio

    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    b = np.clip(a + rng.normal(0, 7, a.shape), 0, 255).astype(np.uint8)
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), rel=1e-12)


def test_ssim_identical_is_one_and_constant_images_follow_the_formula():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    # flat images: no variance, SSIM = (2xy + C1) / (x^2 + y^2 + C1)
    x, y = 100.0, 120.0
    c1 = (0.01 * 255) ** 2
    flat = ssim(np.full((32, 32), x), np.full((32, 32), y))
    assert flat == pytest.approx((2 * x * y + c1) / (x * x + y * y + c1), rel=1e-9)


def test_ssim_matches_scikit_image_gaussian_ssim():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    ref = structural_similarity(
        a.astype(np.float64), b.astype(np.float64), data_range=255, channel_axis=2,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    )
    assert ssim(a, b) == pytest.approx(ref, abs=1e-9)


def test_metric_input_errors():
    with pytest.raises(SrSearchError, match="shapes differ"):
        psnr(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(SrSearchError, match="at least 11x11"):
        ssim(np.zeros((20, 20)), np.zeros((20, 20)), crop_border=5)


def test_to_uint8_clamps_and_rounds():
    t = torch.tensor([-0.1, 0.2, 0.5, 0.999, 1.3]).view(1, 1, 1, 5)
    out = to_uint8(t)
    assert out.shape == (1, 5, 1) and out.dtype == np.uint8
    assert out[0, :, 0].tolist() == [0, 51, 128, 255, 255]  # 0.5 * 255 = 127.5 rounds half to even: 128


# --- evaluate ---------------------------------------------------------------------------------------


class Bicubic(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale
        self.w = nn.Parameter(torch.zeros(()))  # gives the model a device

    def forward(self, x):
        return imresize(x, float(self.scale)) + self.w


class Oracle(nn.Module):
    """Returns the ground truth (in the model's colours) for the LR it is given: the best any model can do."""

    def __init__(self, images: list[ValImage], colors: int):
        super().__init__()
        self.truth = {img.lr.numpy().tobytes(): to_colors(img.hr.float() / 255, colors) for img in images}

    def forward(self, x):
        assert not torch.is_grad_enabled() and not self.training
        return self.truth[x[0].numpy().tobytes()].unsqueeze(0)


@pytest.fixture(scope="module")
def val_y():
    return load_val(DataSpec(), 4, 1)


def test_evaluate_of_bicubic_model_equals_the_baseline(val_y):
    base = bicubic_baseline(val_y, 4, 1)
    got = evaluate(Bicubic(4), val_y, 4, 1)
    # the model resizes in float32, the baseline in float64 (both banded): equal to float noise (3e-7 dB measured)
    assert got["psnr_y"] == pytest.approx(base["bicubic_psnr_y"], abs=1e-5)
    assert got["ssim_y_builtin"] == pytest.approx(base["bicubic_ssim_y_builtin"], abs=1e-7)
    # sanity: bicubic is a real baseline, better than nearest neighbour
    near = nn.Sequential(nn.Upsample(scale_factor=4, mode="nearest"))
    assert evaluate(near, val_y, 4, 1, device="cpu")["psnr_y"] < base["bicubic_psnr_y"] - 0.5


def test_evaluate_y_model_loses_only_the_8bit_rounding(val_y):
    model = Oracle(val_y["builtin"], colors=1).train()
    got = evaluate(model, val_y, 4, 1, device="cpu")
    # the Y output is rounded to 8 bits, the truth's Y is not: error ~ uniform(-0.5, 0.5), MSE ~ 1/12
    assert got["psnr_y"] == pytest.approx(10 * math.log10(255**2 * 12), abs=0.3)
    assert model.training  # restored


def test_evaluate_rgb_model_reports_rgb_and_y():
    sets = load_val(DataSpec(), 4, 3)
    got = evaluate(Oracle(sets["builtin"], colors=3), sets, 4, 3, device="cpu")
    assert got["psnr_y"] == math.inf and got["psnr_rgb"] == math.inf and got["ssim_y"] == pytest.approx(1.0)
    base = bicubic_baseline(sets, 4, 3)
    assert 20 < base["bicubic_psnr_y"] < 40 and "bicubic_psnr_rgb" in base


def _set_of(tmp_path, name, sizes, seed=0):
    folder = tmp_path / name
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"img{i}.png")
    return str(folder)


def test_mean_over_sets_of_per_set_means(tmp_path):
    spec = DataSpec(val={"a": _set_of(tmp_path, "a", [(40, 40)], 1), "b": _set_of(tmp_path, "b", [(40, 40)] * 3, 2)})
    sets = load_val(spec, 2, 3)
    per_image = {
        name: [psnr(to_uint8(imresize(i.lr.double(), 2.0)), i.hr.permute(1, 2, 0).numpy(), 2, True) for i in imgs]
        for name, imgs in sets.items()
    }
    got = bicubic_baseline(sets, 2, 3)
    assert got["bicubic_psnr_y_a"] == pytest.approx(per_image["a"][0])
    assert got["bicubic_psnr_y_b"] == pytest.approx(np.mean(per_image["b"]))
    assert got["bicubic_psnr_y"] == pytest.approx((per_image["a"][0] + np.mean(per_image["b"])) / 2)


def test_evaluate_crops_for_unshuffle(tmp_path):
    sets = load_val(DataSpec(val={"odd": _set_of(tmp_path, "odd", [(100, 100)])}, val_max_size=None), 4, 1)
    assert tuple(sets["odd"][0].lr.shape) == (1, 25, 25)  # odd: pixel-unshuffle by 2 would fail
    spec = ArchSpec(block="plain", unshuffle=2, scale=4, colors=1, channels=4, depth=1)
    torch.manual_seed(0)
    got = evaluate(build(spec), sets, 4, 1)
    assert math.isfinite(got["psnr_y"])
    cropped = bicubic_baseline(sets, 4, 1, multiple=2)
    full = bicubic_baseline(sets, 4, 1)
    assert cropped["bicubic_psnr_y"] != full["bicubic_psnr_y"]  # scored on the 96x96 crop


def test_evaluate_reports_too_small_image_and_bad_output(tmp_path):
    sets = load_val(DataSpec(val={"tiny": _set_of(tmp_path, "tiny", [(48, 48)])}), 4, 3)
    with pytest.raises(SrSearchError, match="'img0'.*'tiny'.*too small"):
        evaluate(build(PRESETS["rlfn-s-x4"]), sets, 4, 3)
    with pytest.raises(SrSearchError, match="shape.*expected"):
        evaluate(Bicubic(2), sets, 4, 3)
    with pytest.raises(SrSearchError, match="colors=1"):
        evaluate(build(PRESETS["ecbsr-m4c8-x4"]), sets, 4, 3)
