"""highdicom writers: a binary DICOM Segmentation and a TID 1500 Comprehensive 3D SR.

UIDs of results are derived deterministically (``pydicom.uid.generate_uid`` with
``entropy_srcs``) from the source series UID, the model's name and version and the
object kind, so a re-delivered event produces the same SOP Instance UIDs and the
ingest path replaces the earlier result instead of adding a duplicate.

Both objects are recognisably derived without reading our code: the SEG's Image
Type is ``DERIVED\\PRIMARY`` (highdicom sets it) and both SOP classes (SEG, SR) are
derived by definition; the index should flag either signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from shared.inference.model import ImageSet, Prediction

#: pydicom's UID root, documented for generated UIDs; a site may pass its own.
UID_PREFIX = "1.2.826.0.1.3680043.8.498."
MANUFACTURER = "dicomflow"
IMAGING_PROCEDURE = Code("363679005", "SCT", "Imaging procedure")
SEG_SERIES_NUMBER = 9901
SR_SERIES_NUMBER = 9902


@dataclass(frozen=True, slots=True)
class ResultUids:
    seg_series: str
    seg_sop: str
    sr_series: str
    sr_sop: str
    device: str

    @classmethod
    def derive(
        cls, source_series_uid: str, model: str, version: str, *, source_sop_uid: str = "", prefix: str = UID_PREFIX
    ) -> ResultUids:
        """UIDs for the results of ``model`` on a series (or on one image of it: ``source_sop_uid``).

        Result series are one per source series and model version; instances are one
        per source series (volumes) or per source image (projection images).
        """

        def uid(*parts: str) -> str:
            return str(generate_uid(prefix=prefix, entropy_srcs=[source_series_uid, model, version, *parts]))

        return cls(
            seg_series=uid("seg-series"),
            seg_sop=uid("seg-instance", source_sop_uid),
            sr_series=uid("sr-series"),
            sr_sop=uid("sr-instance", source_sop_uid),
            device=str(generate_uid(prefix=prefix, entropy_srcs=[model, version, "device"])),
        )


def _algorithm(model: str, version: str) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(name=model, version=version, family=codes.cid7162.ArtificialIntelligence)


def write_segmentation(
    images: ImageSet, prediction: Prediction, model: str, version: str, uids: ResultUids, *, instance_number: int = 1
) -> Dataset:
    """A binary SEG with one segment over the source images (same frame order as ``images``)."""
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=prediction.segment_label,
        segmented_property_category=prediction.category,
        segmented_property_type=prediction.segment_type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=_algorithm(model, version),
    )
    mask = prediction.mask.astype(np.uint8)
    if not images.is_volume:
        mask = mask[0]
    seg = hd.seg.Segmentation(
        source_images=images.datasets,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=uids.seg_series,
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=uids.seg_sop,
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=model,
        software_versions=version,
        device_serial_number=uids.device[-16:],
        series_description=f"AI {model} {version} SEG"[:64],
        omit_empty_frames=False,
    )
    if "PatientOrientation" not in seg and "FrameOfReferenceUID" not in seg:
        # Type 2C for images without a frame of reference (projection radiography).
        seg.PatientOrientation = images.datasets[0].get("PatientOrientation", "")
    return seg


def write_report(
    images: ImageSet,
    prediction: Prediction,
    seg: Dataset,
    model: str,
    version: str,
    uids: ResultUids,
    *,
    instance_number: int = 1,
) -> Dataset:
    """A TID 1500 Measurement Report whose measurements reference the SEG's segment 1."""
    algorithm = hd.sr.AlgorithmIdentification(name=model, version=version)
    tracking = hd.sr.TrackingIdentifier(
        uid=str(generate_uid(prefix=UID_PREFIX, entropy_srcs=[uids.seg_sop, "tracking"])),
        identifier=prediction.segment_label,
    )
    measurements = [
        hd.sr.Measurement(name=m.name, value=m.value, unit=m.unit, algorithm_id=algorithm)
        for m in prediction.measurements
    ]
    group: Any
    if images.is_volume:
        group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=seg.SOPClassUID,
                sop_instance_uid=seg.SOPInstanceUID,
                segment_number=1,
                source_series=hd.sr.SourceSeriesForSegmentation(images.datasets[0].SeriesInstanceUID),
            ),
            finding_type=prediction.segment_type,
            algorithm_id=algorithm,
            measurements=measurements,
        )
    else:
        group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            referenced_segment=hd.sr.ReferencedSegmentationFrame(
                sop_class_uid=seg.SOPClassUID,
                sop_instance_uid=seg.SOPInstanceUID,
                frame_number=1,
                segment_number=1,
                source_image=hd.sr.SourceImageForSegmentation.from_source_image(images.datasets[0]),
            ),
            finding_type=prediction.segment_type,
            algorithm_id=algorithm,
            measurements=measurements,
        )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=uids.device, name=model, manufacturer_name=MANUFACTURER, model_name=version
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=IMAGING_PROCEDURE,
        imaging_measurements=[group],
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*images.datasets, seg],
        content=report,
        series_instance_uid=uids.sr_series,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=uids.sr_sop,
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=f"AI {model} {version} measurements"[:64],
    )
    _drop_frame_with_segment(sr)
    return sr


def _drop_frame_with_segment(ds: Dataset) -> None:
    """PS3.3 C.17.3: Referenced Segment Number shall not be present with Referenced Frame Number.

    highdicom writes both for a planar segmentation reference; the SEG has one frame
    per source image here, so the segment number alone is the exact reference.
    """
    for item in ds.get("ReferencedSOPSequence", []):
        if "ReferencedSegmentNumber" in item and "ReferencedFrameNumber" in item:
            del item.ReferencedFrameNumber
    for item in ds.get("ContentSequence", []):
        _drop_frame_with_segment(item)
