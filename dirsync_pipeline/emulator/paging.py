"""Opaque page tokens and a cache of sorted listings.

A token carries the listing it belongs to and an offset into that listing's
stable order, salted and signed so a client cannot forge or reuse it elsewhere.
Sorted listings are cached per directory version, so paging 100k users costs
one sort, not one per page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from .wire import ApiError

T = TypeVar("T")
LISTINGS_CACHED = 32  # per endpoint


def invalid_page_token() -> ApiError:
    return ApiError(400, "invalid", "Invalid page token", location="pageToken", location_type="parameter")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: Sequence[T]
    next_token: str | None


class PageTokens:
    """Signs {listing, offset, salt}; decoding checks the signature and the listing."""

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(16)

    def encode(self, listing: str, offset: int) -> str:
        payload = json.dumps({"l": listing, "o": offset, "s": secrets.token_hex(4)}, separators=(",", ":")).encode()
        return _b64(payload) + "." + _b64(self._sign(payload))

    def decode(self, token: str, listing: str) -> int:
        try:
            body, signature = token.split(".")
            payload = _unb64(body)
            fields = json.loads(payload)
            valid = hmac.compare_digest(_unb64(signature), self._sign(payload)) and fields["l"] == listing
            offset = fields["o"]
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise invalid_page_token() from None
        if not valid or not isinstance(offset, int) or offset < 0:
            raise invalid_page_token()
        return offset

    def page(self, rows: Sequence[T], listing: str, page_token: str | None, size: int) -> Page[T]:
        offset = self.decode(page_token, listing) if page_token else 0
        end = offset + size
        return Page(rows[offset:end], self.encode(listing, end) if end < len(rows) else None)

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:12]


def listing_id(endpoint: str, params: dict[str, str]) -> str:
    """Names a listing by the parameters that define its contents and order."""
    canonical = json.dumps([endpoint, sorted(params.items())], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class ListingCache:
    """A small LRU of built listings; keys include the directory version."""

    def __init__(self, size: int = LISTINGS_CACHED) -> None:
        self._size = size
        self._entries: OrderedDict[Hashable, Sequence[object]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], Sequence[T]]) -> Sequence[T]:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]  # type: ignore[return-value]
        rows = build()
        with self._lock:
            self._entries[key] = rows
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return rows


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
