"""A node's durable state: what it committed before a crash is exactly what it finds after.

A node may be killed (SIGKILL, power loss) at any instruction and restarted; it must then find
its secret-key share, keys, ciphertexts and job records as they were at its last commit,
never half-written. Records (small JSON objects in named tables) live in SQLite (WAL journal,
``synchronous=FULL``, so a returned commit is on disk); blobs (large binary objects: keys,
ciphertexts, shares) live one file each in ``<dir>/blobs/``, written to a temporary file,
fsynced and renamed into place, with their size and sha256 recorded in the database so a
truncated or corrupted file is reported instead of returned.

A state directory belongs to one node of one federation under one parameter set and one
format version, written into the database on first open; any other node refuses it.

Only the standard library is used, apart from ``cryptography`` to read the CA certificate
that fingerprints the federation. Nothing secret ever appears in a message or a log line:
errors name blobs, tables and keys, never their contents.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import sqlite3
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from phe_fl.errors import StateError

__all__ = ["FORMAT_VERSION", "StoreIdentity", "federation_fingerprint", "NodeStore"]

FORMAT_VERSION = 1

_log = logging.getLogger(__name__)

_DB_NAME = "state.db"
_BLOB_DIR = "blobs"
# '~' is not a blob-name character, so a temporary file can never shadow a blob.
_TMP_MARK = "~tmp~"
_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,200}")
_KEY_MAX = 1024
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_CHUNK = 1 << 20
_SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS records ("
    " tbl TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, seq INTEGER NOT NULL,"
    " PRIMARY KEY (tbl, key))",
    "CREATE INDEX IF NOT EXISTS records_order ON records (tbl, seq)",
    "CREATE TABLE IF NOT EXISTS blobs ("
    " name TEXT PRIMARY KEY, size INTEGER NOT NULL, sha256 TEXT NOT NULL)",
    # A blob write in flight: recorded before the rename, so recovery at open can tell a
    # completed rename (file matches the pending row) from bit rot (file matches neither).
    "CREATE TABLE IF NOT EXISTS blob_pending ("
    " name TEXT PRIMARY KEY, size INTEGER NOT NULL, sha256 TEXT NOT NULL)",
)
_PROMOTE = "INSERT OR REPLACE INTO blobs (name, size, sha256) VALUES (?, ?, ?)"


@dataclass(frozen=True)
class StoreIdentity:
    """Whose state this is: a state dir belongs to one node of one federation."""

    node_id: str
    params: str  # parameter-set name
    federation: str  # fingerprint of the federation (hex), e.g. of its CA certificate


def federation_fingerprint(ca_pem: bytes, n_parties: int) -> str:
    """sha256 over the CA certificate's DER bytes and the party count: a state dir from
    another federation (another CA, or the same CA re-used for a different party set size)
    is refused."""
    if isinstance(n_parties, bool) or not isinstance(n_parties, int) or n_parties < 1:
        raise StateError(f"federation party count must be a positive integer, got {n_parties!r}")
    try:
        cert = x509.load_pem_x509_certificate(ca_pem)
    except (ValueError, TypeError) as exc:
        raise StateError(f"CA certificate is not a PEM X.509 certificate ({exc})") from None
    der = cert.public_bytes(Encoding.DER)
    digest = hashlib.sha256()
    digest.update(b"phe-fl federation\x00")
    digest.update(len(der).to_bytes(8, "big"))
    digest.update(der)
    digest.update(n_parties.to_bytes(8, "big"))
    return digest.hexdigest()


def _abbrev(mine: str, theirs: str) -> tuple[str, str]:
    """Shortest prefixes (at least 16 characters) that tell two fingerprints apart."""
    n = 16
    while n < max(len(mine), len(theirs)) and mine[:n] == theirs[:n]:
        n += 8

    def cut(s: str) -> str:
        return s if len(s) <= n else s[:n] + "..."

    return cut(mine), cut(theirs)


def _check_blob_name(name: object) -> str:
    """A blob name is one plain file name inside ``blobs/``, never a path out of it."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name in (".", ".."):
        raise StateError(
            f"bad blob name {_show(name)}: use 1-200 characters from A-Z a-z 0-9 . _ -, "
            "not '.' or '..'"
        )
    return name


def _check_table(table: object) -> str:
    """Table names follow the blob-name rule, so one day a table could be a folder."""
    if not isinstance(table, str) or not _NAME_RE.fullmatch(table) or table in (".", ".."):
        raise StateError(
            f"bad table name {_show(table)}: use 1-200 characters from A-Z a-z 0-9 . _ -, "
            "not '.' or '..'"
        )
    return table


