"""Short, sortable, URL-safe ids: 42 bits of milliseconds (good until 2109) then 38 random bits,
written as 16 characters of lowercase Crockford base32, so ids made later sort after earlier ones.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id() -> str:
    ms = time.time_ns() // 1_000_000
    n = (ms & ((1 << 42) - 1)) << 38 | (int.from_bytes(os.urandom(5), "big") >> 2)
    out = [""] * 16
    for i in range(15, -1, -1):
        out[i] = _ALPHABET[n & 31]
        n >>= 5
    return "".join(out)
