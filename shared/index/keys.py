"""PartitionKey / RowKey encoding: the only place keys are built.

Table keys may not contain ``/ \\ # ?`` or control characters and are limited to
1 KiB. UIDs are validated before they get here (digits and dots), so they are used
as they are; free-text values (PatientID, AccessionNumber, names) are escaped
with :func:`escape`, which is reversible and order-preserving for ASCII prefixes so
that wildcard prefixes become key ranges.
"""

from __future__ import annotations

import hashlib
import unicodedata

_FORBIDDEN = set("/\\#?%") | {chr(c) for c in range(0x20)} | {chr(0x7F)}
MAX_KEY_CHARS = 400  # well inside the 1 KiB key limit even for 2-byte characters


def escape(value: str) -> str:
    """Escape characters Table keys forbid as ``%XX`` (``%`` itself included)."""
    out: list[str] = []
    for ch in value:
        if ch in _FORBIDDEN or 0x80 <= ord(ch) <= 0x9F:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
        else:
            out.append(ch)
    text = "".join(out)
    if len(text) > MAX_KEY_CHARS:
        # Over-long values keep a readable prefix plus a digest: still exact-matchable.
        text = text[:MAX_KEY_CHARS - 17] + "~" + hashlib.sha256(value.encode()).hexdigest()[:16]
    return text


def normalize_name(value: str) -> str:
    """Case- and accent-insensitive form of a name for matching: NFKD, combining marks
    dropped, casefolded (``Müller`` → ``muller``; CJK unchanged)."""
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()


def name_tokens(pn: str) -> set[str]:
    """Every component of every representation of a DICOM person name, normalized:
    ``Yamada^Tarou=山田^太郎=やまだ^たろう`` → {yamada, tarou, 山田, 太郎, やまだ, たろう}."""
    tokens: set[str] = set()
    for group in pn.split("="):
        for comp in group.replace(" ", "^").split("^"):
            norm = normalize_name(comp)
            if norm:
                tokens.add(norm)
    return tokens


# -- instances / series / studies ----------------------------------------------

def instance_keys(study: str, series: str, sop: str) -> tuple[str, str]:
    return study, f"{series}_{sop}"


def series_keys(study: str, series: str) -> tuple[str, str]:
    return study, series


def study_keys(study: str) -> tuple[str, str]:
    return study, "study"


SETTLE_MARKER_ROW = "~settle"
"""RowKey of the per-study marker in the instances table (arrival clock for debouncing)."""


def series_row_range(series: str) -> tuple[str, str]:
    """RowKey range [lo, hi) of one series' instance rows in its study partition."""
    return f"{series}_", f"{series}`"  # '`' sorts right after '_'


# -- lookup rows -----------------------------------------------------------------

class Lookup:
    """Lookup partitions: ``<kind>:<value>``; RowKey says where the match lives."""

    PATIENT_ID = "pid"
    ACCESSION = "acc"
    STUDY_DATE = "date"
    MODALITY = "mod"
    NAME = "pn"
    SERIES = "se"
    SOP = "sop"


def lookup_pk(kind: str, value: str) -> str:
    return f"{kind}:{escape(value)}"


def shard_of(uid: str) -> str:
    """UID lookups are sharded by the last digit: 10 partitions, no hot spot."""
    return uid[-1] if uid else "0"


def uid_lookup_pk(kind: str, uid: str) -> str:
    return f"{kind}:{shard_of(uid)}"


def prefix_range(kind: str, prefix: str) -> tuple[str, str]:
    """PartitionKey range [lo, hi) covering every escaped value starting with ``prefix``."""
    lo = f"{kind}:{escape(prefix)}"
    return lo, lo + "\U0010ffff"


# -- delivery ledger (routing) ----------------------------------------------------------

_DELIVERY_SEP = "~"


def _delivery_part(value: str) -> str:
    return escape(value).replace(_DELIVERY_SEP, "%7E")


def delivery_keys(study: str, rule: str, destination: str, unit: str) -> tuple[str, str]:
    """One ledger row per (study, rule, destination, unit). PartitionKey = StudyInstanceUID (a
    study's deliveries are one query and never contend across studies); RowKey =
    ``<rule>~<destination>~<unit>`` with rule and destination escaped (``~`` too, so the split
    is exact)."""
    return study, _delivery_prefix(rule, destination) + unit


def _delivery_prefix(rule: str, destination: str) -> str:
    return f"{_delivery_part(rule)}{_DELIVERY_SEP}{_delivery_part(destination)}{_DELIVERY_SEP}"


def delivery_range(rule: str, destination: str) -> tuple[str, str]:
    """RowKey range [lo, hi) of every ledger row of one (rule, destination) in a study partition."""
    lo = _delivery_prefix(rule, destination)
    return lo, lo + "\U0010ffff"


# -- ingest log --------------------------------------------------------------------------

def ingest_log_keys(blob_name: str) -> tuple[str, str]:
    """One row per inbox blob name; partitions spread by a hash of the name."""
    bucket = hashlib.sha1(blob_name.encode("utf-8")).hexdigest()[:2]  # noqa: S324 - bucketing, not security
    return bucket, escape(blob_name)
