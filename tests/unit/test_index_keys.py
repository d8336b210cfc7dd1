"""Table keys: escaping, ordering of wildcard prefixes, and the key schema of every table."""

from __future__ import annotations

import string

import pytest

from shared.index import keys

FORBIDDEN = "/\\#?"


@pytest.mark.parametrize("value", ["PAT/01", "A\\B", "#1?", "100%", "tab\tnew\nline", "\x7f\x85", "Müller^Jürgen",
                                   "山田^太郎", "plain"])
def test_escaped_values_hold_no_character_table_keys_forbid(value: str) -> None:
    out = keys.escape(value)
    assert not any(c in out for c in FORBIDDEN)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in out)


def test_escape_is_injective_on_tricky_values() -> None:
    values = ["a/b", "a%2Fb", "a%b", "a%%b", "a b", "a\\b", "a%5Cb"]
    assert len({keys.escape(v) for v in values}) == len(values)


def test_escape_keeps_ascii_prefix_order_so_wildcards_become_ranges() -> None:
    values = sorted(["AB12", "AB13", "AB2", "AC", "AB1/9", "AB1#"])
    lo, hi = keys.prefix_range(keys.Lookup.PATIENT_ID, "AB1")
    inside = [v for v in values if lo <= keys.lookup_pk(keys.Lookup.PATIENT_ID, v) < hi]
    assert inside == [v for v in values if v.startswith("AB1")]


def test_over_long_values_stay_under_the_key_limit_and_distinct() -> None:
    a, b = "x" * 2000 + "a", "x" * 2000 + "b"
    ka, kb = keys.escape(a), keys.escape(b)
    assert len(ka) <= keys.MAX_KEY_CHARS and len(ka.encode()) < 1024
    assert ka != kb


def test_name_tokens_cover_every_representation_case_and_accent_free() -> None:
    tokens = keys.name_tokens("Yamada^Tarou=山田^太郎=やまだ^たろう")
    assert {"yamada", "tarou", "山田", "太郎"} <= tokens and len(tokens) == 6
    assert keys.name_tokens("やまだ") <= tokens  # a query folds the same way as the stored name
    assert keys.name_tokens("MÜLLER^Jürgen") == {"muller", "jurgen"}
    assert keys.name_tokens("") == set()


def test_uid_lookups_spread_over_ten_shards() -> None:
    shards = {keys.uid_lookup_pk(keys.Lookup.SOP, f"1.2.3.{n}") for n in range(100)}
    assert len(shards) == 10


def test_delivery_keys_split_exactly_and_range_covers_one_rule_destination() -> None:
    rule, dest = "neuro~mr/pacs", "dicom:PACS@10.0.0.5:104"
    pk, rk = keys.delivery_keys("1.2.3", rule, dest, "1.2.3.4.5")
    assert pk == "1.2.3" and not any(c in rk for c in FORBIDDEN)
    lo, hi = keys.delivery_range(rule, dest)
    assert lo <= rk < hi
    _, other = keys.delivery_keys("1.2.3", rule + "x", dest, "1.2.3.4.5")
    assert not lo <= other < hi
    _, sibling = keys.delivery_keys("1.2.3", "neuro", "mr/pacs~dicom:PACS@10.0.0.5:104", "1.2.3.4.5")
    assert sibling != rk  # '~' inside a name cannot forge another (rule, destination)


def test_instance_keys_keep_a_series_contiguous_in_its_study_partition() -> None:
    rows = [keys.instance_keys("1.2", se, sop)[1] for se in ("1.2.3", "1.2.30", "1.2.4")
            for sop in ("1.2.3.1", "1.2.3.9")]
    lo, hi = keys.series_row_range("1.2.3")
    expected = [keys.instance_keys("1.2", "1.2.3", s)[1] for s in ("1.2.3.1", "1.2.3.9")]
    assert [r for r in rows if lo <= r < hi] == expected


def test_ingest_log_keys_spread_blob_names_and_escape_them() -> None:
    parts = {keys.ingest_log_keys(f"upload/{c}.dcm")[0] for c in string.ascii_letters}
    assert len(parts) > 20
    assert "/" not in keys.ingest_log_keys("a/b/c.dcm")[1]
