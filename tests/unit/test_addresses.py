import pytest

from app.domain.addresses import (
    Address,
    domain_of,
    format_address,
    normalize_email,
    parse_address,
    parse_address_list,
    parse_header_addresses,
)
from app.domain.encoded_words import decode_charset, decode_header_words
from app.domain.errors import ValidationError


def test_name_and_angle_address_keep_local_part_and_lowercase_domain():
    assert parse_address("Bob Smith <Bob.Smith@Example.COM>") == Address(
        "Bob.Smith@example.com", "Bob Smith"
    )


def test_quoted_display_name_may_contain_a_comma():
    assert parse_address('"Last, First" <a@b.co>') == Address("a@b.co", "Last, First")


def test_quoted_display_name_unescapes_quotes():
    assert parse_address(r'"Say \"hi\"" <a@b.co>').name == 'Say "hi"'


def test_bare_and_bracketed_addresses_have_no_name():
    assert parse_address("  a@b.co ") == Address("a@b.co")
    assert parse_address("<a@b.co>") == Address("a@b.co")


def test_utf8_local_part_is_accepted_per_rfc_6531():
    assert parse_address("Zoë <zoë@example.com>") == Address("zoë@example.com", "Zoë")


def test_idn_domain_is_kept_in_unicode_form_and_punycode_input_is_converted():
    assert parse_address("a@Bücher.Example").email == "a@bücher.example"
    assert parse_address("a@xn--bcher-kva.example").email == "a@bücher.example"


def test_quoted_local_part_is_valid():
    assert parse_address('"john doe"@example.com').email == '"john doe"@example.com'


LONG_LABEL = "a" * 64
LONG_DOMAIN = ".".join(["a" * 63] * 4)  # 255 characters


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("nobody", "missing an @"),
        ("Bob\r\nBcc: victim@example.com <a@b.co>", "line breaks"),
        ("a@b.co\nBcc: victim@example.com", "line breaks"),
        ("a\x00@b.co", "NUL"),
        ("a@b.co, c@d.co", "more than one address"),
        ("a@b.co c@d.co", "more than one address"),
        ("A <a@b.co> <c@d.co>", "more than one address"),
        ("Last, First <a@b.co>", "unquoted comma"),
        ('"Unclosed <a@b.co>', "unbalanced quotes"),
        ("a..b@example.com", "invalid local part"),
        (".a@example.com", "invalid local part"),
        ("a b@example.com", "more than one address"),
        ("x" * 65 + "@example.com", "local part is longer than 64"),
        (f"a@{LONG_LABEL}.com", "longer than 63"),
        (f"a@{LONG_DOMAIN}", "domain is longer than 253"),
        ("a" * 64 + "@" + ".".join(["b" * 60] * 3) + ".example", "longer than 254"),
        ("a@localhost", "at least two labels"),
        ("a@[192.0.2.1]", "address literals"),
        ("a@1.2.3.4", "numeric top-level"),
        ("a@under_score.com", "invalid domain label"),
        ("a@-dash.com", "invalid domain label"),
        ("a@example.com.", "must not end with a dot"),
        ("@example.com", "local part (before @) is empty"),
        ("a@", "domain (after @) is empty"),
    ],
)
def test_invalid_addresses_are_rejected_with_a_specific_message(text, fragment):
    with pytest.raises(ValidationError) as excinfo:
        parse_address(text, "to[2]")
    assert fragment in str(excinfo.value)
    assert str(excinfo.value).startswith("to[2]: ")
    assert excinfo.value.fields[0].field == "to[2]"


def test_address_list_names_each_bad_index_and_reports_all_of_them():
    with pytest.raises(ValidationError) as excinfo:
        parse_address_list(["ok@example.com", "bad", "also@", "fine@example.org"], "cc")
    assert [p.field for p in excinfo.value.fields] == ["cc[1]", "cc[2]"]
    assert "cc[1]: " in str(excinfo.value) and "cc[2]: " in str(excinfo.value)


def test_address_list_drops_duplicates_by_normalized_email_and_keeps_order():
    result = parse_address_list(
        ["B <b@example.com>", "a@example.com", "Other <B@EXAMPLE.com>", "c@example.com"], "to"
    )
    assert [a.email for a in result] == ["b@example.com", "a@example.com", "c@example.com"]
    assert result[0].name == "B"


def test_normalize_email_is_stripped_and_casefolded():
    assert normalize_email("  Straße@Example.COM ") == "strasse@example.com"


def test_domain_of_is_lowercased_and_empty_without_at():
    assert domain_of("Bob@Mail.Example.COM") == "mail.example.com"
    assert domain_of("nobody") == ""


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (Address("a@b.co"), "a@b.co"),
        (Address("a@b.co", "Bob Smith"), "Bob Smith <a@b.co>"),
        (Address("a@b.co", "Doe, John"), '"Doe, John" <a@b.co>'),
        (Address("a@b.co", 'Say "hi"'), r'"Say \"hi\"" <a@b.co>'),
        (Address("a@b.co", "J. Doe"), '"J. Doe" <a@b.co>'),
        (Address("a@bücher.example"), "a@xn--bcher-kva.example"),
        (Address("zoë@bücher.example"), "zoë@bücher.example"),
    ],
)
def test_format_address_quotes_specials_and_keeps_ascii_headers_ascii(address, expected):
    assert format_address(address) == expected


def test_format_address_encodes_non_ascii_names_per_rfc_2047():
    name = " ".join(["Jöhn Dœ, Jr."] * 4)
    formatted = format_address(Address("a@b.co", name))
    assert formatted.isascii()
    assert "=?utf-8?b?" in formatted
    assert all(len(word) <= 75 for word in formatted.split(" "))
    assert parse_header_addresses(formatted) == [Address("a@b.co", name)]


