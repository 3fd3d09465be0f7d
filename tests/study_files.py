"""What tests share to make study files and rows (tests/conftest.py exposes them as fixtures too):

- `SPACE` and `write`: a small search space and a study-file writer (test_config, test_hostile_input);
- `write_study`: a runnable study (tiny budget, CPU timing) for the tests that launch the real runner;
- `trial_row`: a trial's row as the runner writes it, for tests of the study folder;
- `alias_bomb`: YAML whose aliases expand to 387 million values.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

SPACE = """\
params:
  block: [rep, plain]
  channels: [8, 16]
  depth: [1, 2]
"""


def write(folder: Path, text: str, name: str = "study.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


#: the runner tests' space: two families, one size (a few seconds a trial on a CPU)
RUNNER_SPACE = """\
params:
  block: [plain, rep]
  scale: 2
  colors: 3
  channels: 8
  depth: 1
"""
TIMING = "timing: {device: cpu, precision: fp32, batch: 1, lr_size: [24, 24], warmup: 1, reps: 3, threads: 1}\n"
TRAIN = "train: {iterations: 12, batch_size: 4, lr_patch: 16, val_every: 6}\ndata: {val_max_size: 48}\n"


def write_study(folder: Path, name: str, body: str) -> Path:
    """`folder/<name>.yaml` (and `folder/space.yaml`): a study the real runner finishes in seconds, plus `body`."""
    (folder / "space.yaml").write_text(RUNNER_SPACE)
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\nspace: space.yaml\n" + TIMING + TRAIN + textwrap.dedent(body))
    return path


def trial_row(trial_id: str, status: str = "complete", *, spec: Any = None, **values: Any) -> dict[str, Any]:
    """A trial's row as the runner writes it: study `s`, the spec's columns (default: the rtsrn-x2 preset), seed = the
    trial number (a search's seeds), `status`, and `values` (which win)."""
    from sr_search import PRESETS
    from sr_search.results.store import spec_columns

    return {"study": "s", "trial_id": trial_id, "status": status, **spec_columns(spec or PRESETS["rtsrn-x2"]),
            "seed": int(trial_id), **values}


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """Nested anchors: each level lists the previous one `width` times (9 x 9: 387 million values expanded)."""
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"
