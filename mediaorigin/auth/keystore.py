"""Content keys per media item, sealed at rest with AES-GCM under the master key.

The master key (`[auth] master_key`, 32 bytes base64 / `MEDIAORIGIN_AUTH_MASTER_KEY`) never
reaches the database; the database holds only nonce || ciphertext+tag, authenticated with
the media id as associated data, so a sealed key cannot be moved to another item. Keys and
the master key are never logged. Commercial key servers (CPIX) plug in by implementing
`KeySource` (see README: "Keys from a key server").
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from ..library import schema


class KeyStoreError(Exception):
    pass


@dataclass(frozen=True)
class ContentKey:
    kid: bytes  # 16 bytes: the CENC default_KID and the HLS key id
    key: bytes  # 16 bytes AES-128

    def __repr__(self) -> str:  # never show the key
        return f"ContentKey(kid={self.kid.hex()})"


class KeySource(Protocol):
    """Where content keys come from: our sealed store, or a commercial key server."""

    async def key_for(self, media_id: str) -> ContentKey: ...


def parse_master_key(value: str) -> bytes:
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise KeyStoreError("auth.master_key must be 32 bytes in base64") from None
    if len(key) != 32:
        raise KeyStoreError("auth.master_key must be 32 bytes in base64")
    return key


class SealedKeyStore:
    """One content key per media item, made on first use and kept sealed in the database."""

    def __init__(self, engine: AsyncEngine, master_key: bytes) -> None:
        self.engine = engine
        self._aead = AESGCM(master_key)
        self._cache: dict[str, ContentKey] = {}

    def _seal(self, media_id: str, key: bytes) -> str:
        nonce = os.urandom(12)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, key, media_id.encode())
                                ).decode()

    def _open(self, media_id: str, sealed: str) -> bytes:
        raw = base64.b64decode(sealed)
        try:
            return self._aead.decrypt(raw[:12], raw[12:], media_id.encode())
        except InvalidTag:
            raise KeyStoreError("a content key does not open with this master key") from None

    async def key_for(self, media_id: str) -> ContentKey:
        cached = self._cache.get(media_id)
        if cached is not None:
            return cached
        k = schema.content_keys
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(k.c.kid, k.c.sealed)
                                      .where(k.c.media_id == media_id))).first()
        if row is None:
            content = ContentKey(os.urandom(16), os.urandom(16))
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(insert(k).values(
                        media_id=media_id, kid=content.kid.hex(),
                        sealed=self._seal(media_id, content.key), created_at=time.time()))
            except IntegrityError:  # another process made it first: use theirs
                return await self.key_for(media_id)
        else:
            content = ContentKey(bytes.fromhex(row.kid), self._open(media_id, row.sealed))
        self._cache[media_id] = content
        return content

    async def key_by_kid(self, media_id: str, kid: bytes) -> ContentKey | None:
        content = await self.key_for(media_id)
        return content if content.kid == kid else None
