"""``up --static DIR``: serve a folder of static files at an origin root (a single-page web app).

Generic: the devhost does not know what the folder holds (locally it is the OHIF viewer that
``python -m viewer build`` assembles). Paths that name no file and have no extension get
``index.html`` (client-side routes such as ``/viewer?StudyInstanceUIDs=...``); symbolic links inside
the folder are followed (a build may link to files elsewhere), ``..`` segments are refused.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path, PurePosixPath
from typing import Final

from aiohttp import web

DEFAULT_PORT: Final = 3000
_TYPES: Final = {".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
                 ".json": "application/json", ".css": "text/css", ".svg": "image/svg+xml",
                 ".woff2": "font/woff2", ".map": "application/json", ".html": "text/html"}


class StaticSite:
    def __init__(self, root: Path, index: str = "index.html") -> None:
        self.root = Path(root)
        self.index = index

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._get)
        app.router.add_route("HEAD", "/{tail:.*}", self._get)
        return app

    def resolve(self, url_path: str) -> Path | None:
        """The file for a URL path (SPA fallback to the index), or None."""
        parts = PurePosixPath("/" + url_path.lstrip("/")).parts[1:]
        if any(p in ("..", ".") or p.startswith("\\") for p in parts):
            return None
        candidate = self.root.joinpath(*parts) if parts else self.root
        if candidate.is_dir():
            candidate = candidate / self.index
        if candidate.is_file():
            return candidate
        if not parts or "." not in parts[-1]:
            fallback = self.root / self.index
            return fallback if fallback.is_file() else None
        return None

    async def _get(self, request: web.Request) -> web.StreamResponse:
        path = self.resolve(request.match_info.get("tail", ""))
        if path is None:
            return web.Response(status=404, text="not found")
        ctype = _TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        # index.html and the app config change between builds; hashed bundles never do.
        cache = "no-cache" if path.suffix in (".html", "") or path.name.endswith("config.js") else "max-age=3600"
        return web.FileResponse(path, headers={"Content-Type": ctype, "Cache-Control": cache})
