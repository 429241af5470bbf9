"""The new-item service, tested as a client sees it: a real uvicorn server in a subprocess, called over HTTP."""
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import write_toy_dataset

for _module in ("fastapi", "uvicorn", "faiss", "httpx"):
    pytest.importorskip(_module)
import httpx  # noqa: E402

from recbole_milk.inference import NewItemScorer  # noqa: E402
from recbole_milk.quick_start import run_recbole_milk  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _command(artifact, store, *extra, port="0"):
    return [sys.executable, "-m", "recbole_milk.serve", "--artifact", str(artifact), "--store", str(store),
            "--host", "127.0.0.1", "--port", port, *extra]


def _environment():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                OMP_NUM_THREADS="1")


class Server:
    """`python -m recbole_milk.serve` on a free port; stop() ends it the way a supervisor would (SIGTERM)."""

    def __init__(self, artifact, store, *extra):
        self.log = Path(store).parent / f"{Path(store).name}-server-{time.monotonic_ns()}.log"
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(_command(artifact, store, *extra), stdout=subprocess.PIPE, stderr=log,
                                            text=True, env=_environment())
        line = self.process.stdout.readline()  # the server names its port before it serves
        if not line.startswith("serving on "):
            self.process.kill()
            raise AssertionError(f"server did not start: {line!r}\n{self.log.read_text()}")
        self.url = line.split()[2]
        self.client = httpx.Client(base_url=self.url, timeout=60)
        assert self.client.get("/health").status_code == 200

    def stop(self):
        self.client.close()
        self.process.terminate()
        # uvicorn finishes the requests in flight, then lets SIGTERM end the process as a supervisor expects.
        assert self.process.wait(timeout=60) in (0, -signal.SIGTERM), self.log.read_text()
        assert "Finished server process" in self.log.read_text()
        self.process.stdout.close()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    config = write_toy_dataset(root / "data", n_users=30, n_items=60, n_modalities=3)
    result = run_recbole_milk("MILK", config["dataset"], config_dict=dict(config, epochs=3, eval_step=1))
    return {"artifact": result["artifact_file"], "scorer": NewItemScorer.from_artifact(result["artifact_file"]),
            "root": root}


@pytest.fixture(scope="module")
def server(trained):
    running = Server(trained["artifact"], trained["root"] / "store")
    yield running
    running.stop()


def _features(scorer, n, seed):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal((n, dim)).astype(np.float32)
            for name, dim in zip(scorer.modality_names, scorer.modality_dims)}


def _payload(ids, features, missing=None):
    """Items as JSON; `missing` maps an item index to the modalities it sends as null."""
    missing = missing or {}
    return {"items": [{"id": item_id, "features": {name: None if name in missing.get(i, ()) else rows[i].tolist()
                                                   for name, rows in features.items()}}
                      for i, item_id in enumerate(ids)]}


def _register(server, ids, features, missing=None):
    response = server.client.post("/items", json=_payload(ids, features, missing))
    assert response.status_code == 201, response.text
    assert response.json() == {"registered": list(ids)}


def test_health_names_the_model_and_its_users(server, trained):
    body = server.client.get("/health").json()
    assert body["status"] == "ok" and body["model"] == "MILK" and body["index"] == "exact"
    assert body["users"] == len(trained["scorer"].user_tokens) - 1


def test_who_should_see_an_item_is_the_models_exact_top_k(server, trained):
    scorer = trained["scorer"]
    features = _features(scorer, 4, seed=1)
    ids = [f"exact-{i}" for i in range(4)]
    _register(server, ids, features)
    tokens = list(scorer.user_tokens[1:])
    full = scorer.score(tokens, features)  # (users, items), computed in this process from the same artefact
    for column, item_id in enumerate(ids):
        body = server.client.get(f"/items/{item_id}/users", params={"k": 5}).json()
        assert body["item"] == item_id and len(body["users"]) == 5
        expected = torch.topk(full[:, column], 5)
        assert [u["user"] for u in body["users"]] == [tokens[i] for i in expected.indices]
        assert np.allclose([u["score"] for u in body["users"]], expected.values, atol=1e-4)
    every = server.client.get(f"/items/{ids[0]}/users", params={"k": 1000}).json()["users"]
    assert len(every) == len(tokens) and "[PAD]" not in {u["user"] for u in every}


