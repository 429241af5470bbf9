"""Load test of the new-item service on localhost: concurrent clients, a bounded number of requests, latencies.

    python -m benchmarks.serving_load --artifact saved/MILK-tiktok-....artifact.pt --clients 32 --requests 4000

Starts `python -m recbole_milk.serve` on a free port over a fresh store (a temporary folder), registers --items
new items with random features (a --missing_share of them miss one modality, sent as null) in requests of
--batch items, then lets --clients threads share --requests requests: registering one item (POST /items), the top
--k users of a registered item (GET /items/{id}/users) and the top --k registered items of a user (GET
/users/{user}/items), in the --mix proportions. Prints p50 and p99 latency per kind and overall, requests per
second and the errors; exits 1 if any request failed. The clients run on the same machine as the server and
take CPU from it.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch

KINDS = ("register", "users_for_item", "items_for_user")


def _payload(ids, rng, names, dims, missing_share):
    items = []
    for item_id in ids:
        misses = names[rng.integers(len(names))] if rng.random() < missing_share else None
        items.append({"id": item_id, "features": {name: None if name == misses else
                                                  rng.standard_normal(dim).round(4).tolist()
                                                  for name, dim in zip(names, dims)}})
    return {"items": items}


def start_server(artifact: str, store: str, extra):
    """The service on a free port: (process, base url)."""
    repository = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repository, os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen([sys.executable, "-m", "recbole_milk.serve", "--artifact", artifact, "--store", store,
                                "--port", "0", *extra], stdout=subprocess.PIPE, text=True, env=env)
    line = process.stdout.readline()
    if not line.startswith("serving on "):
        process.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return process, line.split()[2]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--items", type=int, default=2000, help="registered before the load starts")
    parser.add_argument("--batch", type=int, default=200, help="items per registration request before the load")
    parser.add_argument("--mix", default="0.2,0.4,0.4", help="shares of register, users_for_item, items_for_user")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--missing_share", type=float, default=0.5)
    parser.add_argument("--index", default="exact")
    parser.add_argument("--seed", type=int, default=2023)
    args = parser.parse_args(argv)
    artifact = torch.load(args.artifact, map_location="cpu", weights_only=True)
    names, dims = artifact["modality_names"], artifact["modality_dims"]
    users = [token for token in artifact["user_tokens"] if token != "[PAD]"]
    rng = np.random.default_rng(args.seed)
    mix = np.array([float(share) for share in args.mix.split(",")])

    with tempfile.TemporaryDirectory(prefix="serving_load-") as folder:
        process, url = start_server(args.artifact, str(Path(folder) / "store"), ["--index", args.index])
        try:
            with httpx.Client(base_url=url, timeout=120) as client:
                preload = time.perf_counter()
                for start in range(0, args.items, args.batch):
                    ids = [f"pre-{i}" for i in range(start, min(start + args.batch, args.items))]
                    client.post("/items", json=_payload(ids, rng, names, dims, args.missing_share)).raise_for_status()
                preload = time.perf_counter() - preload
            kinds = rng.choice(len(KINDS), size=args.requests, p=mix / mix.sum())
            work = []  # built before the clock starts, so the figures time the service, not the payloads
            for n, kind in enumerate(kinds):
                if KINDS[kind] == "register":
                    work.append((kind, "POST", "/items", _payload([f"load-{n}"], rng, names, dims, args.missing_share)))
                elif KINDS[kind] == "users_for_item":
                    work.append((kind, "GET", f"/items/pre-{rng.integers(args.items)}/users?k={args.k}", None))
                else:
                    work.append((kind, "GET", f"/users/{users[rng.integers(len(users))]}/items?k={args.k}", None))
            local = threading.local()

            def send(request):
                kind, method, path, body = request
                if not hasattr(local, "client"):
                    local.client = httpx.Client(base_url=url, timeout=120)
                start = time.perf_counter()
                try:
                    status = local.client.request(method, path, json=body).status_code
                except httpx.HTTPError as error:
                    status = type(error).__name__
                return kind, time.perf_counter() - start, status

            began = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.clients) as pool:
                results = list(pool.map(send, work))
            wall = time.perf_counter() - began
        finally:
            process.terminate()
            process.wait(timeout=60)

    expected = {0: 201, 1: 200, 2: 200}
    errors = [(KINDS[kind], status) for kind, _, status in results if status != expected[kind]]
    latency = np.array([seconds for _, seconds, _ in results]) * 1000
    kind_of = np.array([kind for kind, _, _ in results])
    figures = {"clients": args.clients, "requests": args.requests, "registered_before": args.items,
               "index": args.index, "preload_seconds": round(preload, 2), "wall_seconds": round(wall, 2),
               "requests_per_second": round(args.requests / wall, 1), "errors": len(errors),
               "p50_ms": round(float(np.percentile(latency, 50)), 2),
               "p99_ms": round(float(np.percentile(latency, 99)), 2)}
    for index, kind in enumerate(KINDS):
        chosen = latency[kind_of == index]
        if len(chosen):
            figures.update({f"{kind}_requests": len(chosen),
                            f"{kind}_p50_ms": round(float(np.percentile(chosen, 50)), 2),
                            f"{kind}_p99_ms": round(float(np.percentile(chosen, 99)), 2)})
    for key, value in figures.items():
        print(f"{key}: {value}")
    if errors:
        print(f"first errors: {errors[:5]}")
    return figures


if __name__ == "__main__":
    sys.exit(1 if main()["errors"] else 0)
