"""Serve new items over HTTP from a trained model's artefact, registering them as they are uploaded.

    pip install ".[serve]"
    python -m recbole_milk.serve --artifact saved/MILK-....artifact.pt --store new_items_store/ --port 8000

POST /items registers items ({"items": [{"id": ..., "features": {modality: [numbers] or null}}]}),
GET /items/{id}/users?k=K and GET /users/{user}/items?k=K answer, DELETE /items/{id} removes, GET /health checks.
Registered items persist in --store, so a restart answers the same. --port 0 takes a free port; the line
"serving on http://HOST:PORT" on stdout says which. Every problem with the options, the artefact, the store or the
address is reported before the server starts.
"""
import argparse
import importlib.util
import socket
from typing import List, Optional

from recbole_milk.cli import run_cli
from recbole_milk.errors import ConfigError, UserInputError

SERVE_PACKAGES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "faiss": "faiss-cpu"}


def parse_arguments(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from recbole_milk.search import DEFAULT_EF_SEARCH, INDEX_KINDS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", required=True, help="the .artifact.pt written beside the checkpoint")
    parser.add_argument("--store", required=True, help="folder that keeps the registered items (created if absent)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 takes a free port")
    parser.add_argument("--index", choices=INDEX_KINDS, default="exact",
                        help="exact inner product, or approximate HNSW for millions of items")
    parser.add_argument("--ef_search", type=int, default=DEFAULT_EF_SEARCH,
                        help="HNSW candidates visited per search: higher is slower and closer to exact")
    parser.add_argument("--batch_size", type=int, default=1024, help="items encoded at once")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a TCP port; give 1-65535, or 0 for a free one.")
    return args


def _check_serve_extra() -> None:
    missing = [package for module, package in SERVE_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise UserInputError(f"The service needs {missing}, which are not installed: pip install \".[serve]\" (from "
                             "a checkout of recbole-milk).")


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port and listening, so a taken port is reported before anything is served."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise ConfigError(f"--host {host!r} does not resolve ({error.strerror}); give an address such as "
                          "127.0.0.1.") from None
    sock = socket.socket(family, kind, protocol)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise ConfigError(f"Cannot listen on {host}:{port} ({error.strerror}); choose another --port, or 0 for a "
                          "free one.") from None
    sock.listen(2048)
    return sock


def main(argv: Optional[List[str]] = None) -> None:
    _check_serve_extra()
    args = parse_arguments(argv)
    # The serving stack loads only now that it is known to be installed.
    import uvicorn

    from recbole_milk.compat import apply_numpy_aliases
    from recbole_milk.http_api import create_app
    from recbole_milk.inference import NewItemScorer
    from recbole_milk.item_store import ItemStore, artifact_fingerprint
    from recbole_milk.service import NewItemService

    apply_numpy_aliases()
    scorer = NewItemScorer.from_artifact(args.artifact, device=args.device, batch_size=args.batch_size)
    dim = int(scorer.user_embeddings().shape[1])
    store = ItemStore(args.store, dim, artifact_fingerprint(args.artifact))
    try:
        service = NewItemService(scorer, store, index_kind=args.index, ef_search=args.ef_search)
        sock = listening_socket(args.host, args.port)
        print(f"serving on http://{args.host}:{sock.getsockname()[1]} ({service.n_users} users, {len(store)} "
              f"registered items, {args.index} index)", flush=True)
        server = uvicorn.Server(uvicorn.Config(create_app(service), log_level="info", access_log=False))
        server.run(sockets=[sock])
    finally:
        store.close()


if __name__ == "__main__":
    run_cli(main)
