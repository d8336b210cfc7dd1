"""OHIF in a real browser: Debian's chromium driven by Playwright against the real app on the devhost.

One devhost (its own in-memory Azurite, so the study list holds only this test's studies) serves the app,
the development OpenID issuer and the viewer site (``--static``, built by ``viewer.build`` for this
stack: OIDC sign-in against the devhost's issuer). Data goes in the way a modality's does: blob uploads to
the inbox; the built-in AI model writes a SEG for the CT series. Then, in one browser:

1. a radiologist signs in with the reader role; the study list shows the studies, with names in Latin,
   Cyrillic and CJK scripts;
2. opens the CT study in the Basic Viewer: the viewport is not blank (pixel variance of a screenshot);
3. loads the AI SEG as an overlay (OHIF fetches the whole SEG instance): red-tinted pixels appear;
4. a user whose token has only the writer role gets the error screen and sees no study;
5. a pathologist opens a whole-slide image (``tools.corpus.make_wsi``: a TILED_FULL JPEG pyramid, levels with
   an empty Basic Offset Table and with an Extended Offset Table) in OHIF's microscopy mode: tiles render.

Screenshots go to ``test-artifacts/viewer/`` (git-ignored), kept after the run.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pydicom
import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient
from PIL import Image
from playwright import sync_api as playwright_api
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from devhost.azurite import ephemeral, free_port
from devhost.testing import DevHostProcess
from shared.inference.registry import ENABLE_BUILTIN
from shared.storage import layout
from tests.e2e.conftest import REAL_APP_ENV, REAL_APP_EVENTS, REAL_APP_SETTINGS, ROOT
from tests.phantoms import ellipsoid_ct

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "test-artifacts" / "viewer"
CLIENT_ID = "dicomflow-viewer"
NAMES = {"latin": ("Müller^Jürgen", "Müller, Jürgen"), "cyrillic": ("Иванов^Пётр", "Иванов, Пётр"),
         "cjk": ("山田^太郎", "山田, 太郎")}
#: The middle of a rendered CT slice (air, body, lung) varies far more than this; a blank or flat one does not.
MIN_VARIANCE = 100.0
#: Pixels that turned clearly red: the SEG overlay (OHIF paints the first segment red).
MIN_RED_PIXELS = 500


def _bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _named(ds: Dataset, name: str) -> Dataset:
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = name
    return ds


def corpus(run: str) -> tuple[list[Dataset], str]:
    """A CT series (Latin name) for the AI model, plus one-slice studies with Cyrillic and CJK names."""
    ct = [_named(ds, NAMES["latin"][0]) for ds in ellipsoid_ct(tag=f"viewer-{run}", size=64, pixel_mm=2.8,
                                                                 slice_mm=10.0)]
    for ds in ct:
        ds.StudyDescription = "CT CHEST (phantom)"
        ds.WindowCenter, ds.WindowWidth = 40, 400  # a soft-tissue window, as scanners write one
    extra = []
    for n, key in enumerate(("cyrillic", "cjk"), 1):
        ds = copy.deepcopy(ct[len(ct) // 2])
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = (generate_uid() for _ in range(3))
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID = f"VIEWER-{run}-{n}"
        ds.StudyDate = f"2026110{n}"
        extra.append(_named(ds, NAMES[key][0]))
    return ct + extra, str(ct[0].SeriesInstanceUID)


def slide_files(folder: Path, run: str) -> list[Path]:
    """The synthetic slide pyramid of ``tools.corpus`` (fresh UIDs per run)."""
    from tools.corpus import UidFactory, make_patients, make_study, make_wsi

    uids = UidFactory(int(run, 16) % 100_000)
    patient = dataclasses.replace(make_patients(1, seed=uids.seed)[0], name="Slide^Synthetic", charset="ISO_IR 100",
                                  patient_id=f"VIEWER-{run}-SM")  # not one of the CT patients' names
    return make_wsi(folder, make_study(patient, uids, f"slide-{run}", description="PATHOLOGY SLIDE H&E"), uids)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: run 'make peers' (apt-get install chromium)")
    from viewer.build import build
    from viewer.config import Oidc

    base = tmp_path_factory.mktemp("viewer")
    azurite = ephemeral(base / "azurite")
    azurite.start()
    static_port = free_port()
    origin = f"http://127.0.0.1:{static_port}"
    env = {**REAL_APP_ENV, "DICOMFLOW_CORS_ORIGINS": origin}
    dh = DevHostProcess(azurite=azurite, env=env, settings=REAL_APP_SETTINGS, events=REAL_APP_EVENTS,
                        state_dir=base / "devhost")
    site = build(base / "site", f"{dh.base_url}/dicomweb", oidc=Oidc(dh.issuer, CLIENT_ID))
    dh.extra_args += ["--static", str(site), "--static-port", str(static_port)]
    try:
        with dh:
            blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
            for container in (layout.CONFIG, layout.INBOX):
                try:
                    blobs.create_container(container)
                except ResourceExistsError:
                    pass
            blobs.get_blob_client(layout.CONFIG, layout.MODELS_DOC).upload_blob(ENABLE_BUILTIN, overwrite=True)
            run = uuid.uuid4().hex[:8]
            datasets, ct_series = corpus(run)
            inbox = blobs.get_container_client(layout.INBOX)
            for k, ds in enumerate(datasets):
                inbox.upload_blob(f"viewer-{run}/{k:03d}.dcm", _bytes(ds), overwrite=True)
            slide = slide_files(base / "slide", run)
            for path in slide:
                inbox.upload_blob(f"viewer-{run}/slide/{path.name}", path.read_bytes(), overwrite=True)
            slide_study = str(pydicom.dcmread(slide[0], stop_before_pixels=True).StudyInstanceUID)
            dh.wait_for_event(lambda e: e.get("type") == "Dicom.InferenceCompleted"
                              and e["data"]["imageSeriesInstanceUid"] == ct_series, timeout=120)
            for study in {str(ds.StudyInstanceUID) for ds in datasets} | {slide_study}:
                dh.wait_for_event(lambda e, s=study: e.get("type") == "Dicom.StudyStable"
                                  and e["data"]["imageStudyInstanceUid"] == s, timeout=60)
            yield {"dh": dh, "url": origin + "/", "ct_series": ct_series, "slide_study": slide_study,
                   "slide_series": str(pydicom.dcmread(slide[0], stop_before_pixels=True).SeriesInstanceUID),
                   "storage": azurite.connection_string,
                   "ct": [ds for ds in datasets if str(ds.SeriesInstanceUID) == ct_series]}
    finally:
        azurite.stop()


@pytest.fixture(scope="module")
def browser(stack: dict[str, Any]) -> Iterator[Any]:
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def sign_in(page: Any, url: str, roles: set[str]) -> None:
    """The development issuer's sign-in page: pick the roles, submit; back in the viewer."""
    page.goto(url)
    page.wait_for_url("**/issuer/authorize**", timeout=30_000)
    for role in ("reader", "writer", "admin"):
        page.set_checked(f"input[name=role][value={role}]", role in roles)
    page.click("button[type=submit]")
    page.wait_for_url(url.rstrip("/") + "/**", timeout=30_000)


