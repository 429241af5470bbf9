"""The registry of new items a service has been sent: id -> representation, in memory and persisted in a folder.

Every change is one file of the folder's log, written atomically and durably (recbole_milk.atomic): `<seq>.add.npz`
holds the ids and representations of one accepted request, `<seq>.remove.json` the ids it deleted. Once the log
holds `compact_every` changes and at least as many bytes as the live items, `<seq>.snapshot.npz` records all live
items and the log before it is deleted (so rewriting the snapshot costs at most what was logged). A restart
replays the newest snapshot and the changes after it. A server killed mid-write leaves no torn file, only a
temporary that the next start deletes, and every change it answered is on disk (synced before the answer).
`store.json` names the artefact whose representations these are, and an exclusive lock on `.lock` keeps a second
server off the same folder.
"""
import fcntl
import hashlib
import json
import re
import threading
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from recbole_milk.atomic import atomic_write, remove_stale_temporaries, write_json
from recbole_milk.errors import UserInputError

STORE_FORMAT = 1
COMPACT_EVERY = 256
_RECORD = re.compile(r"^(?P<seq>\d{12})\.(?P<kind>add|remove|snapshot)\.(?:npz|json)$")


class StoreError(UserInputError):
    """A store folder that cannot be served: in use, written for another artefact, or unreadable."""


