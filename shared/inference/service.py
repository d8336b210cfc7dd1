"""One inference run per ``Dicom.SeriesStable`` event: archive → models → SEG + SR → inbox.

Results are uploaded to the inbox (``dicom-inbox/ai/<model>/<sop>.dcm``, a
deterministic name) so the ordinary ingest path archives, indexes and announces
them like any other instance. A result already archived with the same content is
not uploaded again (:func:`already_archived`): running twice on the same input, as
a re-delivered or reprocessed event does, adds nothing. Derived input (our own
results, any SEG/SR/KO/PR) never runs a model: the subscription filters on
``data.derived`` and this module checks again.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite

from shared.config import Settings
from shared.dicom import facts
from shared.errors import BadInput, Reason
from shared.events.payloads import DicomEvent, base_data, subject_for
from shared.events.types import EventType
from shared.inference import pixels
from shared.inference.model import VOLUME_MODALITIES, ImageSet, Model, SeriesInfo
from shared.inference.registry import Factories, load_models
from shared.inference.writers import ResultUids, write_report, write_segmentation
from shared.ports import BlobStore
from shared.services import Services
from shared.storage import layout

log = logging.getLogger(__name__)

#: A series larger than this is skipped (the worker's memory is the limit, not the model).
MAX_INSTANCES = 2000
MAX_BYTES = 1 << 30


@dataclass(frozen=True, slots=True)
class ResultObject:
    sop_class_uid: str
    series_uid: str
    sop_uid: str
    inbox_blob: str


@dataclass(slots=True)
class ModelResult:
    model: str
    version: str
    priority: bool
    measurements: dict[str, float]
    objects: list[ResultObject] = field(default_factory=list)


@dataclass(slots=True)
class InferenceOutcome:
    study_uid: str
    series_uid: str
    results: list[ModelResult] = field(default_factory=list)
    skipped: str | None = None  # why nothing ran (a reason code), or None

    @property
    def priority(self) -> bool:
        return any(r.priority for r in self.results)


def series_info(data: Mapping[str, Any]) -> SeriesInfo:
    """The event's ``data`` (DESIGN.md section 5 field names) as :class:`SeriesInfo`."""
    study = str(data.get("imageStudyInstanceUid") or data.get("studyInstanceUid") or "")
    series = str(data.get("imageSeriesInstanceUid") or data.get("seriesInstanceUid") or "")
    if not study or not series:
        raise BadInput(Reason.INFERENCE_BAD_EVENT, "Event data needs imageStudyInstanceUid and imageSeriesInstanceUid.")
    modality = data.get("modality") or ""
    if isinstance(modality, list):  # a study-level event may list modalities
        modality = modality[0] if len(modality) == 1 else ""
    return SeriesInfo(
        study_uid=study,
        series_uid=series,
        modality=str(modality),
        sop_class_uid=str(data.get("sopClassUid") or ""),
        instance_count=int(data.get("numberOfInstances") or data.get("instanceCount") or 0),
        derived=bool(data.get("derived", False)),
    )


def is_derived(info: SeriesInfo) -> bool:
    """The event says so, or the one rule (:func:`shared.dicom.facts.is_derived`) does."""
    return info.derived or facts.is_derived(info.sop_class_uid, info.modality)


def read_series(blobs: BlobStore, info: SeriesInfo) -> list[Dataset]:
    """Every archived instance of the series, decoded lazily by pydicom (pixels on access)."""
    items = [b for b in blobs.list(layout.ARCHIVE, layout.series_prefix(info.study_uid, info.series_uid))
             if b.name.endswith(".dcm")]
    if len(items) > MAX_INSTANCES or sum(b.size for b in items) > MAX_BYTES:
        raise BadInput(Reason.INFERENCE_TOO_LARGE, f"Series has {len(items)} instances; the limit is {MAX_INSTANCES}.")
    out: list[Dataset] = []
    for b in items:
        buf = io.BytesIO()
        blobs.download_to(layout.ARCHIVE, b.name, buf)
        buf.seek(0)
        out.append(dcmread(buf))
    return out


def image_sets(info: SeriesInfo, datasets: list[Dataset]) -> list[tuple[str, ImageSet]]:
    """(source SOP key, image set): one per series for volumes, one per image otherwise."""
    with_pixels = [ds for ds in datasets if "PixelData" in ds]
    if not with_pixels:
        raise BadInput(Reason.INFERENCE_NO_PIXELS, "The series has no instances with pixel data.")
    modality = info.modality or str(with_pixels[0].get("Modality", ""))
    if modality in VOLUME_MODALITIES:
        ordered, px, spacing = pixels.load_volume(with_pixels)
        return [("", ImageSet(ordered, px, spacing, is_volume=True))]
    out = []
    for ds in sorted(with_pixels, key=lambda d: (int(d.get("InstanceNumber", 0) or 0), str(d.SOPInstanceUID))):
        px, spacing = pixels.load_projection(ds)
        out.append((str(ds.SOPInstanceUID), ImageSet([ds], px, spacing, is_volume=False)))
    return out


def _to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


#: What two runs of a model on the same input differ in: creation times, and the Dimension Organization
#: UID highdicom draws anew for every SEG. A result equal to the archived one but for these is not written
#: again, so a re-delivered or reprocessed event adds nothing (while a changed input replaces its results).
RUN_SPECIFIC = frozenset({"InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime",
                          "ContributionDateTime", "DimensionOrganizationUID"})


def _strip_run_specific(ds: Dataset) -> None:
    for el in list(ds):
        if el.keyword in RUN_SPECIFIC:
            del ds[el.tag]
        elif el.VR == "SQ":
            for item in el.value:
                _strip_run_specific(item)


