"""Assemble a servable OHIF site: the pinned ``dist/`` plus our ``app-config.js``.

Locally the site is a folder of symbolic links into the unpacked package (instant, no copy) with a
generated ``app-config.js``; ``copy=True`` writes real files (what a static-site deployment uploads).
OHIF's paths are absolute: serve the folder at an origin root.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from viewer import ohif
from viewer.config import Oidc, app_config_js

CONFIG_NAME = "app-config.js"
#: Azure Static Web Apps: client-side routes (/viewer, /callback) get index.html; files are served as they are.
SWA_CONFIG = {
    "navigationFallback": {"rewrite": "/index.html",
                           "exclude": ["/assets/*", "*.{js,mjs,css,wasm,json,png,svg,ico,woff2,txt,map}"]},
    "mimeTypes": {".wasm": "application/wasm", ".mjs": "text/javascript"},
    "globalHeaders": {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"},
}


def build(out: Path, dicomweb_root: str, *, oidc: Oidc | None = None, copy: bool = False,
          dist: Path | None = None) -> Path:
    """Write the site into ``out`` (replaced); returns ``out``."""
    source = dist or ohif.fetch()
    out = Path(out)
    if out.is_symlink() or out.is_file():
        out.unlink()
    elif out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for entry in sorted(source.iterdir()):
        if entry.name == CONFIG_NAME:
            continue
        target = out / entry.name
        if not copy:
            os.symlink(entry.resolve(), target, target_is_directory=entry.is_dir())
        elif entry.is_dir():
            shutil.copytree(entry, target)
        else:
            shutil.copy2(entry, target)
    (out / CONFIG_NAME).write_text(app_config_js(dicomweb_root, oidc), encoding="utf-8")
    (out / "staticwebapp.config.json").write_text(json.dumps(SWA_CONFIG, indent=2), encoding="utf-8")
    return out