def test_formatted_addresses_parse_back_to_the_same_address():
    for address in [
        Address("a@b.co", 'Quote " and \\ backslash'),
        Address("a@b.co", "Müller, Jürgen"),
        Address("x@bücher.example", "日本語の名前"),
    ]:
        assert parse_header_addresses(format_address(address)) == [address]


def test_header_addresses_decode_names_and_skip_junk():
    value = (
        '"=?utf-8?q?Garc=C3=ADa=2C_Jos=C3=A9?=" <jose@Example.COM>, junk, undisclosed:;, '
        "<a@xn--bcher-kva.example>, @nolocal.example, Bob <bob@x.org>"
    )
    assert parse_header_addresses(value) == [
        Address("jose@example.com", "García, José"),
        Address("a@bücher.example"),
        Address("bob@x.org", "Bob"),
    ]


def test_header_address_names_lose_control_characters_hidden_in_encoded_words():
    [address] = parse_header_addresses("=?utf-8?q?Eve=0D=0AEvil=00?= <eve@example.com>")
    assert address == Address("eve@example.com", "Eve  Evil")


def test_header_addresses_salvage_an_address_from_broken_syntax():
    assert parse_header_addresses('"Unclosed <broken@Sender.example>') == [
        Address("broken@sender.example")
    ]


@pytest.mark.parametrize(
    "value",
    [None, "", ",,,", "<<<>>>", '"""', "=?utf-8?q?", "a@", "(comment", "\udcff@x.com", "@" * 500],
)
def test_header_address_parsing_never_raises(value):
    result = parse_header_addresses(value)
    assert all("@" in a.email for a in result)


def test_encoded_words_join_across_whitespace_and_split_characters():
    euro = "€".encode()
    import base64

    first = base64.b64encode(b"price " + euro[:1]).decode()
    second = base64.b64encode(euro[1:] + b"5").decode()
    text = f"=?utf-8?b?{first}?=\r\n =?utf-8?b?{second}?= =?iso-8859-1?q?_caf=E9?= done"
    assert decode_header_words(text) == "price €5 café done"


def test_encoded_words_in_an_unknown_charset_fall_back_to_utf8():
    assert decode_header_words("=?x-klingon?q?caf=C3=A9?=") == "café"


def test_plain_header_text_is_unchanged():
    assert decode_header_words("Re: 50% off =? maybe") == "Re: 50% off =? maybe"


@pytest.mark.parametrize(
    ("data", "charset", "expected"),
    [
        ("café".encode("latin-1"), "iso-8859-1", "café"),
        ("“smart”".encode("cp1252"), "iso-8859-1", "“smart”"),  # WHATWG: latin-1 label = cp1252
        ("会議".encode("cp932"), "Shift_JIS", "会議"),
        ("déjà".encode(), "us-ascii", "déjà"),  # mislabelled UTF-8
        ("déjà".encode(), "x-unknown", "déjà"),
        ("déjà".encode("latin-1"), "x-unknown", "déjà"),
        ("déjà".encode("latin-1"), "utf-8", "déjà"),
        (b"\\u0041", "unicode_escape", "\\u0041"),  # never interpret escapes
        (b"\x81\x8d", None, "\ufffd\ufffd"),
    ],
)
def test_decode_charset_falls_back_sensibly(data, charset, expected):
    assert decode_charset(data, charset) == expected


def test_encoded_words_with_raw_8bit_bytes_are_decoded_in_their_declared_charset():
    # Malformed (RFC 2047 §5 allows only ASCII inside a word) but common; other parsers decode it.
    assert (
        decode_header_words("=?iso-8859-1?Q?Die_Hasen_und_die_Fr\xf6sche?=")
        == "Die Hasen und die Frösche"
    )
    # a character the declared charset cannot hold stays as it arrived
    assert decode_header_words("=?iso-8859-1?Q?Preis_5_\u20ac?=") == "Preis 5 €"


@pytest.mark.parametrize(
    "text",
    [
        "moc.elpmaxe\u202e@example.test",  # right-to-left override: shows as another address
        "bob\u2066@example.test",
        "bob@exa\u200fmple.test",
        "\u202eBob Smith <bob@example.test>",
        "bob\u200b@example.test",  # zero width space: looks like bob@
    ],
)
def test_bidirectional_and_invisible_characters_are_refused_in_addresses(text):
    with pytest.raises(ValidationError) as excinfo:
        parse_address(text, "to[0]")
    assert excinfo.value.fields[0].field == "to[0]"


def test_the_unquoted_fast_path_of_the_list_check_refuses_exactly_what_the_scan_refuses():
    """An address with nothing quoted is checked with one regex search instead of the
    quote-aware character scan: the regex matches exactly the characters the scan refuses."""
    import sys

    from app.domain.addresses import _LIST_OR_BRACKET

    for code in range(sys.maxunicode + 1):
        ch = chr(code)
        assert bool(_LIST_OR_BRACKET.fullmatch(ch)) == (ch in ",;<>" or ch.isspace()), hex(code)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a b@c.d", "more than one address"),
        ("a,b@c.d", "more than one address"),
        ("a\u2003b@c.d", "more than one address"),
        ("a>b@c.d", "unbalanced angle brackets"),
        ('"a b"@c.d', None),  # quoted: the scan, which lets the space through
    ],
)
def test_list_characters_outside_quotes_are_refused_with_or_without_quotes(text, fragment):
    if fragment is None:
        assert parse_address(text, "to").email == text
        return
    with pytest.raises(ValidationError) as caught:
        parse_address(text, "to")
    assert fragment in caught.value.message
