"""YAML files with line numbers, and the problems found in them.

Study and search-space files are read through `read_yaml`, which keeps the line of every key path so each
`Problem` can be reported as `file:line: key: message`; checks collect problems rather than stop at the first,
and `raise_problems` reports them all at once.

A file is measured before anything is built from it (`_measure`, one pass over the parser's events): its size,
how deep it nests and how many values its anchors and aliases expand to are bounded, so a hostile or broken file
(an "alias bomb", a list nested 20,000 deep) is a problem reported in milliseconds, not gigabytes of memory or a
RecursionError. Study and space files are a few dozen lines; the limits are far above any real one.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from ..errors import SrSearchError

KeyPath = tuple[Any, ...]

#: bounds on what a study or space file may be (real ones are a few KB, nest < 10 deep, expand to < 1,000 values)
MAX_BYTES = 1_000_000
MAX_DEPTH = 50
MAX_VALUES = 100_000


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file: where (file, key path, line) and what to do about it."""

    file: str
    key: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


def key_text(path: Iterable[Any]) -> str:
    """('factors', 'width_mult', 1) -> 'factors.width_mult[1]'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class Doc:
    """A parsed YAML file plus the line of every key path, so problems can point at the line."""

    path: Path
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def line(self, path: KeyPath) -> int | None:
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)

    def problem(self, path: KeyPath, message: str) -> None:
        self.problems.append(Problem(str(self.path), key_text(path), self.line(path), message))


_EMPTY_HINTS = {
    "study": "a study needs at least `name` and `space` (format: sr_search/study/config.py)",
    "search space": "a search space needs `params` (format: sr_search/study/space.py)",
    "YAML": "a study needs at least `name` and `space` (format: sr_search/study/config.py); a search space needs "
            "`params` (format: sr_search/study/space.py)",
}


def read_yaml(path: str | Path, what: str) -> Doc:
    """Parse `path`; a missing, unreadable, empty or non-mapping file becomes a problem in `doc.problems`."""
    path = Path(path)
    doc = Doc(path, None)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        doc.problem((), f"{what} file not found")
        return doc
    except (OSError, UnicodeDecodeError) as exc:
        doc.problem((), f"cannot read {what} file: {exc}")
        return doc
    if len(text) > MAX_BYTES:
        doc.problem((), f"{what} file is {len(text):,} characters, more than the {MAX_BYTES:,} a study or space "
                        f"file may have")
        return doc
    loader = yaml.SafeLoader(text)
    try:
        too_big = _measure(text)
        if too_big is not None:
            line, message = too_big
            doc.problems.append(Problem(str(path), "", line, message))
            return doc
        node = loader.get_single_node()
        if node is not None:
            doc.data = loader.construct_document(node)
            _record_lines(node, (), doc)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        doc.problems.append(Problem(str(path), "", line, f"not valid YAML: {exc}".replace("\n", " ")))
        return doc
    finally:
        loader.dispose()
    if doc.data is None:
        doc.problem((), f"{what} file is empty; {_EMPTY_HINTS.get(what, _EMPTY_HINTS['YAML'])}")
    elif not isinstance(doc.data, dict):
        doc.problem((), f"a {what} file must be a mapping of key: value, got {type(doc.data).__name__}")
    return doc


def load_bounded(text: str, where: object) -> Any:
    """`yaml.safe_load` for YAML this tool wrote (a study folder's frozen files), with the same bounds as `read_yaml`:
    a file edited into an alias bomb is an error naming it, not a machine out of memory."""
    too_big = _measure(text) if len(text) <= MAX_BYTES else (1, f"more than {MAX_BYTES:,} characters")
    if too_big is not None:
        raise SrSearchError(f"{where}:{too_big[0]}: {too_big[1]}")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SrSearchError(f"{where}: not valid YAML: {exc}".replace("\n", " ")) from None


def _measure(text: str) -> tuple[int, str] | None:
    """(line, why) when the YAML in `text` nests deeper than MAX_DEPTH or its values, with every alias expanded,
    outnumber MAX_VALUES; None when it is within bounds. Walks the parser's events (no recursion, nothing built),
    so it is fast whatever the file holds; syntax errors are left to the real parse."""
    sizes: dict[str, int] = {}  # anchor -> how many values its node expands to
    stack: list[list[Any]] = []  # open collections: [anchor, values so far]
    total = 0
    loader = yaml.SafeLoader(text)
    try:
        while True:
            event = loader.get_event()
            if event is None or isinstance(event, yaml.StreamEndEvent):
                return None
            line = event.start_mark.line + 1
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                stack.append([event.anchor, 1])
                if len(stack) > MAX_DEPTH:
                    return line, (f"nested more than {MAX_DEPTH} levels deep; a study or space file needs a few "
                                  f"(is a bracket or an indentation wrong?)")
                continue
            if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                anchor, count = stack.pop()
            elif isinstance(event, yaml.ScalarEvent):
                anchor, count = event.anchor, 1
            elif isinstance(event, yaml.AliasEvent):
                anchor, count = None, sizes.get(event.anchor, 1)
            else:
                continue
            if anchor is not None:
                sizes[anchor] = count
            if stack:
                stack[-1][1] += count
            else:
                total += count
            if total + sum(c for _, c in stack) > MAX_VALUES:
                return line, (f"its anchors and aliases (&name, *name) expand to more than {MAX_VALUES:,} values; "
                              f"write the values out, or alias fewer nested anchors")
    except yaml.YAMLError:
        return None  # the parse that follows reports it with its line
    finally:
        loader.dispose()


def _record_lines(node: yaml.Node, path: KeyPath, doc: Doc) -> None:
    doc.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            doc.lines[path + (key,)] = key_node.start_mark.line + 1
            if key in seen:  # PyYAML keeps the last value without a word
                doc.problem(path + (key,), "key written twice (the second would silently win); keep one")
            seen.add(key)
            _record_lines(value_node, path + (key,), doc)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _record_lines(item, path + (i,), doc)


def did_you_mean(word: Any, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def sort_problems(problems: list[Problem]) -> list[Problem]:
    """Files in the order they were met, lines in order within each file."""
    order = {f: i for i, f in reversed(list(enumerate(p.file for p in problems)))}
    return sorted(problems, key=lambda p: (order[p.file], p.line or 0))


def raise_problems(problems: list[Problem]) -> None:
    """Raise one `SrSearchError` listing every problem (nothing when the list is empty)."""
    if problems:
        files = sorted({p.file for p in problems})
        head = f"{len(problems)} problem{'s' if len(problems) > 1 else ''} in {', '.join(files)}:"
        raise SrSearchError("\n".join([head, *(f"  {p}" for p in sort_problems(problems))]))


def is_number(value: Any) -> bool:
    """A finite int or float read from YAML (YAML's true/false are bools, which Python counts as ints)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
