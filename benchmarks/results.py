"""The results file: one JSON line per finished run, appended durably, read back without duplicates.

Each line holds the cell's key fields (dataset, experiment, variant, setting, seed). A line is written whole, flushed
and fsynced before the runner moves on, so a kill loses at most the run in progress. Reading keeps the first line of
each key and skips a torn last line, so a run that finished twice (two runners, a retried append) counts once.
"""
import contextlib
import fcntl
import json
import os
from typing import Any, Dict, Iterator, List, Tuple

from recbole_milk.atomic import atomic_write

KEY_FIELDS = ("dataset", "experiment", "variant", "setting", "seed")


def record_key(record: Dict[str, Any]) -> Tuple[Any, ...]:
    return tuple(record[field] for field in KEY_FIELDS)


def read_results(path: str) -> List[Dict[str, Any]]:
    """Finished runs in file order, the first record of each key only; a missing file is an empty result set."""
    if not os.path.exists(path):
        return []
    records, seen = [], set()
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
                key = record_key(record)
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line torn by a kill mid-write; its run is simply redone
            if key not in seen:
                seen.add(key)
                records.append(record)
    return records


def done_keys(path: str) -> set:
    return {record_key(record) for record in read_results(path)}


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    """Hold an exclusive lock next to the results file, so that two runners never append the same cell."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def forget_results(path: str, keys: set) -> int:
    """Remove the records of `keys` (so the runner measures those cells again); the number removed.

    The file is rewritten to a temporary name and renamed under the runners' lock, so a runner appending meanwhile
    waits and a kill leaves either the old or the new file.
    """
    if not os.path.exists(path):
        return 0
    with locked(path):
        records = read_results(path)
        kept = [record for record in records if record_key(record) not in keys]
        with atomic_write(path, "w", encoding="utf-8", durable=True) as handle:
            handle.writelines(json.dumps(record, sort_keys=True) + "\n" for record in kept)
    return len(records) - len(kept)


def append_result(path: str, record: Dict[str, Any]) -> bool:
    """Append `record` unless its key is already there; True if it was written. Durable on return."""
    line = json.dumps(record, sort_keys=True)
    with locked(path):
        if record_key(record) in done_keys(path):
            return False
        with open(path, "a+b") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    handle.write(b"\n")  # end a torn line, so the new record stands on its own line
            handle.write(line.encode("utf-8") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
    return True
