"""report.html as a reader sees it: opened in headless Chromium at 1280 px, every figure loads, nothing overflows
the page sideways and every table fits its column. Skipped when no Chromium is installed (README, "Report render
check": `apt-get install -y chromium` on Debian/Ubuntu); CHROMIUM=/path/to/chrome picks another binary."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sr_search.results.report import write_report

WIDTH = 1280
_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
# runs after the page (and its data: images) loaded; writes what it found into the DOM that --dump-dom prints
_PROBE = """<script>window.addEventListener("load", () => {
  const body = document.body.getBoundingClientRect();
  const tables = [...document.querySelectorAll("table")].map((t) => {
    const box = t.getBoundingClientRect(), holder = t.parentElement;
    return {head: t.querySelector("th") ? t.querySelector("th").textContent : "", right: box.right,
            inside: holder.scrollWidth <= holder.clientWidth + 1};
  });
  const out = {scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth, bodyRight: body.right,
               images: [...document.images].map((i) => ({alt: i.alt, complete: i.complete, width: i.naturalWidth,
                                                          shown: i.getBoundingClientRect().right})),
               tables: tables};
  const probe = document.createElement("pre");
  probe.id = "render-probe";
  probe.textContent = JSON.stringify(out);
  document.body.appendChild(probe);
});</script>"""


def chromium() -> str | None:
    given = os.environ.get("CHROMIUM")
    if given:
        return given
    return next((path for path in map(shutil.which, _NAMES) if path), None)


def rendered(page: Path, tmp_path: Path) -> dict:
    """The probe's findings for `page` opened in headless Chromium at WIDTH px."""
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    binary = chromium()
    assert binary is not None
    result = subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={WIDTH},900",
         "--hide-scrollbars", "--virtual-time-budget=5000", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
         probed.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'<pre id="render-probe">(.*?)</pre>', result.stdout, re.S)
    assert found, f"Chromium printed no probe (exit {result.returncode}): {result.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                      .replace("&gt;", ">"))


def small_search() -> pd.DataFrame:
    """Twelve trials of a search: a front, below-bicubic and collapsed trials, a pruned one, failures with long
    messages (a traceback, a path without spaces), long deploy keys and family fields in the front table."""
    rng = np.random.default_rng(3)
    n = 12
    channels = rng.choice([8, 16, 24, 32, 48, 64], size=n)
    depth = rng.integers(1, 9, size=n)
    cost = channels.astype(float) ** 2 * depth
    psnr = 30.4 + 0.35 * np.log10(cost) + rng.normal(0, 0.1, size=n)
    df = pd.DataFrame({
        "study": "render", "trial_id": [f"{i:04d}" for i in range(n)], "status": "complete", "error": None,
        "block": rng.choice(["rep", "ecb", "rlfb", "plain", "eresidual"], size=n), "channels": channels,
        "depth": depth, "scale": 2, "psnr_y": psnr, "ssim_y": 0.9 + 0.001 * np.log10(cost),
        "bicubic_psnr_y": 31.178, "start_psnr_y": 29.5, "throughput": 4e5 / cost, "latency_ms": cost / 4e2,
        "params_deploy": (channels**2 * 9 * depth).astype(np.int64),
        "macs_deploy": (channels**2 * 9 * depth * 108 * 192).astype(np.int64),
        "deploy_key": [f"plain|c{c}|d{d}|" + "x" * 90 for c, d in zip(channels, depth, strict=True)],
        "arch_json": [json.dumps({"block": "rep", "branches": int(d % 4) + 1, "branch_form": "c3_bn_c1_bn",
                                  "width_mult": 2.0 + d % 2}) for d in depth],
        "timing_exclusive": True, "timing_device": "cpu: AMD EPYC 9654 96-Core Processor (1 thread)",
        "timing_protocol": "cpu", "timing_precision": "fp32", "baseline": None, "factor": None, "level": None,
        "seed": 0, "versions": json.dumps({"torch": "2.13.0", "sr_search": "0.3.0", "numpy": "2.2", "pandas": "2.3"}),
    })
    df["psnr_gain"] = df["psnr_y"] - df["bicubic_psnr_y"]
    df.loc[[1, 2], "psnr_y"] = [30.9, 30.7]  # under-trained
    df.loc[3, ["psnr_y", "start_psnr_y"]] = [12.0, 29.5]  # a collapse
    df["psnr_gain"] = df["psnr_y"] - df["bicubic_psnr_y"]
    df["below_bicubic"] = df["psnr_gain"] < 0
    df["collapsed"] = df["trial_id"] == "0003"
    df.loc[4, ["status", "psnr_y"]] = ["pruned", np.nan]
    df["rung_psnr_y"], df["rung_iterations"] = np.nan, np.nan
    df.loc[4, ["rung_psnr_y", "rung_iterations"]] = [31.5, 100]
    df.loc[5, ["status", "psnr_y"]] = ["failed", np.nan]
    df.loc[5, "error"] = ("Traceback (most recent call last):\n  File \"/very/long/path/" + "deep/" * 30
                          + "module.py\", line 12, in forward\nRuntimeError: " + "shape mismatch " * 20)
    df.loc[6, ["status", "psnr_y"]] = ["infeasible", np.nan]
    df.loc[6, "error"] = "cannot run under timing protocol 'cpu': " + "/".join(["segment"] * 40)
    return df


@pytest.mark.skipif(chromium() is None, reason="no Chromium installed (README: apt-get install -y chromium)")
def test_report_renders_in_chromium_figures_load_and_nothing_overflows(tmp_path: Path) -> None:
    study = tmp_path / "render"
    study.mkdir()
    (study / "study.yaml").write_text("name: render\nspace: ../searchspace/efficient_sr.yaml\nsampler: random\n"
                                      "n_trials: 12\ntrain: {iterations: 300, lr: 0.005, loss: l2}\n",
                                      encoding="utf-8")
    page = write_report(study, small_search())
    found = rendered(page, tmp_path)
    figures = found["images"]
    assert len(figures) == 2, figures  # the front and the hypervolume history
    for image in figures:
        assert image["complete"] and image["width"] > 0, f"figure {image['alt']!r} did not load: {image}"
        assert image["shown"] <= found["bodyRight"] + 1, f"figure {image['alt']!r} wider than the page: {image}"
    assert found["scrollWidth"] <= found["innerWidth"], (
        f"the page scrolls sideways at {WIDTH} px: {found['scrollWidth']} px wide")
    assert found["tables"], "no table rendered"
    for table in found["tables"]:
        assert table["inside"] and table["right"] <= found["bodyRight"] + 1, (
            f"table starting with {table['head']!r} does not fit the page at {WIDTH} px: {table}")
