"""Paper baselines as named `ArchSpec`s, for scales x2, x3 and x4.

Each reproduces the released model's deployed parameter count exactly (deduplicated `parameters()`; counts in
`RELEASED_PARAMS`, from the authors' code, see shared/reference/sr_blocks_and_metrics.md):

- `ecbsr-m{M}c{C}-x{s}`: ECBSR (Y channel, PReLU, depth multiplier 2, no identity), nearest global skip.
- `repsr-m{M}c{C}-x{s}`: RepSR twins of the ECBSR sizes (two c3_bn_c1 branches, expand 2, clean residual,
  Frozen BN at 90% of training as in the unofficial release); they deploy to the same network as ECBSR.
- `rlfn-x{s}`, `rlfn-s-x{s}`: RLFN (F=52) and RLFN-S (F=48), 6 RLFBs, long skip, no image skip.
- `bsrn-x{s}`: BSRN, 8 ESDBs, input repeated 4x, concat fusion, BSConv smooth conv, long skip.
- `carn-m-x{s}`: CARN-M (single scale, g=4, shared units), cascades, CARN's grouped upsampler, mean shift.
- `rtsrn-x{s}`: the NTIRE23 RTSR baseline: 64 channels, 5 body convs with ReLU between them, long skip.
"""

from __future__ import annotations

import difflib

from .arch import ArchSpec
from .errors import SrSearchError

ECBSR_SIZES = {"m4c8": (4, 8), "m4c16": (4, 16), "m8c16": (8, 16), "m10c32": (10, 32), "m16c64": (16, 64)}
SCALES = (2, 3, 4)


def _ecbsr(depth: int, channels: int, scale: int) -> ArchSpec:
    return ArchSpec(block="ecb", scale=scale, colors=1, channels=channels, depth=depth, activation="prelu",
                    global_skip="nearest", width_mult=2.0, with_idt=False)


def _repsr(depth: int, channels: int, scale: int) -> ArchSpec:
    return ArchSpec(block="rep", scale=scale, colors=1, channels=channels, depth=depth, activation="prelu",
                    global_skip="nearest", width_mult=2.0, branches=2, residual="clean",
                    branch_form="c3_bn_c1", bn=True, frozen_bn=0.9)


def _rlfn(channels: int, scale: int) -> ArchSpec:
    return ArchSpec(block="rlfb", scale=scale, colors=3, channels=channels, depth=6, activation="lrelu",
                    global_skip="none", esa_channels=16, long_skip=True, smooth_conv=True)


def _bsrn(scale: int) -> ArchSpec:
    return ArchSpec(block="esdb", scale=scale, colors=3, channels=64, depth=8, activation="gelu",
                    global_skip="none", esa_channels=16, cca=True, input_repeat=4, fusion="concat",
                    smooth_conv=True, long_skip=True)


def _carn_m(scale: int) -> ArchSpec:
    return ArchSpec(block="eresidual", scale=scale, colors=3, channels=64, depth=3, activation="relu",
                    global_skip="none", groups=4, shared=True, fusion="cascade", upsampler="progressive",
                    mean_shift=True)


def _rtsrn(scale: int) -> ArchSpec:
    # head conv, then conv+ReLU x4 and a last conv without ReLU (the smooth conv), plus the head features
    return ArchSpec(block="plain", scale=scale, colors=3, channels=64, depth=4, activation="relu",
                    global_skip="none", long_skip=True, smooth_conv=True)


def _all_presets() -> dict[str, ArchSpec]:
    presets: dict[str, ArchSpec] = {}
    for s in SCALES:
        for size, (m, c) in ECBSR_SIZES.items():
            presets[f"ecbsr-{size}-x{s}"] = _ecbsr(m, c, s)
            presets[f"repsr-{size}-x{s}"] = _repsr(m, c, s)
        presets[f"rlfn-x{s}"] = _rlfn(52, s)
        presets[f"rlfn-s-x{s}"] = _rlfn(48, s)
        presets[f"bsrn-x{s}"] = _bsrn(s)
        presets[f"carn-m-x{s}"] = _carn_m(s)
        presets[f"rtsrn-x{s}"] = _rtsrn(s)
    return presets


PRESETS: dict[str, ArchSpec] = _all_presets()

#: Deployed parameter counts of the released code (authors' model classes, `parameters()` deduplicated).
RELEASED_PARAMS: dict[str, int] = {
    "ecbsr-m4c8-x2": 2_748, "ecbsr-m4c8-x4": 3_624,
    "ecbsr-m4c16-x2": 10_100, "ecbsr-m4c16-x4": 11_840,
    "ecbsr-m8c16-x4": 21_184, "ecbsr-m10c32-x4": 97_776,
    "ecbsr-m16c64-x2": 594_884, "ecbsr-m16c64-x4": 601_808,
    "rlfn-x2": 526_856, "rlfn-x3": 533_891, "rlfn-x4": 543_740,
    "rlfn-s-x2": 454_620, "rlfn-s-x3": 461_115, "rlfn-s-x4": 470_208,
    "bsrn-x2": 331_628, "bsrn-x3": 340_283, "bsrn-x4": 352_400,
    "carn-m-x2": 257_051, "carn-m-x3": 303_451, "carn-m-x4": 294_171,
    "rtsrn-x2": 193_356, "rtsrn-x3": 202_011,
}


def preset(name: str) -> ArchSpec:
    """A preset by name; an unknown name lists the closest ones and every preset."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=4, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise SrSearchError(f"unknown preset {name!r}; {hint}presets: {', '.join(PRESETS)}; "
                            f"or pass an ArchSpec as JSON")
    return PRESETS[name]


def resolve(name_or_json: str, scale: int | None = None) -> ArchSpec:
    """A preset name or an ArchSpec JSON object; `scale` overrides the scale (x2/x3 of the same model)."""
    text = name_or_json.strip()
    spec = ArchSpec.from_json(text) if text.startswith("{") else preset(text)
    return spec.replace(scale=scale) if scale is not None and scale != spec.scale else spec
