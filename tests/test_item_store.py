"""The item registry survives restarts and crashes, compacts its log, and refuses folders it must not use."""
import os

import numpy as np
import pytest

from recbole_milk.atomic import temporary_path
from recbole_milk.item_store import ItemStore, StoreError


def _rows(n, value, dim=4):
    return np.full((n, dim), value, dtype=np.float32) + np.arange(n, dtype=np.float32)[:, None]


def _state(store):
    keys, vectors = store.live()
    return dict(zip(store.ids_of(keys), map(tuple, vectors)))


@pytest.mark.parametrize("compact_every", [2, 1000], ids=["compacted", "log only"])
def test_a_reopened_store_holds_exactly_the_live_items(tmp_path, compact_every):
    store = ItemStore(tmp_path / "s", 4, "sha", compact_every=compact_every)
    store.add(["a", "b"], _rows(2, 1.0))
    store.add(["c"], _rows(1, 5.0))
    store.remove(["a"])
    store.add(["a", "d"], _rows(2, 9.0))  # an id can come back after its removal
    store.remove(["c"])
    before = _state(store)
    store.close()
    reopened = ItemStore(tmp_path / "s", 4, "sha", compact_every=compact_every)
    assert _state(reopened) == before and set(before) == {"a", "b", "d"}
    assert np.allclose(reopened.vector("a"), _rows(2, 9.0)[0])
    assert "c" not in reopened and len(reopened) == 3
    records = sorted(name for name in os.listdir(tmp_path / "s") if name[0].isdigit())
    if compact_every == 2:
        assert any(name.endswith(".snapshot.npz") for name in records) and len(records) <= 2
    else:
        assert len(records) == 5


def test_a_crash_leaves_nothing_a_restart_would_read_wrongly(tmp_path):
    store = ItemStore(tmp_path / "s", 4, "sha", compact_every=2)
    store.add(["a"], _rows(1, 1.0))
    store.add(["b"], _rows(1, 2.0))  # compacts
    store.close()
    folder = tmp_path / "s"
    # A compaction that died before deleting the log it replaced, and a writer that died before its rename.
    np.savez(folder / "000000000000.add.npz", ids=np.frombuffer(b'["ghost"]', dtype=np.uint8), vectors=_rows(1, 0.0))
    dead = temporary_path(folder / "000000000009.add.npz").name.replace(f"-{os.getpid()}-", "-999999999-")
    (folder / dead).write_bytes(b"torn")
    reopened = ItemStore(folder, 4, "sha")
    assert set(_state(reopened)) == {"a", "b"}
    assert not (folder / "000000000000.add.npz").exists() and not (folder / dead).exists()


def test_a_second_server_on_the_same_folder_is_refused(tmp_path):
    first = ItemStore(tmp_path / "s", 4, "sha")
    with pytest.raises(StoreError, match="in use by another server"):
        ItemStore(tmp_path / "s", 4, "sha")
    first.close()
    ItemStore(tmp_path / "s", 4, "sha").close()


def test_a_folder_of_another_model_or_a_file_is_refused(tmp_path):
    ItemStore(tmp_path / "s", 4, "sha-one").close()
    with pytest.raises(StoreError, match="another model.*new --store folder"):
        ItemStore(tmp_path / "s", 4, "sha-two")
    with pytest.raises(StoreError, match="another model"):
        ItemStore(tmp_path / "s", 8, "sha-one")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        ItemStore(tmp_path / "file", 4, "sha")


def test_compaction_waits_until_the_log_outweighs_the_live_items(tmp_path):
    store = ItemStore(tmp_path / "s", 64, "sha", compact_every=1)
    store.add([f"i{n}" for n in range(100)], _rows(100, 1.0, dim=64))  # the log's one record holds every item
    store.remove(["i0"])  # a few bytes against 99 live items: no snapshot rewrite yet
    store.wait_for_cleanup()  # the add record, replaced by the add's compaction, is deleted in the background
    records = sorted(name.split(".", 1)[1] for name in os.listdir(tmp_path / "s") if name[0].isdigit())
    assert records == ["remove.json", "snapshot.npz"]
    store.close()
    assert len(ItemStore(tmp_path / "s", 64, "sha")) == 99


def test_a_record_that_cannot_be_read_is_named(tmp_path):
    store = ItemStore(tmp_path / "s", 4, "sha")
    store.add(["a"], _rows(1, 1.0))
    store.close()
    (tmp_path / "s" / "000000000001.add.npz").write_bytes(b"not a zip")
    with pytest.raises(StoreError, match="000000000001.add.npz cannot be replayed"):
        ItemStore(tmp_path / "s", 4, "sha")
    (tmp_path / "s" / "000000000001.add.npz").unlink()
    assert len(ItemStore(tmp_path / "s", 4, "sha")) == 1  # and the refused open released the folder's lock