def artifact_fingerprint(path: str) -> str:
    """SHA-256 of an artefact file: representations in a store are only valid for the model that computed them."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _pack_ids(ids: Sequence[str]) -> np.ndarray:
    # Ids travel as UTF-8 JSON bytes inside the .npz, so loading needs no pickle and long ids cost no padding.
    return np.frombuffer(json.dumps(list(ids)).encode("utf-8"), dtype=np.uint8)


def _unpack_ids(packed: np.ndarray) -> List[str]:
    return json.loads(packed.tobytes().decode("utf-8"))


def _delete(paths: Sequence[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


class ItemStore:
    """Registered items: string ids, representations (n, dim), persisted in `directory`.

    Each item gets an integer key, never reused while the store is open, for the search index; a removed item's row
    stays in memory until the next restart. Not safe for concurrent changes: the service serialises them.
    """

    def __init__(self, directory: str, dim: int, fingerprint: str, compact_every: int = COMPACT_EVERY):
        self.directory, self.dim, self.compact_every = Path(directory), int(dim), compact_every
        if self.directory.exists() and not self.directory.is_dir():
            raise StoreError(f"--store {directory} is a file; give a folder (it is created if absent).")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = self._acquire_lock()
        self._cleanup = None
        try:
            self._check_manifest(fingerprint)
            remove_stale_temporaries(self.directory)
            self._vectors = np.empty((0, self.dim), dtype=np.float32)
            self._ids: List[str] = []
            self._alive = np.empty(0, dtype=bool)
            self._keys: Dict[str, int] = {}
            self._changes, self._log_bytes, self._next_seq = self._replay()
        except BaseException:
            self.close()
            raise

    # ----- opening -----

    def _acquire_lock(self) -> IO:
        handle = open(self.directory / ".lock", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StoreError(f"--store {self.directory} is in use by another server; stop it or give another folder.")
        return handle

    def _check_manifest(self, fingerprint: str) -> None:
        path = self.directory / "store.json"
        manifest = {"format": STORE_FORMAT, "artifact_sha256": fingerprint, "dim": self.dim}
        if not path.exists():
            write_json(path, manifest, indent=1)
            return
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise StoreError(f"{path} is not valid JSON ({error}); it is not a store this plugin wrote.") from None
        if found != manifest:
            raise StoreError(f"--store {self.directory} holds items of another model (artefact sha256 "
                             f"{str(found.get('artifact_sha256'))[:12]}..., dim {found.get('dim')}), not of this "
                             f"artefact ({fingerprint[:12]}..., dim {self.dim}); give a new --store folder for a new "
                             "model, or serve the artefact that filled this one.")

    def _records(self) -> List[Tuple[int, str, Path]]:
        found = [(int(m["seq"]), m["kind"], path) for path in self.directory.iterdir()
                 if (m := _RECORD.match(path.name))]
        return sorted(found)

    def _replay(self) -> Tuple[int, int, int]:
        """Load the newest snapshot and apply the changes after it; return (changes and bytes since it, next
        sequence number)."""
        records = self._records()
        snapshots = [seq for seq, kind, _ in records if kind == "snapshot"]
        start = snapshots[-1] if snapshots else -1
        for seq, kind, path in records:
            if seq < start:
                path.unlink(missing_ok=True)  # left by a compaction that stopped before cleaning up
                continue
            try:
                if kind == "remove":
                    self._forget(json.loads(path.read_text(encoding="utf-8"))["ids"])
                else:
                    with np.load(path, allow_pickle=False) as record:
                        self._append(_unpack_ids(record["ids"]), record["vectors"])
            except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as error:
                raise StoreError(f"{path} cannot be replayed ({type(error).__name__}: {error}); it was not written "
                                 "by this plugin's store. Move it out of the folder to serve without it.") from None
        after = [path for seq, _, path in records if seq > start]
        return len(after), sum(path.stat().st_size for path in after), (records[-1][0] + 1 if records else 0)

    def wait_for_cleanup(self) -> None:
        """Block until the files the last compaction replaced are deleted."""
        if self._cleanup is not None:
            self._cleanup.join()

    def close(self) -> None:
        """Release the folder for another server."""
        self.wait_for_cleanup()
        self._lock.close()

    # ----- reading -----

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._keys

    def key(self, item_id: str) -> int:
        return self._keys[item_id]

    def vector(self, item_id: str) -> np.ndarray:
        return self._vectors[self._keys[item_id]]

    def ids_of(self, keys: np.ndarray) -> List[str]:
        return [self._ids[key] for key in keys]

    def live(self) -> Tuple[np.ndarray, np.ndarray]:
        """(keys, representations) of every live item, for building a search index."""
        keys = np.flatnonzero(self._alive)
        return keys, self._vectors[keys]

    # ----- changing -----

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> np.ndarray:
        """Persist then hold new items; return their keys. The caller has checked the ids are new and distinct."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self._new_record("add.npz") as handle:
            np.savez(handle, ids=_pack_ids(ids), vectors=vectors)
        keys = self._append(ids, vectors)
        self._count_change()
        return keys

    def remove(self, ids: Sequence[str]) -> np.ndarray:
        """Persist then drop registered items; return their keys."""
        keys = np.array([self._keys[item_id] for item_id in ids], dtype=np.int64)
        with self._new_record("remove.json", "w", "utf-8") as handle:
            json.dump({"ids": list(ids)}, handle)
        self._forget(ids)
        self._count_change()
        return keys

    @contextmanager
    def _new_record(self, suffix: str, mode: str = "wb", encoding: Optional[str] = None) -> Iterator[IO]:
        path = self.directory / f"{self._next_seq:012d}.{suffix}"
        with atomic_write(path, mode, encoding, durable=True) as handle:
            yield handle
        self._next_seq += 1
        self._log_bytes += path.stat().st_size

    def _append(self, ids: Sequence[str], vectors: np.ndarray) -> np.ndarray:
        start, end = len(self._ids), len(self._ids) + len(ids)
        if end > len(self._vectors):
            # Doubling keeps a day of small requests at amortised O(1) copying per item.
            capacity = max(end, 2 * len(self._vectors), 1024)
            grown = np.empty((capacity, self.dim), dtype=np.float32)
            grown[:start] = self._vectors[:start]
            self._vectors = grown
            self._alive = np.concatenate([self._alive, np.zeros(capacity - len(self._alive), dtype=bool)])
        self._vectors[start:end] = vectors
        self._alive[start:end] = True
        self._ids.extend(ids)
        self._keys.update(zip(ids, range(start, end)))
        return np.arange(start, end, dtype=np.int64)

    def _forget(self, ids: Sequence[str]) -> None:
        for item_id in ids:
            self._alive[self._keys.pop(item_id)] = False

    def _count_change(self) -> None:
        self._changes += 1
        if self._changes >= self.compact_every and self._log_bytes >= len(self) * self.dim * 4:
            self._compact()

    def _compact(self) -> None:
        """Write every live item as one snapshot, then delete the log it replaces."""
        keys, vectors = self.live()
        seq = self._next_seq
        with self._new_record("snapshot.npz") as handle:
            np.savez(handle, ids=_pack_ids(self.ids_of(keys)), vectors=vectors)
        self._changes, self._log_bytes = 0, 0
        obsolete = [path for old_seq, _, path in self._records() if old_seq < seq]
        # A replay skips what the snapshot replaces, so deleting it (slow on some disks: milliseconds a file) need
        # not hold up the requests waiting on the service's lock.
        self._cleanup = threading.Thread(target=_delete, args=(obsolete,), daemon=True)
        self._cleanup.start()
