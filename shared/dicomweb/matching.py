"""PS3.4 C.2.2.2 attribute matching of index records against a :class:`QidoQuery`.

The index planner (``shared.index.query``) returns CANDIDATES; this module decides
which of them match exactly. A record is seen here as a *view*: a mapping from DICOM
keyword to a plain value (``str``, ``int``, a list of ``str`` for multi-valued
attributes such as ModalitiesInStudy, or ``None``).

Where we differ from the strict standard on purpose, the difference is a named rule
in :data:`DIFFERENCES`; tests (and the Orthanc cross-check) cite these names.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping
from typing import Any, Final

from shared.dicomweb.qido import Match, MatchKind, QidoQuery

#: Deliberate differences from (or choices within) PS3.4 C.2.2.2, by name.
DIFFERENCES: Final[dict[str, str]] = {
    "PN_CASE_ACCENT_INSENSITIVE": (
        "Person names match without regard to case or accents (NFKD, combining marks removed, casefolded): "
        "'muller' matches 'Müller'. The standard leaves PN case sensitivity to the SCP; accents are our choice."
    ),
    "PN_TRAILING_CARETS": "Trailing empty name components ('Doe^John^^^') are ignored on both sides.",
    "PN_ANY_GROUP": "A name with alphabetic/ideographic/phonetic groups matches if any group matches.",
    "PN_FUZZY_PREFIX": (
        "With fuzzymatching=true every word of the query (split on ^, space, comma) must be a prefix of "
        "some component of the name: 'joh' matches 'Doe^John'."
    ),
    "TEXT_TRIM_SPACES": "Leading and trailing spaces of text values are not significant (PS3.5 6.2 padding).",
    "TM_PARTIAL_AS_RANGE": (
        "A partial time ('10', '1030') matches every time it is a prefix of; an upper range bound "
        "'-1030' includes 10:30:59.999999."
    ),
    "DT_OFFSET_IGNORED": "UTC offsets in DT values are ignored (times compare as written).",
    "DATE_TIME_NOT_COMBINED": (
        "StudyDate and StudyTime ranges are matched independently, not as one combined datetime range "
        "(PS3.4 C.2.2.2.5.1 combined matching is not negotiated)."
    ),
    "LIST_ANY": r"Backslash-separated values (and UID lists separated by ',' or '\') match if any value matches.",
    "MULTI_VALUED_ANY": "A multi-valued attribute (ModalitiesInStudy) matches if any of its values matches.",
    # WADO-RS choices (not matching, listed here so every deliberate difference has one home).
    "RETRIEVE_AS_STORED": (
        "Instances and frames are sent in their stored transfer syntax unless the client names another "
        "(transfer-syntax=..., or for frames a part type whose default syntax differs, such as "
        "application/octet-stream for a compressed frame): then they are transcoded, or 406 names what we offer. "
        "Transcoded frames carry decoded colour (YBR_FULL/YBR_FULL_422 become RGB)."
    ),
    "FRAMES_ANY_SYNTAX": (
        'Frames asked for as type="application/octet-stream"; transfer-syntax=* (OHIF\'s default) are sent '
        "compressed as stored, each part labelled with its real media type (image/jpeg, image/jp2, ...)."
    ),
    "BULK_TAG_FIRST_MATCH": (
        "bulkdata/tag/<tag> (how nested binary values are addressed in our metadata) serves the top-level "
        "element, or else the first element with that tag found depth-first inside sequences."
    ),
    "STOW_IDEMPOTENT": "Storing an instance identical to one already stored succeeds (a retried STOW is a 200).",
}


def fold(text: str) -> str:
    """Case- and accent-insensitive form of a text (rule PN_CASE_ACCENT_INSENSITIVE)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _norm_pn(text: str) -> list[str]:
    groups = text.split("=") if text else [""]
    out = []
    for g in groups:
        comps = [c.strip() for c in g.split("^")]
        while comps and not comps[-1]:
            comps.pop()
        out.append(fold("^".join(comps)))
    return [g for g in out if g] or [""]


def _pn_words(text: str) -> list[str]:
    return [w for w in re.split(r"[\^\s,=]+", fold(text)) if w]


@functools.lru_cache(maxsize=4096)
def _segment(text: str) -> re.Pattern[str]:
    """One run of a wildcard pattern between ``*``: literal characters and ``?`` (any one character).
    It has a fixed length and no repetition, so the regular expression engine matches it without
    backtracking (linear in the text)."""
    return re.compile("".join("." if c == "?" else re.escape(c) for c in text), re.DOTALL)