def dismiss(page: Any, text: str) -> None:
    """Close one of OHIF's first-visit notices (investigational use, the tour) if it shows up."""
    button = page.get_by_text(text, exact=True)
    try:
        button.wait_for(state="visible", timeout=5_000)
    except playwright_api.TimeoutError:
        return
    button.click()


def pixels(page: Any, locator: Any, name: str) -> np.ndarray:
    path = ARTIFACTS / f"{name}.png"
    locator.screenshot(path=str(path))
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def poll(what: str, probe: Callable[[], tuple[bool, Any]], timeout: float = 30.0) -> Any:
    """Call ``probe`` until it says done (bounded); returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        done, value = probe()
        if done:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {value})")
        time.sleep(0.3)


def go_to_slice(page: Any, viewport: Any, wanted: int, total: int) -> None:
    """Scroll the stack (mouse wheel) until the viewport's "I: n (n/total)" overlay says ``wanted``."""
    pattern = re.compile(rf"\((\d+)/{total}\)")
    viewport.hover()
    for _ in range(3 * total):
        found = pattern.search(page.locator("body").inner_text())
        current = int(found.group(1)) if found else 1
        if current == wanted:
            return
        page.mouse.wheel(0, 120 if current < wanted else -120)
        page.wait_for_timeout(100)  # one wheel step renders before the next is read
    raise AssertionError(f"could not scroll to slice {wanted} of {total}")