def _comparable(ds: Dataset) -> bytes:
    copy = deepcopy(ds)
    _strip_run_specific(copy)
    return _to_bytes(copy)


def already_archived(blobs: BlobStore, ds: Dataset) -> bool:
    """The archive holds this result already (same UIDs, same content but for :data:`RUN_SPECIFIC`)."""
    path = layout.instance_path(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
    stored = blobs.read(layout.ARCHIVE, path)
    return stored is not None and _comparable(dcmread(io.BytesIO(stored))) == _comparable(ds)


def inbox_name(model: str, sop_uid: str) -> str:
    return layout.ai_result_inbox_path(model, sop_uid)


def run_models(
    info: SeriesInfo, datasets: list[Dataset], models: list[Model]
) -> list[tuple[ModelResult, list[Dataset]]]:
    """Pure part: run every accepting model; return results with the datasets to store."""
    out: list[tuple[ModelResult, list[Dataset]]] = []
    chosen = [m for m in models if m.accepts(info)]
    if not chosen:
        return out
    sets = image_sets(info, datasets)
    for model in chosen:
        result = ModelResult(model.name, model.version, priority=False, measurements={})
        written: list[Dataset] = []
        for number, (sop_key, images) in enumerate(sets, start=1):
            prediction = model.predict(images)
            if prediction is None:
                continue
            uids = ResultUids.derive(info.series_uid, model.name, model.version, source_sop_uid=sop_key)
            seg = write_segmentation(images, prediction, model.name, model.version, uids, instance_number=number)
            sr = write_report(images, prediction, seg, model.name, model.version, uids, instance_number=number)
            written += [seg, sr]
            result.priority = result.priority or prediction.priority
            for m in prediction.measurements:
                key = f"{m.name.meaning} ({m.unit.value})"
                result.measurements[key] = result.measurements.get(key, 0.0) + m.value
        if written:
            out.append((result, written))
    return out


def run_inference(data: Mapping[str, Any], blobs: BlobStore, *, models: list[Model] | None = None,
                  factories: Factories | None = None) -> InferenceOutcome:
    """Run the registry's models on the series named by an event's ``data``; upload results.

    Nothing to do (a derived series, no model accepts it) is an outcome with a ``skipped``
    reason; bad input (no pixel data, no geometry, a bad event) raises :class:`BadInput`, which
    :func:`handle_event` (the one boundary) turns into a skipped outcome; storage failures
    propagate (the trigger retries).
    """
    info = series_info(data)
    outcome = InferenceOutcome(info.study_uid, info.series_uid)
    if is_derived(info):
        outcome.skipped = Reason.DERIVED_INPUT
        return outcome
    if models is None:
        models = load_models(blobs, factories)
    if not any(m.accepts(info) for m in models):
        outcome.skipped = Reason.NO_MODEL_ACCEPTS
        return outcome
    produced = run_models(info, read_series(blobs, info), models)
    for result, datasets in produced:
        written = 0
        for ds in datasets:
            name = inbox_name(result.model, str(ds.SOPInstanceUID))
            if not already_archived(blobs, ds):
                blobs.write(layout.INBOX, name, _to_bytes(ds), content_type="application/dicom")
                written += 1
            obj = ResultObject(str(ds.SOPClassUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), name)
            result.objects.append(obj)
        outcome.results.append(result)
        log.info(
            "Inference %s %s on series %s: %d objects (%d written, %d unchanged), priority=%s",
            result.model,
            result.version,
            info.series_uid,
            len(result.objects),
            written,
            len(result.objects) - written,
            result.priority,
        )
    if not outcome.results:
        outcome.skipped = Reason.NO_FINDING
    return outcome


def completed_events(outcome: InferenceOutcome, settings: Settings) -> list[DicomEvent]:
    """``Dicom.InferenceCompleted`` per model that produced results (UIDs and numbers only)."""
    events = []
    for result in outcome.results:
        data = base_data(
            settings.service_host_name,
            settings.partition_name,
            outcome.study_uid,
            outcome.series_uid,
            None,
            f"{result.model}|{result.version}",
        )
        data.update(
            {
                "model": result.model,
                "modelVersion": result.version,
                "priority": result.priority,
                "measurements": result.measurements,
                "derived": False,
                "results": [
                    {"sopClassUid": o.sop_class_uid, "seriesInstanceUid": o.series_uid, "sopInstanceUid": o.sop_uid}
                    for o in result.objects
                ],
            }
        )
        events.append(
            DicomEvent(EventType.INFERENCE_COMPLETED, subject_for(outcome.study_uid, outcome.series_uid), data)
        )
    return events


def handle_event(data: Mapping[str, Any], svc: Services) -> InferenceOutcome:
    """The service boundary for the ``inference`` function: run, then announce the results.

    Bad event data is logged and dropped (retrying cannot fix it); storage and
    publishing failures propagate so the event is delivered again (the result UIDs
    are deterministic, so a retry replaces rather than duplicates).
    """
    try:
        outcome = run_inference(data, svc.blobs, factories=Factories(svc.settings.inference_factories))
    except BadInput as exc:
        series = str(data.get("imageSeriesInstanceUid") or "")
        log.warning("Inference on series %s skipped: %s (%s)", series or "?", exc.reason, exc.message)
        return InferenceOutcome(str(data.get("imageStudyInstanceUid") or ""), series, skipped=exc.reason)
    events = completed_events(outcome, svc.settings)
    if events:
        svc.publisher.publish(events)
    if outcome.skipped:
        log.info("Inference on series %s: nothing to do (%s)", outcome.series_uid, outcome.skipped)
    return outcome
