"""The tamper-evident audit log a node keeps of its decisions.

An institution shows this file to its regulator to answer "did our data train model X for
querier Y, and what did we refuse". One JSON object per line, appended and fsynced before the
decision takes effect. Each line carries the hash of the line before it (``prev``) and its own
hash over everything else, so deleting, inserting, reordering or editing a line breaks the
chain and :func:`verify` names the first bad line. The chain proves order and integrity, not
completeness at the tail: whoever can rewrite the file can drop its last lines or rebuild the
chain wholesale, so a regulator should also keep the latest ``hash`` it was shown.

A line, as written (``seq``, ``time``, ``prev`` first, the caller's fields sorted, ``hash``
last, no spaces, UTF-8)::

    {"seq":1,"time":"2025-01-31T12:00:00.123Z","prev":"000…0","decision":"refuse",…,"hash":"…"}

``hash`` is the hex SHA-256 of the canonical JSON (sorted keys, no spaces, UTF-8) of every
other field of the line, ``seq``, ``time`` and ``prev`` included.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from phe_fl.errors import AuditError, StateError

__all__ = ["GENESIS", "AuditLog", "AuditSummary", "verify", "format_summary"]

GENESIS = "0" * 64
"""The ``prev`` of the first line: the hash of nothing."""

RESERVED = ("seq", "time", "prev", "hash")
"""Fields the log sets itself; a caller's entry may not carry them."""

# Not "phe_fl.audit": policy.py logs its decision lines there, and a warning about the file
# must not read as a decision.
log = logging.getLogger("phe_fl.audit_log")

_TAIL_CHUNK = 64 * 1024