def test_which_new_items_for_a_user_ranks_the_registered_items(server, trained):
    scorer = trained["scorer"]
    features = _features(scorer, 6, seed=2)
    ids = [f"for-user-{i}" for i in range(6)]
    _register(server, ids, features)
    user = str(scorer.user_tokens[3])
    body = server.client.get(f"/users/{user}/items", params={"k": 1000}).json()
    assert body["user"] == user
    served = {entry["item"]: entry["score"] for entry in body["items"]}
    assert set(ids) <= set(served)
    expected = scorer.score([user], features)[0]
    assert np.allclose([served[i] for i in ids], expected, atol=1e-4)
    scores = [entry["score"] for entry in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert len(server.client.get(f"/users/{user}/items", params={"k": 2}).json()["items"]) == 2


def test_a_null_or_absent_modality_is_imputed_as_in_training(server, trained):
    scorer = trained["scorer"]
    first, second = scorer.modality_names[:2]
    features = _features(scorer, 1, seed=3)
    server.client.post("/items", json=_payload(["null-modality"], features, missing={0: {first}}))
    absent = _payload(["absent-modality"], features)
    del absent["items"][0]["features"][first]
    only_one = {"items": [{"id": "one-modality", "features": {second: features[second][0].tolist()}}]}
    nothing = {"items": [{"id": "no-modality"}]}
    for body in (absent, only_one, nothing):
        assert server.client.post("/items", json=body).status_code == 201
    user = str(scorer.user_tokens[1])
    answer = server.client.get(f"/users/{user}/items", params={"k": 1000}).json()
    served = {entry["item"]: entry["score"] for entry in answer["items"]}
    expected_missing = dict(features, **{first: np.full_like(features[first], np.nan)})
    assert served["null-modality"] == pytest.approx(float(scorer.score([user], expected_missing)), abs=1e-4)
    assert served["absent-modality"] == pytest.approx(served["null-modality"], abs=1e-6)
    only = {name: np.full_like(rows, np.nan) for name, rows in features.items()}
    only[second] = features[second]
    assert served["one-modality"] == pytest.approx(float(scorer.score([user], only)), abs=1e-4)
    nothing_known = {name: np.full_like(rows, np.nan) for name, rows in features.items()}
    assert served["no-modality"] == pytest.approx(float(scorer.score([user], nothing_known)), abs=1e-4)


def _raw_post(server, text):
    return server.client.post("/items", content=text, headers={"content-type": "application/json"})


def test_bad_items_are_refused_with_the_item_and_modality_named_and_nothing_is_stored(server, trained):
    scorer = trained["scorer"]
    name, dim = scorer.modality_names[0], scorer.modality_dims[0]
    good = _payload(["innocent"], _features(scorer, 1, seed=4))["items"][0]
    _register(server, ["taken"], _features(scorer, 1, seed=5))
    numbers = ", ".join(["1.0"] * (dim - 1))
    cases = {
        "wrong dimension": ({"id": "bad", "features": {name: [1.0] * (dim + 1)}}, 422, [f"'{name}'", str(dim)]),
        "unknown modality": ({"id": "bad", "features": {"smell": [1.0]}}, 422, ["'smell'", name]),
        "not a number": ({"id": "bad", "features": {name: ["x"] * dim}}, 422, [f"'{name}'", "number"]),
        "bad id": ({"id": "a/b", "features": {}}, 422, ["'a/b'", "'/'"]),
        "duplicate of a registered id": ({"id": "taken", "features": {}}, 409, ["'taken'", "already registered"]),
        "duplicate in the request": (good, 422, ["'innocent'", "more than once"]),
    }
    for label, (bad, status, words) in cases.items():
        response = server.client.post("/items", json={"items": [good, bad]})
        assert response.status_code == status, label
        detail = response.json()["detail"]
        assert all(word in detail for word in words), (label, detail)
        assert "'bad'" in detail or label in ("bad id", "duplicate of a registered id", "duplicate in the request")
    for token in ("NaN", "Infinity", "-Infinity", "1e39"):
        text = json.dumps({"items": [good, {"id": "bad", "features": {name: []}}]})
        text = text.replace(f'"{name}": []', f'"{name}": [{numbers}, {token}]')
        response = _raw_post(server, text)
        assert response.status_code == 422 and "'bad'" in response.json()["detail"], token
        assert f"'{name}'" in response.json()["detail"] and "finite" in response.json()["detail"]
    response = _raw_post(server, "{not json")
    assert response.status_code == 422 and "not valid JSON at character 1" in response.json()["detail"]
    assert server.client.get("/items/innocent/users").status_code == 404  # nothing of a refused request is kept


def test_unknown_ids_and_bad_k_are_client_errors(server, trained):
    _register(server, ["k-check"], _features(trained["scorer"], 1, seed=6))
    assert server.client.get("/items/nowhere/users").status_code == 404
    assert "nowhere" in server.client.delete("/items/nowhere").json()["detail"]
    assert server.client.get("/users/nobody/items").status_code == 404
    assert server.client.get("/users/[PAD]/items").status_code == 404
    for k in ("0", "-1", "1001", "x"):
        response = server.client.get("/items/k-check/users", params={"k": k})
        assert response.status_code == 422 and "k" in response.json()["detail"]


def test_a_deleted_item_is_gone_from_every_answer(server, trained):
    scorer = trained["scorer"]
    _register(server, ["short-lived", "kept"], _features(scorer, 2, seed=7))
    assert server.client.delete("/items/short-lived").json() == {"deleted": "short-lived"}
    assert server.client.get("/items/short-lived/users").status_code == 404
    user = str(scorer.user_tokens[2])
    items = {e["item"] for e in server.client.get(f"/users/{user}/items", params={"k": 1000}).json()["items"]}
    assert "kept" in items and "short-lived" not in items
    _register(server, ["short-lived"], _features(scorer, 1, seed=8))  # the id can be registered again


def test_concurrent_requests_keep_every_item_and_one_winner_per_id(server, trained):
    scorer = trained["scorer"]
    features = _features(scorer, 64, seed=9)
    user = str(scorer.user_tokens[1])

    def register(i):
        payload = _payload([f"concurrent-{i}"], {name: rows[i:i + 1] for name, rows in features.items()})
        return server.client.post("/items", json=payload).status_code

    def race(_):
        return server.client.post("/items", json=_payload(["contested"], _features(scorer, 1, seed=10))).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(register, range(64)))
        raced = list(pool.map(race, range(16)))
        reads = list(pool.map(lambda _: server.client.get(f"/users/{user}/items", params={"k": 5}).status_code,
                              range(32)))
    assert statuses == [201] * 64 and reads == [200] * 32
    assert sorted(raced) == [201] + [409] * 15
    served = {e["item"] for e in server.client.get(f"/users/{user}/items", params={"k": 1000}).json()["items"]}
    assert {f"concurrent-{i}" for i in range(64)} <= served


