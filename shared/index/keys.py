"""PartitionKey / RowKey encoding: the only place keys are built.

Table keys may not contain ``/ \\ # ?`` or control characters and are limited to
1 KiB. UIDs are validated before they get here (digits and dots), so they are used
as they are; free-text values (PatientID, AccessionNumber, names, rule names) are escaped
with :func:`escape`, which is reversible and order-preserving for ASCII prefixes so
that wildcard prefixes become key ranges.

The key schema, table by table (:mod:`shared.index.tables` owns the names):

* instances: PK = StudyInstanceUID. Instance rows ``<series>_<sop>``; the study's change
  entries (its outbox, see :class:`shared.index.records.ChangeEntry`) ``~c~<seq>``, after
  every instance row (``~`` sorts after digits); the settle state ``~settle``, last.
* series: PK = StudyInstanceUID, RK = SeriesInstanceUID. studies: PK = StudyInstanceUID, RK
  ``study``.
* lookup: StudyDate and Modality, PK ``<kind>:<value>`` (see :class:`Lookup`), the RowKey says where
  the match lives; PatientID, AccessionNumber and name tokens, PK ``<kind>+<n>`` (one of
  :data:`VALUE_SHARDS` partitions, see :func:`value_lookup_keys`), RK ``<value>%~<study>``. Study lookup
  rows carry the study's fields, so a QIDO study query needs no second read.
* uid lookup: the series and SOP UID lookups in their own table (QIDO reads them by point reads
  only): PK ``uid:<shard>``, sharded by their *study*, RK ``<kind>:<uid>`` (a study's series and SOP
  lookups in one batch when it settles; a query by UID alone asks every shard).
* pending: PK = StudyInstanceUID, RK = SeriesInstanceUID: series that arrived and are not
  yet stable (QIDO reads them so what ingest archived is found at once).
* changefeed: PK ``<yyyymmddHH>-<shard>`` (hour buckets, :data:`FEED_SHARDS` shards per hour so
  no partition runs hot), RK = the zero-padded sequence.
* deliveries: PK = StudyInstanceUID, RK ``<rule>~<destination>~<unit>``.
* extended tags: PK ``tag``, RK the tag's path (``00180050``); the errors of one tag, PK
  ``err~<path>``, RK ``<study>_<series>_<sop>``.
* operations: PK = the operation id (32 hex digits), RK ``op``; a study held by a bulk update, PK
  ``lock~<StudyInstanceUID>``, RK ``lock`` (one operation per study at a time).
* sync: PK ``follow`` (RK = the peer region: the follower's cursor), ``wait-<peer>`` (RK = the zero-padded
  sequence of a peer change-feed entry whose file has not arrived yet), ``reindex`` (RK = the container:
  where an interrupted reindex resumes).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import unicodedata

_FORBIDDEN = set("/\\#?%") | {chr(c) for c in range(0x20)} | {chr(0x7F)}
MAX_KEY_CHARS = 400  # well inside the 1 KiB key limit even for 2-byte characters
#: Sorts after every key it bounds: an upper bound for prefix ranges.
_TOP = "\U0010ffff"


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
    ``Yamada^Tarou=山田^太郎=やまだ^たろう`` → {yamada, tarou, 山田, 太郎, やまた, たろう}."""
    tokens: set[str] = set()
    for group in pn.split("="):
        for comp in group.replace(" ", "^").split("^"):
            norm = normalize_name(comp)
            if norm:
                tokens.add(norm)
    return tokens


def shard_of(uid: str, shards: int = 10) -> str:
    """A UID's shard: its last digit (UIDs end in well-spread digits) folded into ``shards``."""
    digit = int(uid[-1]) if uid and uid[-1].isdigit() else 0
    return str(digit % shards)


# -- instances / series / studies ----------------------------------------------

def instance_keys(study: str, series: str, sop: str) -> tuple[str, str]:
    return study, f"{series}_{sop}"


def series_row_range(series: str) -> tuple[str, str]:
    """RowKey range [lo, hi) of one series' instance rows in its study partition."""
    return f"{series}_", f"{series}`"  # '`' sorts right after '_'


#: RowKey range [lo, hi) of every instance row of a study partition (change entries sort after).
INSTANCE_ROWS = ("0", "~")
CHANGE_PREFIX = "~c~"
#: RowKey range [lo, hi) of the study's change entries.
CHANGE_ROWS = (CHANGE_PREFIX, CHANGE_PREFIX + _TOP)


