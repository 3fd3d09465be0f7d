"""A small search space and a study-file writer shared by the tests of study files (test_config, test_hostile_input)."""

from __future__ import annotations

from pathlib import Path

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
