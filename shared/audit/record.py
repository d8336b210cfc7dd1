"""Audit records: DICOM PS3.15 A.5 (IHE ATNA, RFC 3881) messages as JSON.

One record per access to or change of patient data. Field names follow the DICOM audit message schema
(PS3.15 A.5.1): ``EventIdentification`` (``EventID``, ``EventActionCode``, ``EventDateTime``,
``EventOutcomeIndicator``, ``EventTypeCode``), ``ActiveParticipant`` (``UserID``, ``UserIsRequestor``,
``RoleIDCode``, ``NetworkAccessPointID``/``TypeCode``), ``AuditSourceIdentification`` and
``ParticipantObjectIdentification`` (studies by Study Instance UID, with their series and SOP instances in
``ParticipantObjectDescription``; the patient only as a digest of the Patient ID; a query as the names of its
keys, never their values). A record never holds a name, an ID, a birth date or an accession number.

The codes (PS3.16 DCM and RFC 3881) used here are the constants below: the one list.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson


@dataclass(frozen=True, slots=True)
class Code:
    code: str
    system: str
    display: str

    def to_json(self) -> dict[str, str]:
        return {"csd-code": self.code, "codeSystemName": self.system, "originalText": self.display}


# -- EventID (PS3.15 A.5.3) ---------------------------------------------------------------------------------
APPLICATION_ACTIVITY: Final = Code("110100", "DCM", "Application Activity")
AUDIT_LOG_USED: Final = Code("110101", "DCM", "Audit Log Used")
INSTANCES_ACCESSED: Final = Code("110103", "DCM", "DICOM Instances Accessed")
INSTANCES_TRANSFERRED: Final = Code("110104", "DCM", "DICOM Instances Transferred")
STUDY_DELETED: Final = Code("110105", "DCM", "DICOM Study Deleted")
QUERY: Final = Code("110112", "DCM", "Query")
SECURITY_ALERT: Final = Code("110113", "DCM", "Security Alert")

# -- EventTypeCode ------------------------------------------------------------------------------------------
SOFTWARE_CONFIGURATION: Final = Code("110131", "DCM", "Software Configuration")
#: Local codes (no DCM code exists for these): what kind of access an event was.
CHANGE_FEED: Final = Code("change-feed", "dicomflow", "Change feed read")
STORAGE_COMMITMENT: Final = Code("storage-commitment", "dicomflow", "Storage Commitment")
METADATA: Final = Code("metadata", "dicomflow", "Metadata, frames or bulk data read")
UPDATE: Final = Code("update", "dicomflow", "Attributes updated")

# -- RoleIDCode ---------------------------------------------------------------------------------------------
SOURCE: Final = Code("110153", "DCM", "Source Role ID")
DESTINATION: Final = Code("110152", "DCM", "Destination Role ID")
APPLICATION: Final = Code("110150", "DCM", "Application")

# -- EventActionCode, EventOutcomeIndicator (RFC 3881) ------------------------------------------------------
CREATE, READ, UPDATE_ACTION, DELETE, EXECUTE = "C", "R", "U", "D", "E"
SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE, MAJOR_FAILURE = 0, 4, 8, 12

# -- ParticipantObject codes --------------------------------------------------------------------------------
PERSON, SYSTEM_OBJECT = 1, 2
ROLE_PATIENT, ROLE_REPORT, ROLE_SECURITY_RESOURCE, ROLE_QUERY = 1, 3, 13, 24
PATIENT_NUMBER: Final = Code("2", "RFC-3881", "Patient Number")
STUDY_INSTANCE_UID: Final = Code("110180", "DCM", "Study Instance UID")
SOP_CLASS_UID: Final = Code("110181", "DCM", "SOP Class UID")
URI: Final = Code("12", "RFC-3881", "URI")
#: The SOP class a QIDO-RS search stands for (Study Root Query/Retrieve - FIND).
STUDY_ROOT_FIND: Final = "1.2.840.10008.5.1.4.1.2.2.1"


def outcome_of_status(status: int) -> int:
    """EventOutcomeIndicator of an HTTP status: success, 4 for 4xx (refused), 8 for 5xx (failed)."""
    return SUCCESS if status < 400 else MINOR_FAILURE if status < 500 else SERIOUS_FAILURE


def patient_digest(patient_id: str, salt: str = "") -> str:
    """A Patient ID as the audit trail keeps it: ``sha256:<hex>`` of the salt and the ID (never the ID)."""
    return "sha256:" + hashlib.sha256(f"{salt}\x00{patient_id.strip()}".encode()).hexdigest()


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Actor:
    """An ActiveParticipant: a user (token subject), an application entity (AE title) or this service."""

    user_id: str
    requestor: bool = True
    #: App roles (reader, writer, admin) or DICOM role codes of the participant in this event.
    roles: tuple[str, ...] = ()
    role_codes: tuple[Code, ...] = ()
    #: Where it connected from (IP address or host name).
    address: str | None = None
    #: A readable name for the identity (``kind`` of principal, AE title), never a person's name.
    alternative: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"UserID": self.user_id, "UserIsRequestor": self.requestor}
        if self.alternative:
            out["AlternativeUserID"] = self.alternative
        codes = [c.to_json() for c in self.role_codes]
        codes += [Code(r, "dicomflow-app-role", r).to_json() for r in self.roles]
        if codes:
            out["RoleIDCode"] = codes
        if self.address:
            out["NetworkAccessPointID"] = self.address
            out["NetworkAccessPointTypeCode"] = "2" if _is_ip(self.address) else "1"
        return out


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


#: At most this many instances are listed per record (a larger access lists its studies and series, and says so).
MAX_INSTANCES: Final = 1000


@dataclass(slots=True)
class Subjects:
    """The patient data an event touched: UIDs by study, patient ID digests, the query's key names."""

    studies: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)  # study -> series -> sop -> class
    patients: set[str] = field(default_factory=set)  # digests
    query_keys: list[str] = field(default_factory=list)
    query_class: str | None = None
    #: Other objects (configuration documents, the audit log): URIs.
    resources: list[str] = field(default_factory=list)
    #: More instances were touched than are listed (:data:`MAX_INSTANCES`).
    truncated: bool = False
    instances: int = 0

    def add(self, study: str | None, series: str | None = None, sop: str | None = None,
            sop_class: str | None = None) -> None:
        if not study:
            return
        series_map = self.studies.setdefault(study, {})
        if series:
            sops = series_map.setdefault(series, {})
            if sop and sop not in sops:
                if self.instances >= MAX_INSTANCES:
                    self.truncated = True
                    return
                self.instances += 1
                sops[sop] = sop_class or ""
            elif sop and sop_class:
                sops[sop] = sop_class

    def add_patient(self, patient_id: object, salt: str) -> None:
        if isinstance(patient_id, str) and patient_id.strip():
            self.patients.add(patient_digest(patient_id, salt))

    def add_views(self, views: Iterable[Mapping[str, Any]], salt: str) -> None:
        """Search results (QIDO-RS, C-FIND): their UIDs and patients."""
        for v in views:
            self.add(_str(v.get("StudyInstanceUID")), _str(v.get("SeriesInstanceUID")),
                     _str(v.get("SOPInstanceUID")), _str(v.get("SOPClassUID")))
            self.add_patient(v.get("PatientID"), salt)

    @property
    def empty(self) -> bool:
        return not (self.studies or self.patients or self.query_keys or self.resources)

    def objects(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for digest in sorted(self.patients):
            out.append({"ParticipantObjectTypeCode": PERSON, "ParticipantObjectTypeCodeRole": ROLE_PATIENT,
                        "ParticipantObjectIDTypeCode": PATIENT_NUMBER.to_json(), "ParticipantObjectID": digest})
        for study, series in self.studies.items():
            description: dict[str, Any] = {}
            by_class: dict[str, list[str]] = {}
            for sops in series.values():
                for sop, cls in sops.items():
                    by_class.setdefault(cls, []).append(sop)
            if series:
                description["Series"] = sorted(series)
            if by_class:
                description["SOPClass"] = [{"UID": cls, "NumberOfInstances": len(sops), "Instance": sorted(sops)}
                                           for cls, sops in sorted(by_class.items())]
            obj: dict[str, Any] = {"ParticipantObjectTypeCode": SYSTEM_OBJECT,
                                   "ParticipantObjectTypeCodeRole": ROLE_REPORT,
                                   "ParticipantObjectIDTypeCode": STUDY_INSTANCE_UID.to_json(),
                                   "ParticipantObjectID": study}
            if self.truncated:
                description["Truncated"] = True
            if description:
                obj["ParticipantObjectDescription"] = description
            out.append(obj)
        if self.query_keys or self.query_class:
            out.append({"ParticipantObjectTypeCode": SYSTEM_OBJECT, "ParticipantObjectTypeCodeRole": ROLE_QUERY,
                        "ParticipantObjectIDTypeCode": SOP_CLASS_UID.to_json(),
                        "ParticipantObjectID": self.query_class or STUDY_ROOT_FIND,
                        "ParticipantObjectDetail": [{"type": "QueryKeys", "value": ",".join(self.query_keys)}]})
        for uri in self.resources:
            out.append({"ParticipantObjectTypeCode": SYSTEM_OBJECT,
                        "ParticipantObjectTypeCodeRole": ROLE_SECURITY_RESOURCE,
                        "ParticipantObjectIDTypeCode": URI.to_json(), "ParticipantObjectID": uri})
        return out


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class AuditRecord:
    event: Code
    action: str
    outcome: int
    participants: Sequence[Actor]
    subjects: Subjects
    source: str
    site: str = ""
    types: Sequence[Code] = ()
    #: What happened, in words with no patient data (an HTTP status, a DIMSE status, a count).
    description: str = ""
    at: str = field(default_factory=now_iso)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_json(self) -> dict[str, Any]:
        ident: dict[str, Any] = {"EventID": self.event.to_json(), "EventActionCode": self.action,
                                 "EventDateTime": self.at, "EventOutcomeIndicator": self.outcome}
        if self.types:
            ident["EventTypeCode"] = [t.to_json() for t in self.types]
        if self.description:
            ident["EventOutcomeDescription"] = self.description
        source: dict[str, Any] = {"AuditSourceID": self.source, "AuditSourceTypeCode": "4"}
        if self.site:
            source["AuditEnterpriseSiteID"] = self.site
        return {"id": self.id, "EventIdentification": ident,
                "ActiveParticipant": [p.to_json() for p in self.participants],
                "AuditSourceIdentification": source,
                "ParticipantObjectIdentification": self.subjects.objects()}

    def line(self) -> bytes:
        return orjson.dumps(self.to_json()) + b"\n"


# -- reading records back (the audit query) --------------------------------------------------------------------

def studies_of(doc: Mapping[str, Any]) -> set[str]:
    return {str(o.get("ParticipantObjectID")) for o in doc.get("ParticipantObjectIdentification", [])
            if o.get("ParticipantObjectIDTypeCode", {}).get("csd-code") == STUDY_INSTANCE_UID.code}


def patients_of(doc: Mapping[str, Any]) -> set[str]:
    return {str(o.get("ParticipantObjectID")) for o in doc.get("ParticipantObjectIdentification", [])
            if o.get("ParticipantObjectTypeCode") == PERSON}


def requestors_of(doc: Mapping[str, Any]) -> set[str]:
    return {str(p.get("UserID")) for p in doc.get("ActiveParticipant", []) if p.get("UserIsRequestor")}


def time_of(doc: Mapping[str, Any]) -> str:
    return str(doc.get("EventIdentification", {}).get("EventDateTime", ""))