def change_keys(study: str, seq: int) -> tuple[str, str]:
    """A change entry of the study's outbox, ordered by sequence."""
    return study, f"{CHANGE_PREFIX}{seq:020d}"


def series_keys(study: str, series: str) -> tuple[str, str]:
    return study, series


def study_keys(study: str) -> tuple[str, str]:
    return study, "study"


#: RowKey of a study's settle state in its instances partition (after its change entries: ``s`` > ``c``).
SETTLE_STATE = "~settle"


def settle_state_keys(study: str) -> tuple[str, str]:
    """The study's settle state (what the last run derived, and the run holding the study), read with the
    study's partition and written in one transaction with its changes marked published."""
    return study, SETTLE_STATE


def pending_keys(study: str, series: str) -> tuple[str, str]:
    return study, series


# -- lookup rows -----------------------------------------------------------------

class Lookup:
    """Lookup kinds. Date and modality: partition ``<kind>:<value>``, the RowKey says where the match lives;
    PatientID, AccessionNumber, name tokens: :func:`value_lookup_keys`; series and SOP UIDs:
    :func:`uid_lookup_keys`."""

    PATIENT_ID = "pid"
    ACCESSION = "acc"
    STUDY_DATE = "date"
    MODALITY = "mod"
    NAME = "pn"
    SERIES = "se"
    SOP = "sop"


#: Shards of the series and SOP UID lookups (by the study UID's last digit): one SOP row per instance, so at
#: 3,000 instances/s about 600 rows/s per shard, inside the account's 2,000 entities/s per partition.
UID_SHARDS = 5
#: Partitions per kind of the value lookups (PatientID, AccessionNumber, name tokens). A partition per value
#: made a settle run write one batch per value, about five per study; in a few shared partitions, a group run
#: (a process's arrival group, a backfill chunk) writes the lookups of all its studies in a batch or so per
#: partition. Sized for the account's partition target (2,000 entities/s): at 3,000 single-image studies/s,
#: about 400 PatientID rows/s per partition.
VALUE_SHARDS = 8
#: Ends the value in a value lookup's RowKey. Escaped text never holds it (``%`` is always followed by two
#: hex digits there), so the rows of exactly one value are the RowKeys that start with ``<value>%~``.
_VALUE_END = "%~"


def lookup_pk(kind: str, value: str) -> str:
    """The partition of a date or modality lookup (``<kind>:<value>``)."""
    return f"{kind}:{escape(value)}"


def _value_shard(kind: str, escaped: str) -> int:
    """PatientID and AccessionNumber: a digest of the whole value (site-wide prefixes such as ``RAD2026``
    would put every row in one partition); a query by value reads one partition, by prefix all of them.
    Name tokens: the first character, so a name prefix query (``SMI*``, the common one) reads one."""
    if kind == Lookup.NAME:
        return ord(escaped[0]) % VALUE_SHARDS
    return int.from_bytes(hashlib.blake2b(escaped.encode(), digest_size=2).digest(), "big") % VALUE_SHARDS


def value_lookup_keys(kind: str, value: str, study: str) -> tuple[str, str]:
    """The (PartitionKey, RowKey) of a PatientID, AccessionNumber or name-token lookup row of ``study``
    (``value`` not empty)."""
    v = escape(value)
    return f"{kind}+{_value_shard(kind, v)}", f"{v}{_VALUE_END}{study}"


def value_lookup_ranges(kind: str, value: str, *, prefix: bool = False) -> list[tuple[str, tuple[str, str]]]:
    """Where the lookup rows of ``value`` are (or with ``prefix``, of every value starting with it): each
    partition to read with its RowKey range [lo, hi). ``value`` not empty."""
    v = escape(value)
    lo = v if prefix else v + _VALUE_END
    if prefix and kind != Lookup.NAME:
        return [(f"{kind}+{n}", (lo, lo + _TOP)) for n in range(VALUE_SHARDS)]
    return [(f"{kind}+{_value_shard(kind, v)}", (lo, lo + _TOP))]


def study_of_value_row(row_key: str) -> str:
    """The study a value lookup row names."""
    return row_key.rsplit(_VALUE_END, 1)[-1]


def uid_lookup_keys(kind: str, study: str, uid: str) -> tuple[str, str]:
    """The (PartitionKey, RowKey) of a series or SOP UID lookup row: ``uid:<shard of the study>`` and
    ``<kind>:<uid>``, so settle writes a study's series and SOP lookups in one batch (and a group run those
    of its studies in one batch per shard); a query by UID alone reads one point in each of
    :data:`UID_SHARDS` shards."""
    return f"uid:{shard_of(study, UID_SHARDS)}", f"{kind}:{uid}"


