"""`TimingCache`: timings of deployed networks, persisted as parquet in the study directory (DESIGN 4.5, 6).

Weights do not change the timing, so a timing is keyed by what the deployed network *is* (`ArchSpec.deploy_key()`),
the protocol and the device name: a RepSR and an ECBSR candidate of the same size are timed once. An entry also
stores the protocol's fingerprint, so redefining a custom protocol under the same name never serves stale numbers.

Several trial processes may share one study directory: every `put` takes an exclusive `flock`, re-reads the file,
merges, writes a temporary file and `os.replace`s it, so readers never see a half-written file and concurrent
writers do not lose each other's entries.
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ...errors import SrSearchError
from ...study.protocols import TimingProtocol
from .result import Timing

_SHAPE = pa.list_(pa.int64())
SCHEMA = pa.schema([
    ("deploy_key", pa.string()), ("protocol", pa.string()), ("device_name", pa.string()),
    ("protocol_key", pa.string()), ("precision", pa.string()), ("batch", pa.int64()),
    ("input_shape", _SHAPE), ("output_shape", _SHAPE), ("exclusive", pa.bool_()), ("reps", pa.int64()),
    ("latency_ms", pa.float64()), ("latency_ms_p90", pa.float64()), ("latency_ms_mean", pa.float64()),
    ("throughput", pa.float64()), ("mpix_per_s", pa.float64()), ("peak_mem_mb", pa.float64()),
    ("cpu_ms", pa.float64()), ("timed_at", pa.string()),
])

Key = tuple[str, str, str]


class TimingCache:
    """Timings by (deploy_key, protocol name, device name). The file need not exist yet."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._rows: dict[Key, dict[str, Any]] = {}
        self._stamp: tuple[int, int] | None = None

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
        return Timing(**{k: row[k] for k in Timing.model_fields})

    def put(self, deploy_key: str, protocol: TimingProtocol, timing: Timing, *, replace: bool = False) -> None:
        """Store `timing`. An exclusive entry is not overwritten by a non-exclusive one unless `replace`."""
        if timing.protocol != protocol.name:
            raise SrSearchError(f"timing was measured under {timing.protocol!r}, not protocol {protocol.name!r}")
        key = (deploy_key, protocol.name, timing.device_name)
        row = {**timing.model_dump(), "deploy_key": deploy_key, "protocol_key": protocol.fingerprint(),
               "timed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        with self._locked():
            self._stamp = None
            self._refresh()
            old = self._rows.get(key)
            keep_old = (old is not None and not replace and old["exclusive"] and not timing.exclusive
                        and old["protocol_key"] == row["protocol_key"])
            if keep_old:
                return
            self._rows[key] = row
            self._write()

    # --- file handling --------------------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Re-read the file when it changed on disk (another process may have added entries)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._rows, self._stamp = {}, None
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            rows = pq.read_table(self.path).to_pylist()
        except (pa.ArrowException, OSError) as exc:
            raise SrSearchError(f"timing cache {self.path} is not a readable parquet file ({exc}); delete it and "
                                f"the timings will be measured again") from None
        missing = [name for name in SCHEMA.names if rows and name not in rows[0]]
        if missing:
            raise SrSearchError(f"timing cache {self.path} lacks columns {missing}; delete it to re-time")
        self._rows = {(r["deploy_key"], r["protocol"], r["device_name"]): r for r in rows}
        self._stamp = stamp

    def _write(self) -> None:
        table = pa.Table.from_pylist(
            [{name: row.get(name) for name in SCHEMA.names} for row in self._rows.values()], schema=SCHEMA
        )
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        self._stamp = None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # not POSIX: atomic replace still protects readers
            yield
            return
        with open(self.path.with_name(self.path.name + ".lock"), "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
