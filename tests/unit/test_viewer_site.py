"""The viewer site (``viewer``) and the devhost's generic static server (``devhost.static``): pure logic on
temporary folders; the real OHIF package is exercised by tests/e2e/test_viewer_browser.py."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from devhost.static import StaticSite
from viewer import ohif
from viewer.build import build
from viewer.config import Oidc, app_config

ROOT_URL = "http://127.0.0.1:7071/api/dicomweb"


def fake_dist(tmp_path: Path) -> Path:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<html>ohif</html>")
    (dist / "app.bundle.js").write_text("bundle")
    (dist / "app-config.js").write_text("window.config = {upstream: true};")
    (dist / "assets" / "logo.svg").write_text("<svg/>")
    return dist


def test_config_points_every_root_at_our_dicomweb_and_signs_in_with_oidc() -> None:
    cfg = app_config(ROOT_URL + "/", Oidc("http://127.0.0.1:7072/issuer/", "dicomflow-viewer"))
    (source,) = cfg["dataSources"]
    c = source["configuration"]
    assert c["qidoRoot"] == c["wadoRoot"] == c["wadoUriRoot"] == ROOT_URL
    assert c["qidoSupportsIncludeField"] and c["supportsFuzzyMatching"] and c["imageRendering"] == "wadors"
    assert cfg["defaultDataSourceName"] == source["sourceName"]
    (oidc,) = cfg["oidc"]
    assert oidc["authority"] == "http://127.0.0.1:7072/issuer" and oidc["client_id"] == "dicomflow-viewer"
    assert oidc["response_type"] == "code" and oidc["redirect_uri"] == "/callback"
    assert "oidc" not in app_config(ROOT_URL)


def test_build_links_the_package_and_writes_our_config(tmp_path: Path) -> None:
    dist = fake_dist(tmp_path)
    site = build(tmp_path / "site", ROOT_URL, dist=dist)
    assert (site / "index.html").is_symlink() and (site / "index.html").read_text() == "<html>ohif</html>"
    config = (site / "app-config.js").read_text()
    assert not (site / "app-config.js").is_symlink() and "upstream" not in config and ROOT_URL in config
    assert json.loads((site / "staticwebapp.config.json").read_text())["navigationFallback"]["rewrite"] == "/index.html"
    copied = build(tmp_path / "copy", ROOT_URL, dist=dist, copy=True)
    assert not (copied / "assets").is_symlink() and (copied / "assets" / "logo.svg").is_file()
    assert (dist / "app-config.js").read_text() == "window.config = {upstream: true};"  # package untouched


def _tarball(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_unpack_refuses_a_tarball_that_is_not_the_pinned_one(tmp_path: Path) -> None:
    bad = _tarball(tmp_path / "ohif-app.tgz", {"package/dist/index.html": b"<html>evil</html>"})
    with pytest.raises(ohif.FetchError, match="integrity"):
        ohif.unpack(bad, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_unpack_keeps_dist_without_onnxruntime_or_source_maps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tgz = _tarball(tmp_path / "ohif-app.tgz", {
        "package/package.json": b"{}", "package/dist/index.html": b"<html/>", "package/dist/a.js": b"a",
        "package/dist/a.js.map": b"map", "package/dist/ort/big.wasm": b"w" * 100,
    })
    monkeypatch.setattr(ohif, "INTEGRITY", ohif.integrity_of(tgz))
    dist = ohif.unpack(tgz, tmp_path / "cache")
    assert sorted(p.name for p in dist.rglob("*")) == ["a.js", "index.html"]
    assert ohif.fetch(tmp_path / "cache") == dist  # unpacked once: no npm call the second time


def test_static_site_serves_files_falls_back_to_index_and_refuses_traversal(tmp_path: Path) -> None:
    dist = fake_dist(tmp_path)
    (tmp_path / "secret.txt").write_text("no")
    site = StaticSite(dist)
    assert site.resolve("/") == dist / "index.html"
    assert site.resolve("/assets/logo.svg") == dist / "assets" / "logo.svg"
    assert site.resolve("/viewer") == dist / "index.html"  # client-side route
    assert site.resolve("/callback") == dist / "index.html"
    assert site.resolve("/missing.js") is None  # a missing file is a 404, not the index
    assert site.resolve("/../secret.txt") is None
    assert site.resolve("/assets/../../secret.txt") is None
