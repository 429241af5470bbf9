"""Crash-safe file writes: write a temporary sibling named after its writer, then rename it into place.

A reader therefore sees the old file or the new one, never a torn one. A writer killed before the rename leaves its
temporary behind; the name records host and process id, so a later run can tell that the writer is gone and delete
it without touching a temporary that a live process (here or on another host sharing the folder) is still writing.
"""
import os
import re
import socket
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator, List, Union

PathLike = Union[str, os.PathLike]
_TEMPORARY = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)-[0-9a-f]{8}\.tmp$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def temporary_path(path: PathLike) -> Path:
    """A unique hidden sibling of `path` for this process: .<name>.<host>-<pid>-<random>.tmp"""
    target = Path(path)
    return target.with_name(f".{target.name}.{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


@contextmanager
def atomic_write(path: PathLike, mode: str = "wb", encoding: Union[str, None] = None) -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; on success rename it to `path`, on error delete it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(target)
    try:
        with open(temporary, mode, encoding=encoding) as handle:
            yield handle
        os.replace(temporary, target)
    finally:
        if temporary.exists():
            temporary.unlink()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_temporaries(directory: PathLike) -> List[Path]:
    """Delete the temporaries in `directory` left by dead writers on this host; return what was deleted."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    removed = []
    host = _host()
    for entry in folder.iterdir():
        match = _TEMPORARY.match(entry.name)
        if match and match["host"] == host and not _process_alive(int(match["pid"])):
            try:
                entry.unlink()
                removed.append(entry)
            except FileNotFoundError:
                pass  # another run cleaned it first
    return removed