def _now() -> str:
    """UTC, ISO-8601, milliseconds, 'Z': sortable as text and unambiguous to a reader."""
    t = datetime.now(timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _canonical(fields: Mapping[str, Any]) -> bytes:
    """The bytes the hash is taken over: independent of key order and of how a line is spaced."""
    return json.dumps(
        fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _digest(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def _render(record: Mapping[str, Any]) -> bytes:
    """The line as written: fixed field order so a person reads seq and time first."""
    head = {k: record[k] for k in ("seq", "time", "prev") if k in record}
    body = {k: record[k] for k in sorted(record) if k not in RESERVED}
    tail = {"hash": record["hash"]} if "hash" in record else {}
    text = json.dumps(
        {**head, **body, **tail}, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8") + b"\n"


def _check_json(value: Any, where: str) -> None:
    """Refuse what JSON cannot carry faithfully, naming where it sits in the entry."""
    if value is None or isinstance(value, (str, bool, int)):
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"{where}: string is not valid UTF-8 (lone surrogate)") from None
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} is not a JSON number")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: key {key!r} is not a string")
            _check_json(item, f"{where}[{key!r}]")
        return
    raise ValueError(
        f"{where}: {type(value).__name__} is not JSON "
        "(use str, int, float, bool, None, or lists and dicts of those)"
    )


def _parse(raw: bytes) -> Any:
    """JSON as the log writes it: UTF-8, no NaN, no duplicate keys (which readers disagree on)."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise ValueError(f"duplicate key {key!r}")
            out[key] = value
        return out

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    text = raw.decode("utf-8")
    return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants)


def _line_problem(record: Any) -> str | None:
    """What makes a parsed line unusable as a chain link, or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    seq = record.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        return "missing or malformed field 'seq'"
    for name in ("time", "prev", "hash"):
        if not isinstance(record.get(name), str):
            return f"missing or malformed field {name!r}"
    return None


class AuditLog:
    """Appends decisions to one file; safe from many threads; survives a crash mid-write.

    One process at a time: the file is locked (``flock``) while open, so two node processes
    pointed at the same state directory cannot fork the chain.
    """

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        self._broken: str | None = None
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
        try:
            fd = os.open(self._path, flags | os.O_CREAT | os.O_EXCL, 0o600)
            os.fchmod(fd, 0o600)  # the umask may have taken bits away; decisions are private
        except FileExistsError:
            fd = os.open(self._path, flags)
        self._fd: int | None = fd
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StateError(f"{self._path}: audit log is open in another process") from None
            self._size, self._seq, self._prev = self._recover()
        except BaseException:
            os.close(fd)
            raise

    @property
    def path(self) -> Path:
        return self._path

    def _recover(self) -> tuple[int, int, str]:
        """(size, last seq, last hash) of the file, cutting a line a crash left half-written."""
        assert self._fd is not None
        fd = self._fd
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, 0, GENESIS
        end = size  # the complete lines are [0, end)
        if os.pread(fd, 1, size - 1) != b"\n":
            end = self._last_newline(size) + 1
            log.warning(
                "%s: cutting an incomplete last line (%d bytes, a crash mid-write?)",
                self._path,
                size - end,
            )
            os.ftruncate(fd, end)
            os.fsync(fd)
            if end == 0:
                return 0, 0, GENESIS
        start = self._last_newline(end - 1) + 1
        raw = os.pread(fd, end - start, start)
        try:
            record = _parse(raw[:-1])
        except ValueError:
            raise AuditError(self._line_number(start), "not JSON; refusing to continue") from None
        problem = _line_problem(record)
        if problem is None and _digest(record) != record["hash"]:
            problem = "edited (hash mismatch)"
        if problem is not None:
            raise AuditError(self._line_number(start), f"{problem}; refusing to continue")
        return end, int(record["seq"]), str(record["hash"])

    def _last_newline(self, end: int) -> int:
        """Offset of the last b'\\n' before ``end``, or -1: reads backwards, not the whole file."""
        assert self._fd is not None
        pos = end
        while pos > 0:
            start = max(0, pos - _TAIL_CHUNK)
            found = os.pread(self._fd, pos - start, start).rfind(b"\n")
            if found >= 0:
                return start + found
            pos = start
        return -1

    def _line_number(self, offset: int) -> int:
        """1-based number of the line starting at ``offset`` (only on the error path)."""
        assert self._fd is not None
        newlines, pos = 0, 0
        while pos < offset:
            chunk = os.pread(self._fd, min(_TAIL_CHUNK, offset - pos), pos)
            newlines += chunk.count(b"\n")
            pos += len(chunk)
        return newlines + 1

    def append(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        """Write one decision durably (written and fsynced) and return the full record."""
        fields = dict(entry)
        reserved = sorted(set(fields) & set(RESERVED))
        if reserved:
            raise ValueError(f"audit entry may not set {', '.join(reserved)}: the log sets them")
        _check_json(fields, "audit entry")
        with self._lock:
            if self._fd is None:
                raise ValueError(f"{self._path}: audit log is closed")
            if self._broken is not None:
                raise OSError(f"{self._path}: {self._broken}; reopen the audit log")
            record: dict[str, Any] = {
                "seq": self._seq + 1,
                "time": _now(),
                "prev": self._prev,
                **fields,
            }
            record["hash"] = _digest(record)
            line = _render(record)
            self._write(line)
            self._size += len(line)
            self._seq = record["seq"]
            self._prev = record["hash"]
            return record

    def _write(self, line: bytes) -> None:
        """One os.write, then fsync; on failure, cut what was written so the chain stays whole."""
        assert self._fd is not None
        try:
            written = os.write(self._fd, line)
            if written != len(line):
                raise OSError(f"short write to {self._path} ({written} of {len(line)} bytes)")
            os.fsync(self._fd)
        except OSError as exc:
            try:
                os.ftruncate(self._fd, self._size)
                os.fsync(self._fd)
            except OSError:
                # The file may now end in a torn line or an unsynced one: only a reopen,
                # which reads the tail again, knows where the chain really stands.
                self._broken = f"a write failed ({exc})"
            raise

    def close(self) -> None:
        """Release the file and its lock; later appends are refused. Safe to call twice."""
        with self._lock:
            if self._fd is not None:
                fd, self._fd = self._fd, None
                os.close(fd)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class AuditSummary:
    """What a verified log says, in counts a regulator asks about."""

    lines: int
    first_time: str | None
    last_time: str | None
    decisions: dict[str, int]
    steps: dict[str, int]
    queriers: dict[str, int]


def _count(counter: Counter[str], value: Any) -> None:
    if value is not None and value != "":
        counter[value if isinstance(value, str) else json.dumps(value)] += 1


def verify(path: Path) -> AuditSummary:
    """Check every line and the chain; raise AuditError naming the first bad line."""
    path = Path(path)
    decisions: Counter[str] = Counter()
    steps: Counter[str] = Counter()
    queriers: Counter[str] = Counter()
    first_time: str | None = None
    last_time: str | None = None
    prev, number = GENESIS, 0
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise AuditError(0, "no such file") from None
    with f:
        for raw in f:
            number += 1
            if not raw.endswith(b"\n"):
                raise AuditError(number, "incomplete last line (a crash mid-write?)")
            try:
                record = _parse(raw[:-1])
            except ValueError as exc:
                raise AuditError(number, f"not JSON ({exc})") from None
            problem = _line_problem(record)
            if problem is not None:
                raise AuditError(number, problem)
            if _digest(record) != record["hash"]:
                raise AuditError(number, "edited (hash mismatch)")
            if record["seq"] != number:
                raise AuditError(
                    number,
                    f"seq {record['seq']} where {number} was expected "
                    "(a line was deleted, inserted or moved)",
                )
            if record["prev"] != prev:
                where = f"line {number - 1}'s hash" if number > 1 else "the genesis hash"
                raise AuditError(
                    number,
                    f"chain broken: prev does not match {where} "
                    "(a line was deleted, inserted or moved)",
                )
            if _render(record) != raw:
                raise AuditError(number, "edited (reformatted: the bytes are not as written)")
            prev = record["hash"]
            first_time = first_time or record["time"]
            last_time = record["time"]
            _count(decisions, record.get("decision"))
            _count(steps, record.get("step"))
            _count(queriers, record.get("querier"))
    return AuditSummary(
        lines=number,
        first_time=first_time,
        last_time=last_time,
        decisions=dict(decisions),
        steps=dict(steps),
        queriers=dict(queriers),
    )


def _counts(counts: Mapping[str, int]) -> str:
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{name} {n}" for name, n in ordered) or "none"


def format_summary(summary: AuditSummary, path: Path) -> str:
    """What ``phe-fl audit verify FILE`` prints for an intact log."""
    if summary.lines == 0:
        intact = "chain intact: no entries"
    else:
        noun = "entry" if summary.lines == 1 else "entries"
        intact = (
            f"chain intact: {summary.lines} {noun} from {summary.first_time} to {summary.last_time}"
        )
    return "\n".join(
        [
            f"audit log: {path}",
            intact,
            f"decisions: {_counts(summary.decisions)}",
            f"steps: {_counts(summary.steps)}",
            f"queriers: {_counts(summary.queriers)}",
        ]
    )
