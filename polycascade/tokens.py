"""Token estimates before a call, for context-window checks and budget reservations.

Deliberately conservative (over-counts rather than under-counts): a reservation that is too
small would let concurrent calls overshoot a budget. CJK characters count one token each.
"""

from __future__ import annotations

import math
import re

__all__ = ["estimate_tokens"]

_WIDE = re.compile(r"[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uff00-\uffef]")
MESSAGE_OVERHEAD = 4  # role and separators in chat templates


def estimate_tokens(text: str) -> int:
    wide = len(_WIDE.findall(text))
    return wide + math.ceil((len(text) - wide) / 3) + MESSAGE_OVERHEAD
