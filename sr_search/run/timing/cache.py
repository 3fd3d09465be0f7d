"""`TimingCache`: timings of deployed networks, persisted as parquet in the study directory (docs/architecture.md,
"Timing").

Weights do not change the timing, so a timing is keyed by what the deployed network *is* (`ArchSpec.deploy_key()`),
the protocol and the device name: a RepSR and an ECBSR candidate of the same size are timed once. An entry also
stores the protocol's fingerprint, so redefining a custom protocol under the same name never serves stale numbers.

Only the driver writes the file (docs/architecture.md, "Decisions the code builds on"). A trial gets the entries of its
own deployed network with its config (`entries`, then `TimingCache.in_memory`), so a worker reads no file of the study.

A `put` costs O(1) however large the cache: it appends one JSON line to a journal next to the parquet file
(`timing_cache.parquet.journal`, flushed to disk), and the journal is folded into the parquet file (temporary file and
`os.replace`, so readers never see half a file; then the journal is removed) once it holds an eighth of the entries,
so rewriting stays O(1) per entry on average; a small cache (up to `FOLD_ALWAYS` entries) is folded on every put, and
the driver folds at the end of a launch (`flush`), so the parquet file alone is the whole cache then. Read through this
class, the parquet file and the journal are one cache at any moment; a kill mid-append leaves a torn last line, which
is skipped (that timing is measured again), and a kill between folding and removing the journal replays entries that
the parquet file already holds (the same values).
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ...errors import SrSearchError, StudyWriteError
from ...results.study_dir import atomic_write
from ...study.protocols import TimingProtocol
from .result import Timing

_SHAPE = pa.list_(pa.int64())
SCHEMA = pa.schema([
    ("deploy_key", pa.string()), ("protocol", pa.string()), ("device_name", pa.string()),
    ("protocol_key", pa.string()), ("precision", pa.string()), ("batch", pa.int64()),
    ("input_shape", _SHAPE), ("output_shape", _SHAPE), ("exclusive", pa.bool_()), ("reps", pa.int64()),
    ("latency_ms", pa.float64()), ("latency_ms_p90", pa.float64()), ("latency_ms_mean", pa.float64()),
    ("throughput", pa.float64()), ("mpix_per_s", pa.float64()), ("peak_mem_mb", pa.float64()),
    ("cpu_ms", pa.float64()), ("node", pa.string()), ("timed_at", pa.string()),
    ("runtime", pa.string()), ("engine_build_s", pa.float64()), ("engine_versions", pa.string()),
    ("engine_max_abs_err", pa.float64()),
])
#: columns a cache written by an older version may lack (read as empty; a missing runtime is torch's)
_OPTIONAL = {"node", "runtime", "engine_build_s", "engine_versions", "engine_max_abs_err"}

Key = tuple[str, str, str]
#: a cache up to this size is rewritten on every put (cheap), so its parquet file is always complete
FOLD_ALWAYS = 128


def _key(row: dict[str, Any]) -> Key:
    """What a timing is stored under (one place: a key that grows a field grows it here)."""
    return (row["deploy_key"], row["protocol"], row["device_name"])


class TimingCache:
    """Timings by (deploy_key, protocol name, device name). The file need not exist yet."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self._rows: dict[Key, dict[str, Any]] = {}
        self._stamp: tuple[int, int, int] | None = None  # the parquet file as last read
        self._journal_stamp: tuple[int, int] | None = None  # (inode, bytes read) of the journal
        self._journaled = 0  # entries in the journal, not folded yet

    @classmethod
    def in_memory(cls, entries: list[dict[str, Any]] = ()) -> TimingCache:
        """A cache held in memory only (a trial's view: the entries the driver sent with its config)."""
        cache = cls(None)
        cache._rows = {_key(r): dict(r) for r in entries}
        return cache

    def entries(self, deploy_key: str, protocol: TimingProtocol) -> list[dict[str, Any]]:
        """Every stored timing of one deployed network under `protocol` (any device), as plain data to ship."""
        self._refresh()
        return [dict(r) for (key, name, _), r in self._rows.items()
                if key == deploy_key and name == protocol.name and r["protocol_key"] == protocol.fingerprint()]

    def __len__(self) -> int:
        self._refresh()
        return len(self._rows)

    def get(
        self, deploy_key: str, protocol: TimingProtocol, device_name: str, *, require_exclusive: bool = False
    ) -> Timing | None:
        """The cached timing, or None (none stored, the protocol changed since, or a non-exclusive entry when
        `require_exclusive`)."""
        self._refresh()
        row = self._rows.get((deploy_key, protocol.name, device_name))
        if row is None or row["protocol_key"] != protocol.fingerprint():
            return None
        if require_exclusive and not row["exclusive"]:
            return None
        return Timing(**{k: row.get(k) for k in Timing.model_fields if row.get(k) is not None or k != "runtime"})

    def put(self, deploy_key: str, protocol: TimingProtocol, timing: Timing, *, replace: bool = False) -> None:
        """Store `timing`. An exclusive entry is not overwritten by a non-exclusive one unless `replace`."""
        if timing.protocol != protocol.name:
            raise SrSearchError(f"timing was measured under {timing.protocol!r}, not protocol {protocol.name!r}")
        row = {**timing.model_dump(), "deploy_key": deploy_key, "protocol_key": protocol.fingerprint(),
               "timed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        key = _key(row)
        self._refresh()
        old = self._rows.get(key)
        keep_old = (old is not None and not replace and old["exclusive"] and not timing.exclusive
                    and old["protocol_key"] == row["protocol_key"])
        if keep_old:
            return
        self._rows[key] = row
        if self.path is None:
            return
        if len(self._rows) <= FOLD_ALWAYS or (self._journaled + 1) * 8 >= len(self._rows):
            self._write()
        else:
            self._append(row)

    def flush(self) -> None:
        """Fold the journal into the parquet file (the driver, at the end of a launch)."""
        self._refresh()
        if self.path is not None and self._journaled:
            self._write()

    # --- file handling --------------------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Re-read what changed on disk (another instance may have added entries): the parquet file when it was
        replaced, then the journal's lines not read yet."""
        if self.path is None:
            return
        try:
            st = self.path.stat()
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            self._rows = self._read_parquet() if stamp is not None else {}
            self._stamp, self._journal_stamp, self._journaled = stamp, None, 0
        self._read_journal()

    def _read_parquet(self) -> dict[Key, dict[str, Any]]:
        try:
            rows = pq.read_table(self.path).to_pylist()
        except (pa.ArrowException, OSError) as exc:
            raise SrSearchError(f"timing cache {self.path} is not a readable parquet file ({exc}); delete it and "
                                f"the timings will be measured again") from None
        missing = [name for name in SCHEMA.names if rows and name not in rows[0] and name not in _OPTIONAL]
        if missing:
            raise SrSearchError(f"timing cache {self.path} lacks columns {missing}; delete it to re-time")
        return {_key(r): r for r in rows}

    @property
    def journal(self) -> Path:
        return self.path.with_name(self.path.name + ".journal")

    def _read_journal(self) -> None:
        try:
            fh = open(self.journal, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            self._journal_stamp, self._journaled = None, 0
            return
        with fh:
            inode = os.fstat(fh.fileno()).st_ino
            # a journal is only ever replaced by a fold, which replaced the parquet file too (re-read above)
            start = self._journal_stamp[1] if self._journal_stamp and self._journal_stamp[0] == inode else 0
            fh.seek(start)
            data = fh.read()
        end = data.rfind(b"\n") + 1  # a torn last line (a kill mid-append) is left for no one: skipped
        for line in data[:end].split(b"\n"):
            try:
                row = json.loads(line) if line.strip() else None
            except ValueError:
                row = None  # the torn line of an earlier kill, ended by the next append's newline
            if isinstance(row, dict) and {"deploy_key", "protocol", "device_name"} <= set(row):
                self._rows[_key(row)] = row
                self._journaled += 1
        self._journal_stamp = (inode, start + end)

    def _append(self, row: dict[str, Any]) -> None:
        """One entry at the end of the journal, flushed to disk; a newline first, so a line torn by a kill before
        it never runs into this one."""
        line = b"\n" + json.dumps({name: row.get(name) for name in SCHEMA.names}).encode() + b"\n"
        try:
            fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                os.write(fd, line)
                os.fsync(fd)
                st = os.fstat(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StudyWriteError(self.journal, exc) from exc
        self._journaled += 1
        if self._journal_stamp is not None and self._journal_stamp[0] == st.st_ino \
                and self._journal_stamp[1] + len(line) == st.st_size:
            self._journal_stamp = (st.st_ino, st.st_size)  # our own line: nothing to read back
        elif self._journal_stamp is None and st.st_size == len(line):
            self._journal_stamp = (st.st_ino, st.st_size)

    def _write(self) -> None:
        if self.path is None:
            return
        table = pa.Table.from_pylist(
            [{name: row.get(name) for name in SCHEMA.names} for row in self._rows.values()], schema=SCHEMA
        )
        atomic_write(self.path, lambda tmp: pq.write_table(table, tmp))
        try:
            self.journal.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StudyWriteError(self.journal, exc) from exc
        st = self.path.stat()
        self._stamp, self._journal_stamp, self._journaled = (st.st_ino, st.st_mtime_ns, st.st_size), None, 0
