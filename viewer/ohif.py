"""The pinned OHIF release: fetched with npm's own client, integrity-checked, ``dist/`` unpacked.

``npm install @ohif/app`` does not work (3.13.2 depends on ``@ohif/i18n@3.13.2``, which npm does not
have) and would pull a whole build toolchain for nothing; the package's prebuilt ``dist/`` is all we
serve (as Microsoft's dicom-ohif does). So: ``npm pack @ohif/app@<version>`` (the tarball alone, from
the registry and npm's cache), compare its sha512 with :data:`INTEGRITY`, unpack ``package/dist``.

Left out: ``dist/ort`` (136 MB of onnxruntime-web for OHIF's in-browser segmentation tools; our AI
runs server-side) and source maps. What remains is about 68 MB.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Final

PACKAGE: Final = "@ohif/app"
VERSION: Final = "3.13.2"
#: sha512 of the npm tarball (``npm view @ohif/app@3.13.2 dist.integrity``).
INTEGRITY: Final = "sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
ROOT: Final = Path(__file__).resolve().parent
CACHE: Final = ROOT / ".ohif"
SKIP: Final = ("dist/ort/",)


class FetchError(RuntimeError):
    """The viewer package could not be fetched or verified; the message says what to do."""


def dist_dir(cache: Path = CACHE) -> Path:
    return cache / VERSION / "dist"


def _stamp(cache: Path) -> Path:
    return cache / VERSION / ".complete"


def integrity_of(path: Path) -> str:
    h = hashlib.sha512()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha512-" + base64.b64encode(h.digest()).decode()


def _skipped(name: str) -> bool:
    rel = name.removeprefix("package/")
    return not rel.startswith("dist/") or rel.startswith(SKIP) or rel.endswith(".map")


def unpack(tarball: Path, cache: Path = CACHE) -> Path:
    """Check ``tarball`` against :data:`INTEGRITY` and unpack its ``dist/`` (without :data:`SKIP`)."""
    got = integrity_of(tarball)
    if got != INTEGRITY:
        raise FetchError(f"{tarball.name}: integrity {got[:24]}... is not the pinned {INTEGRITY[:24]}...; "
                         "delete npm's cache entry (npm cache clean --force) and retry")
    target = cache / VERSION
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    with tarfile.open(tarball, "r:gz") as tar:
        members = [m for m in tar.getmembers() if (m.isfile() or m.isdir()) and not _skipped(m.name)]
        for m in members:
            m.name = m.name.removeprefix("package/")
        tar.extractall(target, members=members, filter="data")
    if not (target / "dist" / "index.html").is_file():
        raise FetchError(f"{tarball.name} has no dist/index.html: is {PACKAGE}@{VERSION} the prebuilt viewer?")
    _stamp(cache).write_text(json.dumps({"package": PACKAGE, "version": VERSION, "integrity": INTEGRITY}))
    return target / "dist"


def fetch(cache: Path = CACHE, *, npm: str = "npm") -> Path:
    """The unpacked ``dist/`` of the pinned release, fetched on first use."""
    if _stamp(cache).is_file() and (dist_dir(cache) / "index.html").is_file():
        return dist_dir(cache)
    if shutil.which(npm) is None:
        raise FetchError("npm is not on PATH: install Node 20 (npm fetches the OHIF viewer package)")
    with tempfile.TemporaryDirectory(prefix="ohif-") as tmp:
        try:
            out = subprocess.run([npm, "pack", f"{PACKAGE}@{VERSION}", "--json", "--pack-destination", tmp],
                                 capture_output=True, text=True, timeout=600, check=True)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            tail = (getattr(exc, "stderr", "") or "").strip().splitlines()[-1:] or [type(exc).__name__]
            raise FetchError(f"npm pack {PACKAGE}@{VERSION} failed ({tail[0]}); check that the npm registry "
                             "is reachable") from None
        try:
            name = json.loads(out.stdout)[0]["filename"]
        except (ValueError, LookupError):
            raise FetchError(f"npm pack {PACKAGE}@{VERSION} printed no file name; retry") from None
        return unpack(Path(tmp) / name, cache)
