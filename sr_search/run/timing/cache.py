"""`TimingCache`: timings of deployed networks, persisted as parquet in the study directory (docs/architecture.md,
"Timing").

Weights do not change the timing, so a timing is keyed by what the deployed network *is* (`ArchSpec.deploy_key()`),
the protocol and the device name: a RepSR and an ECBSR candidate of the same size are timed once. An entry also
stores the protocol's fingerprint, so redefining a custom protocol under the same name never serves stale numbers.

Only the driver writes the file (docs/architecture.md, "Decisions the code builds on"). A trial gets the entries of its
own deployed network with its config (`entries`, then `TimingCache.in_memory`), so a worker reads no file of the study.
A `put` still re-reads the file, merges, writes a temporary file and `os.replace`s it, so readers never see a
half-written file.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ...errors import SrSearchError
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


class TimingCache:
    """Timings by (deploy_key, protocol name, device name). The file need not exist yet."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self._rows: dict[Key, dict[str, Any]] = {}
        self._stamp: tuple[int, int] | None = None

    @classmethod
    def in_memory(cls, entries: list[dict[str, Any]] = ()) -> TimingCache:
        """A cache held in memory only (a trial's view: the entries the driver sent with its config)."""
        cache = cls(None)
        cache._rows = {(r["deploy_key"], r["protocol"], r["device_name"]): dict(r) for r in entries}
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
        key = (deploy_key, protocol.name, timing.device_name)
        row = {**timing.model_dump(), "deploy_key": deploy_key, "protocol_key": protocol.fingerprint(),
               "timed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
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
        if self.path is None:
            return
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
        missing = [name for name in SCHEMA.names if rows and name not in rows[0] and name not in _OPTIONAL]
        if missing:
            raise SrSearchError(f"timing cache {self.path} lacks columns {missing}; delete it to re-time")
        self._rows = {(r["deploy_key"], r["protocol"], r["device_name"]): r for r in rows}
        self._stamp = stamp

    def _write(self) -> None:
        if self.path is None:
            return
        table = pa.Table.from_pylist(
            [{name: row.get(name) for name in SCHEMA.names} for row in self._rows.values()], schema=SCHEMA
        )
        atomic_write(self.path, lambda tmp: pq.write_table(table, tmp))
        self._stamp = None
