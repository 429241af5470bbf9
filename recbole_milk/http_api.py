"""The HTTP face of NewItemService (FastAPI): JSON in and out, user errors as 4xx with one message in "detail".

Endpoints are plain functions, so FastAPI runs them on its thread pool: requests proceed concurrently and the
service's lock orders their changes.
"""
from typing import Any, Dict, List, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictStr

from recbole_milk.errors import UserInputError
from recbole_milk.service import DuplicateItemError, NewItemService, UnknownItemError, UnknownUserError

DEFAULT_K = 10
_STATUS = {UnknownItemError: 404, UnknownUserError: 404, DuplicateItemError: 409}


class NewItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: StrictStr
    features: Dict[str, Optional[List[StrictFloat]]] = Field(default_factory=dict)


class NewItems(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: List[NewItem]


def _where(location: tuple, body: Any) -> str:
    """"Item 'x', modality 'visual', value 3" for the body location ('body', 'items', 0, 'features', 'visual', 3)."""
    source, parts = (location[0], list(location[1:])) if location else ("body", [])
    if source == "query":
        return f"Query parameter {'.'.join(map(str, parts))!r}"
    if len(parts) >= 2 and parts[0] == "items" and isinstance(parts[1], int):
        try:
            item = f"Item {body['items'][parts[1]]['id']!r}"
        except (KeyError, IndexError, TypeError):
            item = f"items[{parts[1]}]"
        rest = parts[2:]
        if len(rest) >= 2 and rest[0] == "features":
            return ", ".join([item, f"modality {rest[1]!r}"] + [f"value {p}" for p in rest[2:3]])
        return ", ".join([item] + [str(p) for p in rest])
    return ".".join(str(p) for p in parts) or "The request body"


def _problem(error: Dict[str, Any], body: Any) -> str:
    if error["type"] == "json_invalid":
        return (f"The request body is not valid JSON at character {error['loc'][-1]}: "
                f"{error.get('ctx', {}).get('error', error['msg'])}")
    return f"{_where(tuple(error['loc']), body)}: {error['msg']}"


def _invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
    problems = [_problem(e, error.body) for e in error.errors()[:3]]
    more = len(error.errors()) - len(problems)
    detail = "; ".join(problems) + (f"; and {more} more" if more > 0 else "")
    return JSONResponse({"detail": detail}, status_code=422)


def _user_error(request: Request, error: UserInputError) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=_STATUS.get(type(error), 422))


def create_app(service: NewItemService) -> FastAPI:
    """The FastAPI application serving `service`."""
    app = FastAPI(title="recbole-milk new-item service", description=__doc__)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(UserInputError, _user_error)

    @app.get("/health")
    def health() -> Dict[str, Any]:
        return {"status": "ok", "model": type(service.scorer.model).__name__, "users": service.n_users,
                "items": service.item_count(), "index": service.index_kind}

    @app.post("/items", status_code=201)
    def register(request: NewItems) -> Dict[str, Any]:
        ids = service.register([(item.id, item.features) for item in request.items])
        return {"registered": ids}

    @app.delete("/items/{item_id}")
    def delete(item_id: str) -> Dict[str, Any]:
        service.delete(item_id)
        return {"deleted": item_id}

    @app.get("/items/{item_id}/users")
    def users_for_item(item_id: str, k: int = DEFAULT_K) -> Dict[str, Any]:
        found = service.users_for_item(item_id, k)
        return {"item": item_id, "users": [{"user": user, "score": score} for user, score in found]}

    @app.get("/users/{user}/items")
    def items_for_user(user: str, k: int = DEFAULT_K) -> Dict[str, Any]:
        found = service.items_for_user(user, k)
        return {"user": user, "items": [{"item": item, "score": score} for item, score in found]}

    return app