def test_a_restarted_server_answers_the_same(trained):
    store = trained["root"] / "restart-store"
    scorer = trained["scorer"]
    first = Server(trained["artifact"], store)
    ids = [f"persisted-{i}" for i in range(300)]
    features = _features(scorer, 300, seed=12)
    for i, item_id in enumerate(ids):  # one request each: the store's log is compacted past 256 changes
        _register(first, [item_id], {name: rows[i:i + 1] for name, rows in features.items()})
    for item_id in ids[:5]:
        assert first.client.delete(f"/items/{item_id}").status_code == 200
    users = [str(token) for token in scorer.user_tokens[1:6]]

    def answers(server):
        return ([server.client.get(f"/users/{user}/items", params={"k": 1000}).json() for user in users],
                [server.client.get(f"/items/{item_id}/users", params={"k": 7}).json() for item_id in ids[5::40]],
                server.client.get("/health").json()["items"])

    before = answers(first)
    first.stop()
    second = Server(trained["artifact"], store)
    try:
        assert answers(second) == before and before[2] == 295
        assert second.client.get(f"/items/{ids[0]}/users").status_code == 404
        records = [name for name in os.listdir(store) if name[0].isdigit()]
        assert any(name.endswith(".snapshot.npz") for name in records) and len(records) < 60
        assert not [name for name in os.listdir(store) if name.endswith(".tmp")]
    finally:
        second.stop()


def test_the_hnsw_index_serves_the_same_top_users_on_a_small_set(trained):
    scorer = trained["scorer"]
    server = Server(trained["artifact"], trained["root"] / "hnsw-store", "--index", "hnsw")
    try:
        features = _features(scorer, 3, seed=11)
        _register(server, ["h0", "h1", "h2"], features)
        assert server.client.get("/health").json()["index"] == "hnsw"
        tokens = list(scorer.user_tokens[1:])
        full = scorer.score(tokens, features)
        body = server.client.get("/items/h1/users", params={"k": 5}).json()
        assert [u["user"] for u in body["users"]] == [tokens[i] for i in torch.topk(full[:, 1], 5).indices]
        server.client.delete("/items/h1")
        served = server.client.get(f"/users/{tokens[0]}/items").json()["items"]
        assert [e["item"] for e in served] == sorted(["h0", "h2"], key=lambda i: -float(full[0, int(i[1])]))
    finally:
        server.stop()


def _start_fails(arguments):
    result = subprocess.run([sys.executable, "-m", "recbole_milk.serve", *arguments], capture_output=True, text=True,
                            env=_environment(), timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_the_command_reports_bad_starts_in_one_line(trained, server, tmp_path):
    artifact = trained["artifact"]
    assert "Artefact 'none.pt' not found" in _start_fails(_command("none.pt", tmp_path / "s")[3:])
    assert "--port 70000" in _start_fails(_command(artifact, tmp_path / "s", port="70000")[3:])
    taken_port = server.url.rsplit(":", 1)[1]
    assert "Cannot listen on 127.0.0.1:" in _start_fails(_command(artifact, tmp_path / "s", port=taken_port)[3:])
    assert "in use by another server" in _start_fails(_command(artifact, trained["root"] / "store")[3:])
    other = tmp_path / "other"
    other.mkdir()
    (other / "store.json").write_text(json.dumps({"format": 1, "artifact_sha256": "0" * 64, "dim": 3}))
    assert "another model" in _start_fails(_command(artifact, other)[3:])