def wildcard_match(pattern: str, text: str) -> bool:
    """PS3.4 C.2.2.2.4 wildcard matching: ``*`` any run of characters (none included), ``?`` any one.

    Never a backtracking regular expression (``*a*a*...*b`` against a long value takes exponential time
    there): the pattern is split at ``*`` into runs of fixed length; the first must start the value, the
    last must end it, and each one between is found leftmost after the previous one (for runs of fixed
    length the leftmost placement is always a safe choice). At most O(len(pattern) x len(text)) steps,
    each a search the regular expression engine runs in C.
    """
    runs = pattern.split("*")
    if len(runs) == 1:
        return _segment(pattern).fullmatch(text) is not None
    first, *middle, last = runs
    if len(first) + len(last) > len(text):
        return False
    if first and _segment(first).match(text) is None:
        return False
    end = len(text) - len(last)
    if last and _segment(last).fullmatch(text, end) is None:
        return False
    pos = len(first)
    for run in middle:
        if not run:
            continue
        found = _segment(run).search(text, pos, end)
        if found is None:
            return False
        pos = found.end()
    return True


def _norm_tm(value: str, *, upper: bool = False) -> str:
    v = value.replace(":", "").strip()
    whole, _, frac = v.partition(".")
    fill = "9" if upper else "0"
    if upper and not frac and len(whole) < 6:
        return (whole + fill * (6 - len(whole))) + "." + fill * 6
    return whole.ljust(6, fill) + "." + frac.ljust(6, fill)


def _norm_dt(value: str, *, upper: bool = False) -> str:
    v = re.sub(r"[+-]\d{4}$", "", value.strip())  # rule DT_OFFSET_IGNORED
    whole, _, frac = v.partition(".")
    fill = "9" if upper else "0"
    if len(whole) < 14:
        # Missing fields: the earliest instant for a lower bound, all 9s (above any real value) for an upper one.
        whole += ("9" * 14 if upper else "00000101000000")[len(whole) :]
        return whole + "." + fill * 6
    return whole + "." + frac.ljust(6, fill)


def _norm_da(value: str) -> str:
    return value.strip().replace(".", "").replace("-", "")


def _values(raw: Any) -> list[Any]:
    if raw is None:
        return []
    if isinstance(raw, list | tuple | set | frozenset):
        return [v for v in raw if v is not None and v != ""]
    if isinstance(raw, str):
        return [raw] if raw.strip() else []
    return [raw]


def match_one(m: Match, raw: Any, *, fuzzy: bool = False) -> bool:
    """Does the record value ``raw`` satisfy the matching key ``m``?"""
    if m.kind is MatchKind.UNIVERSAL:
        return True
    values = _values(raw)
    if m.kind is MatchKind.EMPTY:
        return not values
    if not values:
        return False  # a non-universal key never matches an absent value (PS3.4 C.2.2.2)
    return any(_match_value(m, v, fuzzy) for v in values)  # rule MULTI_VALUED_ANY


def _match_value(m: Match, value: Any, fuzzy: bool) -> bool:
    vr = m.attribute.vr
    if m.kind is MatchKind.RANGE:
        return _in_range(vr, str(value), m.low, m.high)
    return any(_single(vr, q, value, fuzzy, wildcard=m.kind is MatchKind.WILDCARD) for q in m.values)


def _in_range(vr: str, value: str, low: str | None, high: str | None) -> bool:
    if vr == "DA":
        v = _norm_da(value)
        return (low is None or v >= low) and (high is None or v <= high)
    if vr == "TM":
        v = _norm_tm(value)
        return (low is None or v >= _norm_tm(low)) and (high is None or v <= _norm_tm(high, upper=True))
    v = _norm_dt(value)
    return (low is None or v >= _norm_dt(low)) and (high is None or v <= _norm_dt(high, upper=True))


def _single(vr: str, query: str, value: Any, fuzzy: bool, *, wildcard: bool) -> bool:
    if vr == "PN":
        text = str(value)
        if wildcard or "*" in query or "?" in query:
            pattern = fold(query.strip())
            return any(wildcard_match(pattern, g) for g in _norm_pn(text))
        if fuzzy:
            words = _pn_words(query)
            comps = _pn_words(text)
            return bool(words) and all(any(c.startswith(w) for c in comps) for w in words)
        q = _norm_pn(query)[0]
        return q in _norm_pn(text)
    if vr in ("IS", "US", "UL", "SS", "SL"):
        try:
            return int(str(value).strip()) == int(query)
        except ValueError:
            return False
    if vr in ("DS", "FL", "FD"):  # extended query tags: by value, so 1.50 matches 1.5
        try:
            return float(str(value).strip()) == float(query)
        except ValueError:
            return False
    if vr == "DA":
        return _norm_da(str(value)) == query
    if vr == "TM":
        return _in_range("TM", str(value), query, query)  # rule TM_PARTIAL_AS_RANGE
    if vr == "DT":
        return _in_range("DT", str(value), query, query)
    text = str(value).strip()  # rule TEXT_TRIM_SPACES
    q = query.strip()
    if wildcard:
        return wildcard_match(q, text)
    return text == q


def matches(query: QidoQuery, view: Mapping[str, Any]) -> bool:
    """True if ``view`` satisfies every matching key of ``query``."""
    return all(match_one(m, view.get(m.attribute.keyword), fuzzy=query.fuzzy) for m in query.matches)
