"""`sr-search inspect` as a library call: parameter counts of both forms, MACs at the protocol's input size, the
deploy error (measured, not assumed) and the deploy key."""

from __future__ import annotations

import pytest

from sr_search import PRESETS, SrSearchError
from sr_search.model.blocks import fuse
from sr_search.run.inspect import inspect_rows, inspect_table


def test_counts_macs_and_shared_deploy_keys():
    df = inspect_rows({n: PRESETS[n] for n in ("ecbsr-m4c16-x4", "repsr-m4c16-x4", "span-ch28-x4")}, "cpu")
    rows = df.set_index("model").to_dict("index")
    ecb, rep, span = rows["ecbsr-m4c16-x4"], rows["repsr-m4c16-x4"], rows["span-ch28-x4"]
    assert (ecb["params_train"], ecb["params_deploy"]) == (49_712, 11_840)
    assert (rep["params_train"], rep["params_deploy"]) == (44_416, 11_840)
    assert (span["params_train"], span["params_deploy"]) == (634_048, 150_688)  # official SPAN C=28 (its released code)
    assert ecb["GMACs"] == rep["GMACs"] == 0.244  # same deployed network, 108x192 LR under the cpu protocol
    assert ecb["at"] == "108x192 -> 432x768" and span["block"] == "span" and span["scale"] == 4
    assert ecb["deploy_key"] == rep["deploy_key"] != span["deploy_key"]
    assert all(0 <= float(r["deploy_err"]) <= 1e-4 for r in rows.values())


def test_the_table_prints_every_row_with_grouped_counts():
    text = inspect_table({"mine": PRESETS["ecbsr-m4c16-x2"]}, "ntire23-x2")
    header, line = text.splitlines()
    assert header.split() == ["model", "block", "scale", "params_train", "params_deploy", "GMACs", "at",
                              "deploy_err", "deploy_key"]
    assert line.split()[:6] == ["mine", "ecb", "2", "42,224", "10,100", "20.769"]
    assert "1920x1080 -> 3840x2160" in line  # the NTIRE23 protocol's (portrait) input, at this scale


def test_a_fusion_that_changes_the_function_shows_in_the_deploy_error(monkeypatch):
    """The deploy error is measured: a fusion that loses the identity path (a broken `identity_kernel`) shows."""
    def no_identity(like, channels, k=3):
        return like.new_zeros(channels, channels, k, k), like.new_zeros(channels)

    monkeypatch.setattr(fuse, "identity_kernel", no_identity)
    spec = PRESETS["repsr-m4c16-x4"]
    assert spec.residual == "clean"
    (err,) = inspect_rows({"broken": spec}, "cpu")["deploy_err"]
    assert float(err) > 1e-2


def test_an_unknown_protocol_is_named():
    with pytest.raises(SrSearchError, match="no-such-protocol"):
        inspect_rows({"e": PRESETS["ecbsr-m4c16-x4"]}, "no-such-protocol")
