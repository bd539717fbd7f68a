"""Masking personal data before it leaves for a vendor: e-mail addresses, phone numbers, My Number.

Pure text-to-text functions. A data class opts in with `redact: [email, phone, my_number]`; the
governor applies them to every request bound for a model that is not self-hosted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Literal

__all__ = ["Kind", "is_my_number", "redact_text"]

Kind = Literal["email", "phone", "my_number"]

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# 12 digits, optionally grouped 4-4-4 by spaces or hyphens (full-width digits are normalised first)
_MY_NUMBER = re.compile(r"(?<!\d)(\d{4})[ -]?(\d{4})[ -]?(\d{4})(?!\d)")
# Japanese numbers (0X-XXXX-XXXX, 0XX…, 0120…), +81 and other international forms
_PHONE = re.compile(
    r"(?<![\d+])(?:\+\d{1,3}[ -]?)?(?:\(0?\d{1,4}\)|0?\d{1,4})[ -]\d{1,4}[ -]\d{3,4}(?!\d)|(?<!\d)0\d{9,10}(?!\d)"
)
_FULL_WIDTH = str.maketrans("０１２３４５６７８９－", "0123456789-")


def is_my_number(digits: str) -> bool:
    """The check digit of Japan's Individual Number (マイナンバー)."""
    if len(digits) != 12 or not digits.isdigit():
        return False
    body = [int(d) for d in digits[:11]][::-1]  # P_n, n = 1..11 from the right
    total = sum(p * (n + 1 if n <= 6 else n - 5) for n, p in enumerate(body, start=1))
    remainder = total % 11
    return int(digits[11]) == (0 if remainder <= 1 else 11 - remainder)


def _my_number(text: str) -> str:
    def mask(m: re.Match[str]) -> str:
        return "[MY_NUMBER]" if is_my_number("".join(m.groups())) else m.group(0)

    return _MY_NUMBER.sub(mask, text)


_MASKS: dict[str, Callable[[str], str]] = {
    "email": lambda text: _EMAIL.sub("[EMAIL]", text),
    "my_number": _my_number,  # before phone: a My Number must not be taken for a phone number
    "phone": lambda text: _PHONE.sub("[PHONE]", text),
}


def redact_text(text: str, kinds: Iterable[str]) -> str:
    wanted = set(kinds)
    text = text.translate(_FULL_WIDTH) if wanted & {"phone", "my_number"} else text
    for kind, mask in _MASKS.items():
        if kind in wanted:
            text = mask(text)
    return text
