"""Paper baselines as named `ArchSpec`s, for scales x2, x3 and x4.

Each reproduces the deployed parameter count of the authors' code exactly (deduplicated `parameters()`; counts in
`REFERENCE_PARAMS`, with where each comes from in `REFERENCE_SOURCE`):

- `ecbsr-m{M}c{C}-x{s}`: ECBSR (Y channel, PReLU, depth multiplier 2, no identity), nearest global skip.
- `repsr-m{M}c{C}-x{s}`: RepSR twins of the ECBSR sizes (two c3_bn_c1 branches, expand 2, clean residual,
  Frozen BN at 90% of training as in the unofficial release); they deploy to the same network as ECBSR.
- `rlfn-x{s}`, `rlfn-s-x{s}`: RLFN (F=52) and RLFN-S (F=48), 6 RLFBs, long skip, no image skip.
- `bsrn-x{s}`: BSRN, 8 ESDBs, input repeated 4x, concat fusion, BSConv smooth conv, long skip.
- `carn-m-x{s}`: the single-scale CARN-M architecture (g=4, shared units), cascades, CARN's grouped upsampler,
  mean shift. The released CARN-M checkpoint is the multi-scale model (x2/x3/x4 tails in one network, 414,811
  parameters); sr-search builds one scale per network.
- `pcarn-m-x{s}`: PCARN-M, the photo-realistic CARN-M: cascade 1x1 convs without ReLU and a global skip from the
  entry conv to the upsampler; the same parameter shapes as CARN-M.
- `rtsrn-x{s}`: the NTIRE23 RTSR baseline: 64 channels, 5 body convs with ReLU between them, long skip.
- `span-ch{C}-x{s}`: SPAN (NTIRE 2024 efficient-SR winner): C=48 (the paper's SPAN) and C=28 (the NTIRE 2024 entry,
  the NTIRE 2026 reference model), 6 SPABs, SiLU.
"""

from __future__ import annotations

import difflib

from ..errors import SrSearchError
from .spec import ArchSpec

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


def _pcarn_m(scale: int) -> ArchSpec:
    return _carn_m(scale).replace(cascade_act=False, long_skip=True)


def _span(channels: int, scale: int) -> ArchSpec:
    return ArchSpec(block="span", scale=scale, colors=3, channels=channels, depth=6, activation="silu",
                    global_skip="none", gain=2)


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
        presets[f"pcarn-m-x{s}"] = _pcarn_m(s)
        presets[f"rtsrn-x{s}"] = _rtsrn(s)
        presets[f"span-ch48-x{s}"] = _span(48, s)
        presets[f"span-ch28-x{s}"] = _span(28, s)
    return presets


PRESETS: dict[str, ArchSpec] = _all_presets()

#: Deployed parameter counts of the authors' code (model classes, `parameters()` deduplicated).
REFERENCE_PARAMS: dict[str, int] = {
    "ecbsr-m4c8-x2": 2_748, "ecbsr-m4c8-x4": 3_624,
    "ecbsr-m4c16-x2": 10_100, "ecbsr-m4c16-x4": 11_840,
    "ecbsr-m8c16-x4": 21_184, "ecbsr-m10c32-x4": 97_776,
    "ecbsr-m16c64-x2": 594_884, "ecbsr-m16c64-x4": 601_808,
    "rlfn-x2": 526_856, "rlfn-x3": 533_891, "rlfn-x4": 543_740,
    "rlfn-s-x2": 454_620, "rlfn-s-x3": 461_115, "rlfn-s-x4": 470_208,
    "bsrn-x2": 331_628, "bsrn-x3": 340_283, "bsrn-x4": 352_400,
    "carn-m-x2": 257_051, "carn-m-x3": 303_451, "carn-m-x4": 294_171,
    "pcarn-m-x2": 257_051, "pcarn-m-x3": 303_451, "pcarn-m-x4": 294_171,
    "rtsrn-x2": 193_356, "rtsrn-x3": 202_011,
    "span-ch48-x2": 410_700, "span-ch48-x4": 426_288, "span-ch28-x2": 141_580, "span-ch28-x4": 150_688,
}
#: What each reference count is: the released model's, or the architecture's where the release differs.
REFERENCE_SOURCE: dict[str, str] = {
    **{name: "released" for name in REFERENCE_PARAMS},
    **{f"{p}carn-m-x{s}": "single-scale architecture; the released CARN-M checkpoint is multi-scale: 414,811"
       for p in ("", "p") for s in SCALES},
    **{name: "official architecture (hongyuanyu/SPAN), deployed" for name in REFERENCE_PARAMS
       if name.startswith("span")},
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
