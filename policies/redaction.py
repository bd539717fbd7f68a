"""Masking personal data before it leaves for a vendor: e-mail addresses, phone numbers, My Number,
Japanese addresses (住所: a postal code, or a prefecture down to its block and house numbers).

Pure text-to-text functions. A data class opts in with `redact: [email, phone, my_number]`; the
governor applies them to every request bound for a model that is not self-hosted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Literal

__all__ = ["Kind", "is_my_number", "redact_text"]

Kind = Literal["email", "phone", "my_number", "address"]

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# 12 digits, optionally grouped 4-4-4 by spaces or hyphens (full-width digits are normalised first)
_MY_NUMBER = re.compile(r"(?<!\d)(\d{4})[ -]?(\d{4})[ -]?(\d{4})(?!\d)")
# Japanese numbers (0X-XXXX-XXXX, 0XX…, 0120…), +81 and other international forms
_PHONE = re.compile(
    r"(?<![\d+])(?:\+\d{1,3}[ -]?)?(?:\(0?\d{1,4}\)|0?\d{1,4})[ -]\d{1,4}[ -]\d{3,4}(?!\d)|(?<!\d)0\d{9,10}(?!\d)"
)
_FULL_WIDTH = str.maketrans("０１２３４５６７８９－", "0123456789-")
_PREFECTURES = (
    "北海道|青森県|岩手県|宮城県|秋田県|山形県|福島県|茨城県|栃木県|群馬県|埼玉県|千葉県|東京都|神奈川県|新潟県|富山県|"
    "石川県|福井県|山梨県|長野県|岐阜県|静岡県|愛知県|三重県|滋賀県|京都府|大阪府|兵庫県|奈良県|和歌山県|鳥取県|島根県|"
    "岡山県|広島県|山口県|徳島県|香川県|愛媛県|高知県|福岡県|佐賀県|長崎県|熊本県|大分県|宮崎県|鹿児島県|沖縄県"
)
# A prefecture, then the city, ward, town or village, then the place name up to the last block or
# house number (1-2-3, 1丁目2番3号, 三丁目, 2番地, 北1条西2丁目, Kyoto's 七条下る…721-1); a building
# name after a space is left.
_NUMBER = r"(?:\d+|[一二三四五六七八九十]+)"
_ADDRESS = re.compile(
    rf"(?:〒\s?\d{{3}}-?\d{{4}}\s*)?(?:{_PREFECTURES})[^\s、。,，「」()（）]{{1,12}}?[市区町村郡]"
    rf"(?:[^\s、。,，「」()（）\d]{{0,12}}(?:[東西南北]?{_NUMBER}(?:丁目|番地?|号|条|線|-))+{_NUMBER}?)+"
)
_POSTAL = re.compile(r"〒\s?\d{3}-?\d{4}")


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
    "address": lambda text: _POSTAL.sub("[ADDRESS]", _ADDRESS.sub("[ADDRESS]", text)),  # before phone: 〒100-0005
    "email": lambda text: _EMAIL.sub("[EMAIL]", text),
    "my_number": _my_number,  # before phone: a My Number must not be taken for a phone number
    "phone": lambda text: _PHONE.sub("[PHONE]", text),
}


def redact_text(text: str, kinds: Iterable[str]) -> str:
    wanted = set(kinds)
    text = text.translate(_FULL_WIDTH) if wanted & {"phone", "my_number", "address"} else text
    for kind, mask in _MASKS.items():
        if kind in wanted:
            text = mask(text)
    return text
