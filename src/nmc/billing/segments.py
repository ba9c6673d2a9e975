"""How many SMS segments a text is billed as: GSM-7 or UCS-2, computed here (not taken from Twilio).

A text whose every character is in the GSM 03.38 alphabet (the basic table, or the extension table
at two septets each) is GSM-7: one segment up to 160 septets, else 153-septet parts (the rest carries
the concatenation header), an escape pair never split. Anything else is UCS-2: one segment up to 70
UTF-16 code units, else 67-unit parts, a surrogate pair never split. Twilio's smart encoding (on for a
Messaging Service) first replaces the common typographic look-alikes (curly quotes, dashes, ellipsis,
odd spaces), so a curly apostrophe does not turn a text into UCS-2; the same table is applied here.
"""

from __future__ import annotations

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")  # each is ESC + a character: two septets

# Twilio smart encoding: the common part of its table (README "Billing").
SMART_ENCODING = str.maketrans(
    {
        "\u201c": '"', "\u201d": '"', "\u00ab": '"', "\u00bb": '"', "\u2018": "'", "\u2019": "'",
        "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2010": "-", "\u2212": "-", "\u2022": "-",
        "\u2026": "...", "\u00a0": " ", "\u2009": " ", "\u202f": " ", "\u200b": "",
    }
)  # fmt: skip

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


def smart_encoded(body: str) -> str:
    return body.translate(SMART_ENCODING)


def is_gsm7(body: str) -> bool:
    return all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in body)


def _pack(units: list[int], single: int, part: int) -> int:
    """Segments for characters of `units` size each, never splitting one character across two."""
    if sum(units) <= single:
        return 1
    segments, used = 1, 0
    for size in units:
        if used + size > part:
            segments += 1
            used = 0
        used += size
    return segments


def count_segments(body: str, *, smart_encoding: bool = True) -> int:
    """The segments Twilio bills for `body` (at least 1)."""
    text = smart_encoded(body) if smart_encoding else body
    if is_gsm7(text):
        return _pack([2 if char in GSM7_EXTENSION else 1 for char in text], GSM7_SINGLE, GSM7_PART)
    return _pack([2 if ord(char) > 0xFFFF else 1 for char in text], UCS2_SINGLE, UCS2_PART)
