"""The judge answer cache: a resumed or repeated run never asks a model the same question twice.

One SQLite database, `RUN/cache/judges/answers.sqlite`, in WAL mode with `synchronous=FULL`: a
commit survives `kill -9` and power loss, a crash mid-commit leaves the database as it was before
it, and readers never block the writer. A question is the key (judge `model_id`, the question's version
`tasks.vote.judges.prompt.question_version`, reference id, candidate pair id); ids are content hashes, so the key names the exact images.

Append-only: `INSERT OR IGNORE`, nothing is ever updated, so the first final answer to a question
is the answer for the life of the run. Only *final* answers go in (see `is_final`): a `p_real`, an
answer without any yes/no mass (asking again gives the same logits), or a request the server refuses
for good (HTTP 4xx other than 401/403/408/429). Timeouts, connection errors, HTTP 5xx, key errors and
unreadable images are transient: not cached, asked again by the next run.

Several shard tasks (threads or local processes) may share the file; SQLite's locking serialises
their short write transactions. Keep RUN/cache on a local disk or a filesystem with working POSIX
locks (SQLite over NFS is unsafe).

A cache that is not a database any more (`file is not a database`, `database disk image is
malformed`) is moved aside to `answers.sqlite.corrupt-<UTC time>` with a warning and a new one is
started: the cache only saves judge calls, so losing it costs time, never results.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from data_manifests import RunLayout
from tasks.vote.judges.base import NO_MASS, REFUSED, JudgeResult

Key = tuple[str, str]  # (ref_id, cand_id)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    model_id TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    ref_id TEXT NOT NULL,
    cand_id TEXT NOT NULL,
    p_real REAL,
    p_yes REAL,
    p_no REAL,
    error TEXT,
    created REAL NOT NULL,
    PRIMARY KEY (model_id, prompt_version, ref_id, cand_id)
) WITHOUT ROWID
"""


def is_final_error(error: str | None) -> bool:
    """An abstention that asking again would repeat: the model answered with no yes/no mass, or the
    server refused the request itself (a permanent HTTP 4xx)."""
    return isinstance(error, str) and error.startswith((NO_MASS, REFUSED))


def is_final(result: JudgeResult) -> bool:
    """A cacheable answer: a score, or a definitive no-yes/no-mass answer."""
    return result.p_real is not None or is_final_error(result.error)


def cache_path(run: RunLayout | str | Path) -> Path:
    root = run.cache if isinstance(run, RunLayout) else RunLayout.at(run).cache
    return root / "judges" / "answers.sqlite"


_INIT_LOCK = threading.Lock()


def _init_database(db: sqlite3.Connection, timeout_s: float) -> None:
    """WAL mode and the table, once per file. Switching the journal mode can answer SQLITE_BUSY at
    once, without the busy timeout, while another connection (another shard task or worker process)
    is opening the same file: such a moment is retried."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


log = logging.getLogger(__name__)


def is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """Damage to the file itself, as opposed to a busy or locked database (OperationalError)."""
    name = getattr(exc, "sqlite_errorname", "")
    if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
        return True
    text = str(exc)
    return not isinstance(exc, sqlite3.OperationalError) and ("not a database" in text or "malformed" in text)


def move_aside(path: Path, opened_inode: int | None) -> Path | None:
    """Rename a corrupt database (and its -wal/-shm) to `NAME.corrupt-<time>`; None when another
    process already replaced it (the file at `path` is no longer the one that was found corrupt)."""
    try:
        if opened_inode is not None and path.stat().st_ino != opened_inode:
            return None
    except FileNotFoundError:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return None
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, target.with_name(target.name + suffix))
    return target


class JudgeCache:
    """Final judge answers of one run. Thread-safe; open one per task (or share one)."""

    def __init__(self, run: RunLayout | str | Path, timeout_s: float = 120.0):
        self.path = cache_path(run)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._warned = False
        with _INIT_LOCK:
            try:
                self._db = self._open(timeout_s)
            except sqlite3.DatabaseError as exc:
                if not is_corruption(exc):
                    raise
                moved = move_aside(self.path, self._inode)
                if moved is not None:
                    log.warning("judge cache %s is damaged (%s): moved aside to %s; starting a new cache "
                                "(its answers will be asked again)", self.path, exc, moved.name)
                self._db = self._open(timeout_s)

    def _open(self, timeout_s: float) -> sqlite3.Connection:
        self._inode = self.path.stat().st_ino if self.path.exists() else None
        db = sqlite3.connect(self.path, timeout=timeout_s, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=FULL")
            _init_database(db, timeout_s)
            # Reads the schema and the table's root page: a file with a valid header but damaged
            # pages fails here rather than in the middle of a vote.
            db.execute("SELECT 1 FROM answers LIMIT 1").fetchall()
        except BaseException:
            db.close()
            raise
        return db

    def get_many(self, model_id: str, prompt_version: str, keys: Iterable[Key]) -> dict[Key, JudgeResult]:
        """The cached answers among `keys` (absent keys are simply missing from the result)."""
        keys = list(dict.fromkeys(keys))
        found: dict[Key, JudgeResult] = {}
        # One primary-key lookup per key: SQLite plans `(ref_id, cand_id) IN (VALUES ...)` as a scan
        # of the judge's whole history, which grows with the run.
        query = ("SELECT p_real, error, p_yes, p_no FROM answers "
                 "WHERE model_id=? AND prompt_version=? AND ref_id=? AND cand_id=?")
        with self._lock:
            try:
                for key in keys:
                    row = self._db.execute(query, (model_id, prompt_version, *key)).fetchone()
                    if row is not None:
                        found[key] = JudgeResult(p_real=row[0], error=row[1], p_yes=row[2], p_no=row[3])
            except sqlite3.DatabaseError as exc:
                self._damaged(exc)  # damage found mid-run: ask the judges (the next open rebuilds)
        return found

    def put_many(self, model_id: str, prompt_version: str, answers: Sequence[tuple[Key, JudgeResult]]) -> int:
        """Store the final answers among `answers` in one transaction; returns how many were final."""
        now = time.time()
        rows = [(model_id, prompt_version, ref_id, cand_id, r.p_real, r.p_yes, r.p_no, r.error, now)
                for (ref_id, cand_id), r in answers if is_final(r)]
        if not rows:
            return 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany("INSERT OR IGNORE INTO answers VALUES (?,?,?,?,?,?,?,?,?)", rows)
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.DatabaseError as exc:
                self._damaged(exc)  # the answers are still returned to the vote; only caching is lost
                return 0
        return len(rows)

    def _damaged(self, exc: sqlite3.DatabaseError) -> None:
        if not is_corruption(exc):
            raise exc
        if not self._warned:
            self._warned = True
            log.warning("judge cache %s is damaged (%s): this run continues without it; the next run "
                        "moves it aside and starts a new one", self.path, exc)

    def count(self, model_id: str | None = None) -> int:
        with self._lock:
            if model_id is None:
                return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
            return self._db.execute("SELECT COUNT(*) FROM answers WHERE model_id=?", (model_id,)).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "JudgeCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
