"""Cache keys become valid KV keys without two keys ever sharing an entry."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from escriba.bus import audio_duration_from_headers, sanitize_key
from escriba.bus.kv import MAX_KEY_CHARS

VALID_KV_KEY = re.compile(r"^[-/_=.a-zA-Z0-9]+$")


def test_plain_keys_are_kept_readable() -> None:
    assert sanitize_key("abc123/tiny_en-v2") == "abc123/tiny_en-v2"


def test_characters_a_kv_key_cannot_hold_are_escaped() -> None:
    assert sanitize_key("a b") == "a=20b"
    assert sanitize_key("model:tiny.en") == "model=3Atiny=2Een"
    assert sanitize_key("=") == "=3D"
    assert sanitize_key("é") == "=C3=A9"


def test_long_keys_are_hashed_into_a_bounded_valid_key() -> None:
    key = "x" * 5000
    safe = sanitize_key(key)
    assert len(safe) <= MAX_KEY_CHARS and VALID_KV_KEY.match(safe)
    assert safe != sanitize_key(key + "y")


@given(st.text(min_size=1, max_size=300))
def test_every_key_maps_to_a_valid_kv_key(key: str) -> None:
    safe = sanitize_key(key)
    assert VALID_KV_KEY.match(safe)
    assert not safe.startswith(".") and not safe.endswith(".")
    assert len(safe) <= MAX_KEY_CHARS


def _unescape(safe: str) -> str:
    raw = re.sub(rb"=([0-9A-F]{2})", lambda m: bytes([int(m.group(1), 16)]), safe.encode("ascii"))
    return raw.decode("utf-8")


@given(st.text(min_size=1, max_size=40))  # short enough never to be hashed
def test_escaping_is_reversible_so_distinct_keys_stay_distinct(key: str) -> None:
    assert _unescape(sanitize_key(key)) == key


@given(st.text(min_size=1, max_size=200), st.text(min_size=1, max_size=200))
def test_different_keys_never_share_an_entry(a: str, b: str) -> None:
    if a != b:
        assert sanitize_key(a) != sanitize_key(b)


def test_audio_duration_header_parsing() -> None:
    assert audio_duration_from_headers({"Escriba-Audio-Duration-S": "12.500"}) == 12.5
    assert audio_duration_from_headers({"Escriba-Audio-Duration-S": "nan"}) is None
    assert audio_duration_from_headers({"Escriba-Audio-Duration-S": "-1"}) is None
    assert audio_duration_from_headers({"Escriba-Audio-Duration-S": "x"}) is None
    assert audio_duration_from_headers({}) is None
    assert audio_duration_from_headers(None) is None
