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


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """Nested anchors: each level lists the previous one `width` times (9 x 9: 387 million values expanded)."""
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"
