"""Page tokens: opaque to clients, an offset inside."""

from __future__ import annotations

import base64

from shipyard.core.errors import InvalidArgument

MAX_PAGE_SIZE = 10_000


def decode_page_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        offset = int(base64.urlsafe_b64decode(token.encode() + b"==").decode())
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument.for_field(
            "page_token", "not a token returned by a list call"
        ) from None
    if not 0 <= offset < 2**62:  # beyond that the database's 64-bit OFFSET overflows
        raise InvalidArgument.for_field("page_token", "not a token returned by a list call")
    return offset


def encode_page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode().rstrip("=")


def check_page_size(page_size: int) -> int:
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument.for_field(
            "page_size", f"expected an integer from 1 to {MAX_PAGE_SIZE}, got {page_size}"
        )
    return page_size


def next_token(offset: int, page_size: int, got: int) -> str | None:
    """Rows are fetched with limit page_size + 1: more than page_size means another page."""
    return encode_page_token(offset + page_size) if got > page_size else None
