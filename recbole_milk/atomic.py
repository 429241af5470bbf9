"""Crash-safe writes of files and folders: write a temporary sibling named after its writer, then rename it.

A reader therefore sees the old version or the new one, never a torn one. A writer killed before the rename leaves
its temporary behind; the name records host and process id, so a later run can tell that the writer is gone and
delete it without touching a temporary that a live process (here or on another host sharing the folder) is still
writing. Every file and folder the plugin, its scripts and its benchmarks write goes through this module, so
`remove_stale_temporaries` knows all of their temporaries.
"""
import json
import os
import re
import shutil
import socket
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator, List, Union

import numpy as np

PathLike = Union[str, os.PathLike]
_TEMPORARY = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)-[0-9a-f]{8}\.tmp$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def temporary_path(path: PathLike) -> Path:
    """A unique hidden sibling of `path` for this process: .<name>.<host>-<pid>-<random>.tmp"""
    target = Path(path)
    return target.with_name(f".{target.name}.{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        try:
            path.unlink()
        except FileNotFoundError:
            pass


@contextmanager
def atomic_write(path: PathLike, mode: str = "wb", encoding: Union[str, None] = None,
                 durable: bool = False) -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; on success rename it to `path`, on error delete it.
    With `durable`, the data reaches the disk before the rename (a power cut cannot leave an empty file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(target)
    try:
        with open(temporary, mode, encoding=encoding) as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, target)
    finally:
        _remove(temporary)


@contextmanager
def atomic_directory(path: PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield an empty temporary sibling folder of `path`; on success it becomes `path`.

    With `replace`, an existing `path` is swapped out and deleted (folders cannot be replaced in one rename, so for
    a moment `path` is absent). Without it, an existing `path` wins: this write is discarded, which lets concurrent
    builders of the same deterministic content race safely.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_path(target)
    staging.mkdir()
    try:
        yield staging
        if target.exists():
            if not replace:
                return
            retired = temporary_path(target)
            try:
                os.replace(target, retired)
            except FileNotFoundError:
                pass  # another writer retired it first
            _remove(retired)
        try:
            os.replace(staging, target)
        except OSError:
            if replace or not target.exists():
                raise
    finally:
        _remove(staging)


def write_text(path: PathLike, text: str) -> Path:
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return Path(path)


def write_json(path: PathLike, content: Any, indent: Union[int, None] = None) -> Path:
    """Write JSON atomically, so readers never see a half-written file."""
    with atomic_write(path, "w", encoding="utf-8") as handle:
        json.dump(content, handle, indent=indent)
    return Path(path)


def save_npy(path: PathLike, array: np.ndarray) -> Path:
    with atomic_write(path) as handle:
        np.save(handle, array)
    return Path(path)


def save_torch(path: PathLike, state: Any) -> Path:
    import torch

    with atomic_write(path) as handle:
        torch.save(state, handle)
    return Path(path)


def remove_empty_folder(path: PathLike) -> bool:
    """Remove `path` if it is an empty folder; True if this call removed it. Another process may remove it, or
    write into it, at the same moment (the processes of one multi-process run all do this): that is no error."""
    try:
        if os.listdir(path):
            return False
        os.rmdir(path)
        return True
    except OSError:
        return False


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_temporaries(directory: PathLike) -> List[Path]:
    """Delete the temporary files and folders in `directory` left by dead writers on this host; return them."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    removed = []
    host = _host()
    for entry in folder.iterdir():
        match = _TEMPORARY.match(entry.name)
        if match and match["host"] == host and not _process_alive(int(match["pid"])):
            _remove(entry)
            removed.append(entry)
    return removed