def _check_key(key: object) -> str:
    """Keys are free text (job ids, node ids), but printable, bounded and valid UTF-8."""
    if isinstance(key, str) and 0 < len(key) <= _KEY_MAX and not _CONTROL_RE.search(key):
        try:
            key.encode("utf-8")
            return key
        except UnicodeEncodeError:
            pass
    raise StateError(
        f"bad record key {_show(key)}: use 1-{_KEY_MAX} characters of UTF-8 text "
        "without control characters"
    )


def _show(value: object) -> str:
    """A name for an error message: its repr, cut short (names are never secret)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable (the entry lives in the directory)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _private_dir(path: Path) -> None:
    """Create ``path`` (and parents) and make it 0700 whatever the umask was."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()  # a symlinked state dir is fine; its target is what we tighten
        if not stat.S_ISDIR(st.st_mode):
            raise StateError(f"state path {path} exists and is not a directory")
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(path, 0o700)
    except FileExistsError:
        raise StateError(f"state path {path} exists and is not a directory") from None
    except OSError as exc:
        raise StateError(f"cannot create state directory {path}: {exc.strerror}") from None


def _hash_file(fd: int) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while chunk := os.read(fd, _CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


class NodeStore:
    """One node's state directory: blobs as files, records and blob checksums in SQLite.

    Thread-safe: one SQLite connection shared by all threads, guarded by one re-entrant lock
    (gRPC serves each call on its own thread). ``items`` lists records in insertion order;
    re-putting an existing key updates it in place and keeps its original position, as a
    ``dict`` does; a deleted and re-put key moves to the end.

    Blobs are written outside any ``transaction()`` only (a file rename cannot be rolled back
    with the database): write the blob, then commit the records that refer to it. A crash in
    between leaves a blob nothing refers to, which is harmless.
    """

    def __init__(self, directory: Path, identity: StoreIdentity) -> None:
        for field in ("node_id", "params", "federation"):
            value = getattr(identity, field)
            if not isinstance(value, str) or not value:
                raise StateError(f"store identity {field} must be a non-empty string")
        self._dir = Path(directory).absolute()
        self._blobs = self._dir / _BLOB_DIR
        self._identity = identity
        self._lock = threading.RLock()
        self._depth = 0  # transaction nesting depth; only touched while holding the lock
        self._conn: sqlite3.Connection | None = None

        _private_dir(self._dir)
        _private_dir(self._blobs)
        db = self._dir / _DB_NAME
        self._private_file(db)
        self._check_header(db)
        try:
            self._conn = sqlite3.connect(
                str(db), check_same_thread=False, isolation_level=None, timeout=30.0
            )
        except sqlite3.Error as exc:
            raise StateError(f"state dir {self._dir}: cannot open {_DB_NAME} ({exc})") from None
        try:
            self._open_database()
            for suffix in ("-wal", "-shm"):
                side = db.with_name(_DB_NAME + suffix)
                if side.exists():
                    self._private_file(side)
            _fsync_dir(self._dir)
            self._recover_blobs()
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    # -- opening -------------------------------------------------------------------------

    def _private_file(self, path: Path) -> None:
        """Create ``path`` if missing, and make it 0600 (it may hold secret material)."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.fchmod(fd, 0o600)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StateError(
                f"state dir {self._dir}: cannot open {path.name}: {exc.strerror}"
            ) from None

    def _check_header(self, db: Path) -> None:
        """Refuse a non-empty file that is not SQLite: SQLite itself would overwrite a short
        one as if it were a new database. (An empty file is new, or its first commit is still
        in the WAL.)"""
        try:
            with open(db, "rb") as f:
                header = f.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise StateError(
                f"state dir {self._dir}: cannot read {_DB_NAME}: {exc.strerror}"
            ) from None
        if header and header != _SQLITE_MAGIC:
            raise StateError(
                f"state dir {self._dir}: {_DB_NAME} is not a phe-fl state database "
                "(not an SQLite file)"
            )

    def _open_database(self) -> None:
        conn = self._db()
        where = f"state dir {self._dir}"
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.DatabaseError as exc:
            raise StateError(
                f"{where}: {_DB_NAME} is not a phe-fl state database ({exc})"
            ) from None
        if str(mode).lower() != "wal":
            raise StateError(f"{where}: {_DB_NAME} cannot use a WAL journal (got {mode!r})")
        try:
            with self.transaction():
                for statement in _SCHEMA:
                    conn.execute(statement)
                meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                if meta:
                    self._check_meta(meta)
                else:
                    used = conn.execute(
                        "SELECT (SELECT COUNT(*) FROM records) + (SELECT COUNT(*) FROM blobs)"
                    ).fetchone()[0]
                    if used:
                        raise StateError(f"{where}: {_DB_NAME} holds state but no identity")
                    ident = self._identity
                    conn.executemany(
                        "INSERT INTO meta (key, value) VALUES (?, ?)",
                        [
                            ("format_version", str(FORMAT_VERSION)),
                            ("node_id", ident.node_id),
                            ("params", ident.params),
                            ("federation", ident.federation),
                        ],
                    )
        except sqlite3.DatabaseError as exc:
            raise StateError(
                f"{where}: {_DB_NAME} is not a phe-fl state database ({exc})"
            ) from None

    def _check_meta(self, meta: dict[str, str]) -> None:
        """Refuse another node's, parameter set's, federation's or a newer format's state."""
        where = f"state dir {self._dir}"
        missing = [
            k for k in ("format_version", "node_id", "params", "federation") if k not in meta
        ]
        if missing:
            raise StateError(f"{where}: identity is incomplete (missing {', '.join(missing)})")
        try:
            version = int(meta["format_version"])
        except ValueError:
            raise StateError(
                f"{where}: unreadable format version {_show(meta['format_version'])}"
            ) from None
        if version > FORMAT_VERSION:
            raise StateError(
                f"{where} has format version {version}, newer than this phe-fl's "
                f"{FORMAT_VERSION}: upgrade phe-fl"
            )
        if version < FORMAT_VERSION:
            raise StateError(
                f"{where} has format version {version}, older than this phe-fl's "
                f"{FORMAT_VERSION}, which cannot read it"
            )
        ident = self._identity
        if meta["node_id"] != ident.node_id:
            raise StateError(
                f"{where} belongs to node {meta['node_id']!r}, this config is {ident.node_id!r}"
            )
        if meta["params"] != ident.params:
            raise StateError(
                f"{where} was written for parameter set {meta['params']!r}, "
                f"this node uses {ident.params!r}"
            )
        if meta["federation"] != ident.federation:
            theirs, mine = _abbrev(meta["federation"], ident.federation)
            raise StateError(
                f"{where} belongs to another federation (fingerprint {theirs}, this one {mine})"
            )

    def _recover_blobs(self) -> None:
        """Finish or forget blob writes a crash interrupted, and remove stray files.

        A pending row whose file matches it means the rename happened: promote it. Otherwise
        the rename did not happen and the recorded blob stands. Temporary files and files no
        row records (a crash inside ``delete_blob``) are removed: they may hold a key share.
        """
        conn = self._db()
        with self._lock:
            try:
                pending = conn.execute("SELECT name, size, sha256 FROM blob_pending").fetchall()
                for name, size, sha in pending:
                    found = self._file_digest(name)
                    with self.transaction():
                        if found == (size, sha):
                            conn.execute(_PROMOTE, (name, size, sha))
                            _log.info(
                                "store %s: completed interrupted write of blob %r", self._dir, name
                            )
                        conn.execute("DELETE FROM blob_pending WHERE name = ?", (name,))
                recorded = {row[0] for row in conn.execute("SELECT name FROM blobs")}
            except sqlite3.Error as exc:
                raise StateError(f"state dir {self._dir}: cannot recover blobs ({exc})") from None
            removed = False
            try:
                entries = list(os.scandir(self._blobs))
            except OSError as exc:
                raise StateError(f"cannot list {self._blobs}: {exc.strerror}") from None
            for entry in entries:
                stray = _TMP_MARK in entry.name or (
                    _NAME_RE.fullmatch(entry.name) is not None and entry.name not in recorded
                )
                if not stray or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    os.unlink(entry.path)
                    removed = True
                    _log.info("store %s: removed stray blob file %r", self._dir, entry.name)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise StateError(
                        f"cannot remove stray file {entry.path}: {exc.strerror}"
                    ) from None
            if removed:
                _fsync_dir(self._blobs)

    def _file_digest(self, name: str) -> tuple[int, str] | None:
        try:
            fd = os.open(self._blobs / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            return _hash_file(fd)
        finally:
            os.close(fd)

    # -- plumbing ------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._dir

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateError(f"state store {self._dir} is closed")
        return self._conn

    def close(self) -> None:
        """Close the database; further calls raise StateError. Closing twice is harmless."""
        with self._lock:
            if self._depth:
                raise StateError(f"state store {self._dir}: close() inside a transaction")
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> NodeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Puts and deletes inside commit together, or not at all if the block raises.

        Re-entrant in one thread: an inner block is a savepoint, so an inner failure that the
        outer block catches undoes only the inner writes. Other threads wait for the commit.
        """
        with self._lock:
            conn = self._db()
            depth = self._depth
            savepoint = f"sp{depth}"
            try:
                conn.execute("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT {savepoint}")
            except sqlite3.Error as exc:
                raise StateError(f"state store {self._dir}: cannot begin ({exc})") from None
            self._depth = depth + 1
            try:
                yield
            except BaseException:
                self._depth = depth
                with contextlib.suppress(sqlite3.Error):
                    if depth == 0:
                        conn.execute("ROLLBACK")
                    else:
                        conn.execute(f"ROLLBACK TO {savepoint}")
                        conn.execute(f"RELEASE {savepoint}")
                raise
            self._depth = depth
            try:
                conn.execute("COMMIT" if depth == 0 else f"RELEASE {savepoint}")
            except sqlite3.Error as exc:
                if depth == 0:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise StateError(f"state store {self._dir}: commit failed ({exc})") from None

    def _execute(self, what: str, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        """Run one query under the lock, translating SQLite errors to StateError."""
        with self._lock:
            try:
                return self._db().execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StateError(f"state store {self._dir}: {what} failed ({exc})") from None

    def _change(self, what: str, sql: str, args: tuple[Any, ...] = ()) -> int:
        """Run one write under the lock; the number of rows it changed."""
        with self._lock:
            try:
                return self._db().execute(sql, args).rowcount
            except sqlite3.Error as exc:
                raise StateError(f"state store {self._dir}: {what} failed ({exc})") from None

    # -- records -------------------------------------------------------------------------

    def put(self, table: str, key: str, value: dict[str, Any]) -> None:
        """Store ``value`` (a JSON object) under ``table``/``key``; a re-put keeps its place."""
        _check_table(table)
        _check_key(key)
        if not isinstance(value, dict):
            raise StateError(
                f"record {table}/{key}: value must be a dict, not {type(value).__name__}"
            )
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise StateError(f"record {table}/{key} is not JSON-serializable ({exc})") from None
        what = f"put {table}/{key}"
        with self.transaction():
            updated = self._change(
                what, "UPDATE records SET value = ? WHERE tbl = ? AND key = ?", (text, table, key)
            )
            if not updated:
                self._change(
                    what,
                    "INSERT INTO records (tbl, key, value, seq) VALUES (?, ?, ?, "
                    "(SELECT COALESCE(MAX(seq), 0) + 1 FROM records WHERE tbl = ?))",
                    (table, key, text, table),
                )

    def _decode(self, table: str, key: str, text: str) -> dict[str, Any]:
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise StateError(f"state store {self._dir}: record {table}/{key} is not a JSON object")
        return value

    def get(self, table: str, key: str) -> dict[str, Any] | None:
        """The record under ``table``/``key``, or None if there is none."""
        _check_table(table)
        _check_key(key)
        rows = self._execute(
            f"get {table}/{key}",
            "SELECT value FROM records WHERE tbl = ? AND key = ?",
            (table, key),
        )
        return self._decode(table, key, rows[0][0]) if rows else None

    def items(self, table: str) -> list[tuple[str, dict[str, Any]]]:
        """Every record of ``table`` as (key, value), oldest insertion first."""
        _check_table(table)
        rows = self._execute(
            f"list {table}",
            "SELECT key, value FROM records WHERE tbl = ? ORDER BY seq",
            (table,),
        )
        return [(key, self._decode(table, key, text)) for key, text in rows]

    def delete(self, table: str, key: str) -> None:
        """Remove ``table``/``key``; removing a missing record does nothing."""
        _check_table(table)
        _check_key(key)
        self._change(
            f"delete {table}/{key}", "DELETE FROM records WHERE tbl = ? AND key = ?", (table, key)
        )

    # -- blobs ---------------------------------------------------------------------------

    def _outside_transaction(self, what: str) -> None:
        if self._depth:
            raise StateError(
                f"state store {self._dir}: {what} inside transaction(); a file cannot be "
                "rolled back with the database, so write blobs before the records that use them"
            )

    def put_blob(self, name: str, data: bytes) -> None:
        """Write ``data`` as blob ``name``, atomically and durably (0600; replaces any old one).

        The file is written and fsynced under a temporary name first; the rename onto the
        final name is bracketed by a pending row and the final row, so a crash at any point
        leaves either the old blob or the new one, both readable.
        """
        _check_blob_name(name)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise StateError(f"blob {name!r}: data must be bytes, not {type(data).__name__}")
        view = memoryview(data).cast("B")
        size, sha = view.nbytes, hashlib.sha256(view).hexdigest()
        with self._lock:
            self._db()
            self._outside_transaction(f"put_blob({name!r})")
        tmp = self._blobs / f"{name}{_TMP_MARK}{secrets.token_hex(8)}"
        try:
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            raise StateError(f"blob {name!r}: cannot create {tmp}: {exc.strerror}") from None
        try:
            try:
                os.fchmod(fd, 0o600)  # the umask may have taken bits away
                written = 0
                while written < size:
                    written += os.write(fd, view[written:])
                os.fsync(fd)
            finally:
                os.close(fd)
            with self._lock:
                self._outside_transaction(f"put_blob({name!r})")
                self._change(
                    f"put_blob {name!r}",
                    "INSERT OR REPLACE INTO blob_pending (name, size, sha256) VALUES (?, ?, ?)",
                    (name, size, sha),
                )
                os.replace(tmp, self._blobs / name)
                _fsync_dir(self._blobs)
                with self.transaction():
                    self._change(
                        f"put_blob {name!r}",
                        "INSERT OR REPLACE INTO blobs (name, size, sha256) VALUES (?, ?, ?)",
                        (name, size, sha),
                    )
                    self._change(
                        f"put_blob {name!r}", "DELETE FROM blob_pending WHERE name = ?", (name,)
                    )
        except OSError as exc:
            raise StateError(f"blob {name!r}: cannot write {self._blobs}: {exc.strerror}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def get_blob(self, name: str) -> bytes | None:
        """Blob ``name``, checked against its recorded size and sha256; None if never written.

        A recorded blob whose file is missing, short, long or altered raises StateError
        rather than returning bytes that are not what was committed.
        """
        _check_blob_name(name)
        path = self._blobs / name
        with self._lock:
            rows = self._execute(
                f"get_blob {name!r}", "SELECT size, sha256 FROM blobs WHERE name = ?", (name,)
            )
            if not rows:
                return None
            size, sha = rows[0]
            # Open under the lock: the descriptor pins the file the row describes, even if
            # another thread replaces or deletes the blob while we read it.
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                raise StateError(
                    f"blob {name!r} in {self._dir} is recorded but its file {path} is missing"
                ) from None
            except OSError as exc:
                raise StateError(f"blob {name!r}: cannot open {path}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "rb") as f:
                found = os.fstat(f.fileno()).st_size
                # Check the size before reading, so a file grown huge is not read whole.
                data = f.read(size + 1) if found == size else b""
        except OSError as exc:
            raise StateError(f"blob {name!r}: cannot read {path}: {exc.strerror}") from None
        if found == size:
            found = len(data)
        if found < size:
            raise StateError(f"blob {name!r} in {self._dir}: truncated: {found} of {size} bytes")
        if found > size:
            raise StateError(
                f"blob {name!r} in {self._dir}: size mismatch: {found} bytes, {size} recorded"
            )
        if hashlib.sha256(data).hexdigest() != sha:
            raise StateError(f"blob {name!r} in {self._dir}: checksum mismatch")
        return data

    def has_blob(self, name: str) -> bool:
        """Whether blob ``name`` is recorded (its file is checked only by ``get_blob``)."""
        _check_blob_name(name)
        return bool(
            self._execute(f"has_blob {name!r}", "SELECT 1 FROM blobs WHERE name = ?", (name,))
        )

    def delete_blob(self, name: str) -> None:
        """Forget blob ``name`` and remove its file; deleting a missing blob does nothing.

        The row goes first: a crash before the unlink leaves an unrecorded file, which the
        next open removes.
        """
        _check_blob_name(name)
        with self._lock:
            self._outside_transaction(f"delete_blob({name!r})")
            with self.transaction():
                self._change(f"delete_blob {name!r}", "DELETE FROM blobs WHERE name = ?", (name,))
                self._change(
                    f"delete_blob {name!r}", "DELETE FROM blob_pending WHERE name = ?", (name,)
                )
            try:
                os.unlink(self._blobs / name)
            except FileNotFoundError:
                return
            except OSError as exc:
                raise StateError(f"blob {name!r}: cannot remove its file: {exc.strerror}") from None
            _fsync_dir(self._blobs)