def uid_lookup_points(kind: str, uid: str) -> list[tuple[str, str]]:
    """Where a series or SOP UID's lookup row can be (one point per shard)."""
    return [(f"uid:{n}", f"{kind}:{uid}") for n in range(UID_SHARDS)]


def is_uid_lookup(pk: str) -> bool:
    """A series or SOP UID lookup partition (kept in their own table: point reads only)."""
    return pk.startswith("uid:")


def modality_row_key(study_date: str | None, study: str, series: str) -> str:
    """Modality lookups sort by study date, so Modality + StudyDate is one range query."""
    return f"{study_date or 'none'}_{study}_{series}"


def modality_date_range(low: str | None, high: str | None) -> tuple[str, str]:
    """RowKey range of a Modality lookup partition for StudyDate in [low, high] (inclusive)."""
    return f"{low or '0'}", f"{high or '99999999'}`"


def study_date_value(study_date: str | None) -> str:
    return study_date or "none"


def date_range(low: str | None, high: str | None) -> tuple[str, str]:
    """PartitionKey range [lo, hi) of StudyDate lookups with low <= date <= high."""
    return lookup_pk(Lookup.STUDY_DATE, low or "0"), lookup_pk(Lookup.STUDY_DATE, high or "99999999") + _TOP


# -- change feed ---------------------------------------------------------------------

FEED_SHARDS = 4


def feed_bucket(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y%m%d%H")


def feed_keys(when: dt.datetime, seq: int, study: str) -> tuple[str, str]:
    """A feed entry: hour bucket of its time, a shard by study (a settle run's entries share a
    partition, so they go in one batch), RowKey the sequence."""
    return f"{feed_bucket(when)}-{shard_of(study, FEED_SHARDS)}", f"{seq:020d}"


#: The row that remembers the feed's first bucket (so an open window need not start in 1970).
FEED_HEAD = ("~head", "first")


def feed_partitions(bucket: str) -> list[str]:
    return [f"{bucket}-{n}" for n in range(FEED_SHARDS)]


def feed_buckets_range(first: str, last: str) -> tuple[str, str]:
    """PartitionKey range [lo, hi) of every shard of the hour buckets ``first`` to ``last`` (inclusive;
    the head row, ``~head``, sorts after every bucket and is never in it)."""
    return first, last + "~"


def bucket_of_partition(pk: str) -> str:
    return pk.split("-", 1)[0]


def feed_row_range(low_seq: int, high_seq: int) -> tuple[str, str]:
    """RowKey range [lo, hi) of sequences low <= seq < high."""
    return f"{low_seq:020d}", f"{high_seq:020d}"


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
    return lo, lo + _TOP


# -- sync: the peer follower and reindex ----------------------------------------------------------

def follow_cursor_keys(peer: str) -> tuple[str, str]:
    """The follower's position in the change feed of region ``peer``."""
    return "follow", peer


def follow_wait_partition(peer: str) -> str:
    """Entries of ``peer``'s change feed whose file has not been replicated here yet."""
    return f"wait-{peer}"


def follow_wait_keys(peer: str, seq: int) -> tuple[str, str]:
    return follow_wait_partition(peer), f"{seq:020d}"


def reindex_keys(container: str) -> tuple[str, str]:
    """Where an interrupted ``reindex`` of ``container`` resumes."""
    return "reindex", container


# -- extended query tags and operations ----------------------------------------------------------

EXTENDED_TAG_PARTITION = "tag"


def extended_tag_keys(path: str) -> tuple[str, str]:
    """An extended query tag's row (``path`` is 8 upper-case hex digits, validated before)."""
    return EXTENDED_TAG_PARTITION, path


def extended_error_partition(path: str) -> str:
    """The partition of one extended query tag's indexing errors."""
    return f"err~{path}"


def extended_error_keys(path: str, study: str, series: str, sop: str) -> tuple[str, str]:
    return extended_error_partition(path), f"{study}_{series}_{sop}"


def operation_keys(operation_id: str) -> tuple[str, str]:
    """A long-running operation's row (its id is 32 hex digits)."""
    return operation_id, "op"


OPERATION_ROW = "op"


def study_lock_keys(study: str) -> tuple[str, str]:
    """The row naming the bulk update that holds a study (one at a time), beside the operation rows."""
    return f"lock~{study}", "lock"


def studies_from(study: str | None) -> tuple[str, str]:
    """PartitionKey range [lo, hi) of every study UID from ``study`` on (all of them for None)."""
    return study or "0", _TOP
