"""Table keys: escaping, ordering of wildcard prefixes, and the key schema of every table."""

from __future__ import annotations

from collections import Counter

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


@pytest.mark.parametrize("kind", [keys.Lookup.PATIENT_ID, keys.Lookup.ACCESSION, keys.Lookup.NAME])
def test_escape_keeps_ascii_prefix_order_so_wildcards_become_ranges(kind: str) -> None:
    values = sorted(["AB12", "AB13", "AB2", "AC", "AB1/9", "AB1#", "AB1", "BB1", "%AB1"])
    ranges = keys.value_lookup_ranges(kind, "AB1", prefix=True)
    rows = [keys.value_lookup_keys(kind, v, "1.2.3") for v in values]
    inside = [v for v, (pk, rk) in zip(values, rows, strict=True)
              if any(pk == p and lo <= rk < hi for p, (lo, hi) in ranges)]
    assert inside == [v for v in values if v.startswith("AB1")]
    # A name prefix reads one partition (its first character's); an ID prefix every partition of its kind.
    assert len(ranges) == (1 if kind == keys.Lookup.NAME else keys.VALUE_SHARDS)


@pytest.mark.parametrize("value", ["AB1", "A", "AB1/9", "100%", "%41", "x" * 900, "Müller", "山田"])
@pytest.mark.parametrize("kind", [keys.Lookup.PATIENT_ID, keys.Lookup.NAME])
def test_an_exact_value_range_holds_the_rows_of_that_value_only(kind: str, value: str) -> None:
    """Values that start with another, or that escaping makes look alike, never fall in its exact range."""
    others = [value + "0", value + "%", value + "/", value[:-1] or "B", "%25" + value, value + "~", value + "%~"]
    [(pk, (lo, hi))] = keys.value_lookup_ranges(kind, value)
    own = keys.value_lookup_keys(kind, value, "1.2.840.99")
    assert own[0] == pk and lo <= own[1] < hi and keys.study_of_value_row(own[1]) == "1.2.840.99"
    assert len(own[1].encode("utf-16-le")) <= 1024  # the service's key limit
    for other in others:
        p, rk = keys.value_lookup_keys(kind, other, "1.2.840.99")
        assert not (p == pk and lo <= rk < hi), other


def test_the_value_lookups_of_many_studies_share_a_few_partitions_spread_evenly() -> None:
    """A settle run writes the value lookups of a group of studies in about one batch per partition; IDs that
    share a site prefix still spread over every partition (none runs hot)."""
    ids = [f"RAD2026{n:07d}" for n in range(4000)]
    spread = Counter(keys.value_lookup_keys(keys.Lookup.ACCESSION, v, "1.2")[0] for v in ids)
    assert len(spread) == keys.VALUE_SHARDS
    assert max(spread.values()) < 1.25 * len(ids) / keys.VALUE_SHARDS


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


def test_uid_lookups_spread_over_every_shard_and_a_point_read_per_shard_finds_them() -> None:
    rows = [keys.uid_lookup_keys(kind, f"1.2.3.{n}", f"1.2.9.{n}") for n in range(100)
            for kind in (keys.Lookup.SOP, keys.Lookup.SERIES)]
    assert len({pk for pk, _ in rows}) == keys.UID_SHARDS
    # A study's series and SOP lookups share its shard (one batch); the kinds never collide on one UID.
    assert keys.uid_lookup_keys(keys.Lookup.SOP, "1.2.3.7", "1.9")[0] == keys.uid_lookup_keys(
        keys.Lookup.SERIES, "1.2.3.7", "1.8")[0]
    same_uid = [keys.uid_lookup_keys(kind, "1.2.3", "1.9") for kind in (keys.Lookup.SOP, keys.Lookup.SERIES)]
    assert same_uid[0] != same_uid[1]
    for kind in (keys.Lookup.SOP, keys.Lookup.SERIES):
        assert keys.uid_lookup_keys(kind, "1.2.3.4", "1.5") in keys.uid_lookup_points(kind, "1.5")
    assert all(keys.is_uid_lookup(pk) for pk, _ in rows)


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


def test_feed_keys_bucket_by_hour_and_shard_by_study() -> None:
    import datetime as dt

    when = dt.datetime(2026, 11, 29, 10, 59, 59, tzinfo=dt.UTC)
    pk, rk = keys.feed_keys(when, 1_795_956_891_521_143, "1.2.3")
    assert pk.startswith("2026112910-") and pk in keys.feed_partitions("2026112910")
    assert rk == "00001795956891521143" and keys.feed_row_range(1, 2_000_000_000_000_000)[0] <= rk
    shards = {keys.feed_keys(when, 1, f"1.2.{n}")[0] for n in range(20)}
    assert len(shards) == keys.FEED_SHARDS