def centre(img: np.ndarray) -> np.ndarray:
    """The middle half of a viewport screenshot: image only, no overlay text or empty margins."""
    h, w = img.shape[:2]
    return img[h // 4: 3 * h // 4, w // 4: 3 * w // 4]


def red_pixels(img: np.ndarray) -> int:
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    return int(((r - g > 40) & (r - b > 40)).sum())


def test_a_reader_lists_studies_reads_the_ct_and_overlays_the_ai_seg(stack: dict[str, Any], browser: Any) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    dicomweb: list[tuple[int, str, str]] = []
    page.on("response", lambda r: dicomweb.append((r.status, r.request.method, r.url))
            if "/api/dicomweb/" in r.url else None)
    sign_in(page, stack["url"], {"reader"})
    dismiss(page, "Confirm and hide")
    for _, shown in NAMES.values():
        page.get_by_text(shown, exact=True).wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "1-study-list.png"))
    assert all(status == 200 for status, _, _ in dicomweb), dicomweb

    page.get_by_text(NAMES["latin"][1], exact=True).click()
    page.get_by_role("button", name="Basic Viewer").click()
    page.wait_for_url("**/viewer?**")
    dismiss(page, "Skip all")
    viewport = page.locator("canvas.cornerstone-canvas").first
    viewport.wait_for(timeout=30_000)
    go_to_slice(page, viewport, len(stack["ct"]) // 2 + 1, len(stack["ct"]))  # the first is air only

    def rendered() -> tuple[bool, float]:
        v = float(centre(pixels(page, viewport, "2-ct-viewport")).var())
        return v > MIN_VARIANCE, v

    variance = poll("the CT image renders", rendered)
    before = red_pixels(centre(pixels(page, viewport, "2-ct-viewport")))
    assert before < MIN_RED_PIXELS / 10  # grey CT: nothing red yet

    seg = page.locator("[data-cy^=study-browser-thumbnail]", has_text="SEG").first
    seg.dblclick()

    def overlaid() -> tuple[bool, int]:
        n = red_pixels(centre(pixels(page, viewport, "3-ct-seg-viewport")))
        return n > MIN_RED_PIXELS, n

    red = poll("the AI SEG is overlaid", overlaid)
    whole = [(s, u) for s, m, u in dicomweb if "/instances/" in u and "/frames/" not in u and "/metadata" not in u]
    assert whole and all(s == 200 for s, _ in whole), whole  # OHIF's SEG loader fetched the whole instance
    dismiss(page, "Yes")  # "Do you want to open this Segmentation?": into the segmentation panel
    go_to_slice(page, viewport, len(stack["ct"]) // 2 + 1, len(stack["ct"]))  # loading it jumped elsewhere
    page.screenshot(path=str(ARTIFACTS / "3-ct-seg.png"))
    assert not [u for s, _, u in dicomweb if s >= 400], "failed DICOMweb requests"
    print(f"viewport variance {variance:.0f}, SEG red pixels {red}")
    context.close()


def test_a_token_without_the_reader_role_gets_an_error_and_no_data(stack: dict[str, Any], browser: Any) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if "/api/dicomweb/" in r.url else None)
    sign_in(page, stack["url"], {"writer"})
    page.get_by_text("Data Source Connection Error").wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "4-no-reader-role.png"))
    assert statuses and set(statuses) == {403}
    text = page.locator("body").inner_text()
    assert not any(shown in text for _, shown in NAMES.values())
    context.close()


def test_a_pathologist_opens_a_slide_in_the_microscopy_mode(stack: dict[str, Any], browser: Any) -> None:
    """OHIF's microscopy mode (dicom-microscopy-viewer) on our DICOMweb: the slide's tiles arrive as JPEG frames
    by ranged reads and are drawn: the map's canvas shows the pink tissue on white, every request answered."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    dicomweb: list[tuple[int, str]] = []
    page.on("response", lambda r: dicomweb.append((r.status, r.url)) if "/api/dicomweb/" in r.url else None)
    page.goto(f"{stack['url']}microscopy?StudyInstanceUIDs={stack['slide_study']}")  # a link to the slide
    page.wait_for_url("**/issuer/authorize**", timeout=30_000)  # sign in, then OHIF returns to the link
    page.set_checked("input[name=role][value=reader]", True)
    page.click("button[type=submit]")
    page.wait_for_url("**/microscopy**", timeout=30_000)

    def tissue() -> tuple[bool, int]:
        canvases = page.locator(".ol-layer canvas, .ol-viewport canvas")
        if canvases.count() == 0:
            return False, 0
        img = pixels(page, page.locator(".ol-viewport").first, "5-slide")
        r, g, b = img[..., 0], img[..., 1], img[..., 2]
        pink = int(((r > 180) & (g < 190) & (b > 140) & (r - g > 30)).sum())  # stroma: (233, 150, 190) in JPEG
        return pink > 2000, pink

    started = time.monotonic()
    pink = poll("the slide's tiles render", tissue, timeout=60)
    print(f"slide drawn {time.monotonic() - started:.1f} s after sign-in")
    # The pyramid's series metadata (what the viewer asked first) is one storage read: a three-level
    # pyramid is a small series, served from its instance rows in one table query.
    from shared.config import Settings
    from shared.dicomweb.wado import Wado
    from shared.services import Services

    svc = Services.from_settings(Settings.from_env({"DicomStorage": stack["storage"]}))
    meta = Wado(svc.blobs, svc.index).series_metadata(None, "http://h/api/dicomweb", stack["slide_study"],
                                                      stack["slide_series"])
    assert svc.requests.snapshot() == {"table GET": 1}
    assert len(orjson.loads(meta.body)) == 3
    frames = [(s, u) for s, u in dicomweb if "/frames/" in u]
    assert frames and all(s == 200 for s, _ in frames), frames
    assert not [u for s, u in dicomweb if s >= 400], "failed DICOMweb requests"
    page.screenshot(path=str(ARTIFACTS / "5-slide.png"))
    print(f"slide: {len(frames)} frame requests, {pink} tissue pixels")
    context.close()
