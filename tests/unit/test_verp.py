"""VERP return paths: encode (message, recipient), survive case-folding, reject forgeries."""

from __future__ import annotations

import pytest

from app.domain.errors import ValidationError
from app.domain.verp import make_verp_address, parse_verp_address

SECRET = b"s3cret-verp-key"
MESSAGE_ID = "665f1c2ab3e4d5f6a7b8c9d0"
RECIPIENT_ID = "665f1c2ab3e4d5f6a7b8c9d1"


def make(**overrides: object) -> str:
    args: dict[str, object] = {
        "domain": "bounce.mailhub.example",
        "message_id": MESSAGE_ID,
        "recipient_id": RECIPIENT_ID,
        "secret": SECRET,
    }
    args.update(overrides)
    return make_verp_address(**args)  # type: ignore[arg-type]


def test_round_trip_returns_the_message_and_recipient():
    assert parse_verp_address(make(), secret=SECRET) == (MESSAGE_ID, RECIPIENT_ID)


def test_address_shape_and_local_part_length():
    address = make()
    local, _, domain = address.partition("@")
    assert local.startswith("bounces+")
    assert domain == "bounce.mailhub.example"
    assert len(local.encode()) <= 64
    assert local == local.lower()


def test_uppercase_hex_ids_come_back_lowercase():
    address = make(message_id=MESSAGE_ID.upper())
    assert parse_verp_address(address, secret=SECRET) == (MESSAGE_ID, RECIPIENT_ID)


@pytest.mark.parametrize(
    "transform",
    [str.upper, str.lower, lambda a: f"<{a}>", lambda a: f"  <{a.upper()}> ", str.title],
)
def test_case_folding_and_angle_brackets_are_tolerated(transform):
    assert parse_verp_address(transform(make()), secret=SECRET) == (MESSAGE_ID, RECIPIENT_ID)


def test_distinct_recipients_get_distinct_addresses():
    other = make(recipient_id="665f1c2ab3e4d5f6a7b8c9d2")
    assert other != make()
    assert parse_verp_address(other, secret=SECRET) == (MESSAGE_ID, "665f1c2ab3e4d5f6a7b8c9d2")


def test_wrong_secret_does_not_verify():
    assert parse_verp_address(make(), secret=b"another key") is None


def test_previous_secret_still_verifies_after_rotation():
    address = make(secret=b"old key")
    assert parse_verp_address(address, secret=SECRET) is None
    assert parse_verp_address(address, secret=SECRET, previous_secrets=[b"old key"]) == (
        MESSAGE_ID,
        RECIPIENT_ID,
    )


def flip(address: str, index: int) -> str:
    local, _, domain = address.partition("@")
    token = local.split("+", 1)[1]
    swapped = "a" if token[index] != "a" else "b"
    return f"bounces+{token[:index]}{swapped}{token[index + 1 :]}@{domain}"


@pytest.mark.parametrize("index", [0, 10, 20, 38, 39, 45, 54])
def test_tampering_with_any_character_is_detected(index):
    assert parse_verp_address(flip(make(), index), secret=SECRET) is None


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "bounces",
        "alice@mailhub.example",
        "bounces@mailhub.example",
        "bounces+@mailhub.example",
        "bounces+abc@mailhub.example",
        "bounces+" + "a" * 54 + "1@mailhub.example",  # '1' is not base32
        "bounces+" + "a" * 56 + "@mailhub.example",
        "other+" + "a" * 55 + "@mailhub.example",
        "<>",
    ],
)
def test_junk_is_rejected_without_raising(junk):
    assert parse_verp_address(junk, secret=SECRET) is None


def test_domain_can_be_required():
    address = make()
    assert parse_verp_address(address, secret=SECRET, domain="BOUNCE.mailhub.example.") == (
        MESSAGE_ID,
        RECIPIENT_ID,
    )
    assert parse_verp_address(address, secret=SECRET, domain="evil.example") is None


def test_domain_is_lowercased():
    assert make(domain="Bounce.Mailhub.Example.").endswith("@bounce.mailhub.example")


@pytest.mark.parametrize(
    ("field", "overrides"),
    [
        ("message_id", {"message_id": "not-an-object-id"}),
        ("recipient_id", {"recipient_id": MESSAGE_ID + "00"}),
        ("domain", {"domain": ""}),
        ("domain", {"domain": "a@b"}),
        ("secret", {"secret": b""}),
    ],
)
def test_invalid_inputs_are_rejected(field, overrides):
    with pytest.raises(ValidationError) as info:
        make(**overrides)
    assert info.value.fields[0].field == field


def test_non_canonical_last_character_is_rejected():
    # 34 bytes fill 272 of the last character's bits; its 3 spare bits must be zero.
    address = make()
    local, _, domain = address.partition("@")
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    last = alphabet.index(local[-1])
    variant = f"{local[:-1]}{alphabet[last ^ 0b001]}@{domain}"
    assert parse_verp_address(variant, secret=SECRET) is None
