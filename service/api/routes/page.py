"""``GET /``: a small page to try the model in a browser (HTML/CSS/JS in ``service/api/static/``).

The page itself talks to the public API only (``/metadata``, ``/classify``), so it needs no
server-side state and honours the API key like any other client.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import FileResponse

STATIC = Path(__file__).resolve().parents[1] / "static"  # service/api/static
# A fixed list, not a directory listing: nothing else under static/ (or above it) is servable.
ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}
# Revalidate on every load so a redeployed service never runs a stale script against a new API.
NO_CACHE = {"Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=NO_CACHE)


@router.get("/static/{name}")
async def asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise StarletteHTTPException(404, f"no static file {name!r}")
    return FileResponse(STATIC / name, media_type=media_type, headers=NO_CACHE)
