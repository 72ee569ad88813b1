"""The ``data`` codecs of the 加密策略 (kingdee-api.md §2.3): BASE64 (default) and AES.

Both the bridge (request ``data``, answers and callbacks it reads) and the simulator (the
reverse) call ``codec_for`` / ``codec_for_tenant``, so one function decides the bytes on the wire.

AES, as the cloud does it [C S16 codec; D S4 doc-3626887 title only]:

| step | detail |
|---|---|
| plaintext | UTF-8 JSON (``schemas.kingdee.encode_data``) |
| key | ``SHA1(SHA1(aesKey as UTF-8))[:16]``: Java ``SHA1PRNG`` seeded with aesKey [C S16] |
| cipher | AES-128-GCM, 12-byte random IV, 128-bit tag, no associated data [C S16] |
| wire | standard base64 of ``IV ‖ ciphertext ‖ tag`` [C S16] |

A value that is not base64, too short, or fails the tag check (wrong key, tampered, or BASE64
sent to an AES tenant) raises ``DataDecodeError``: the cloud answers ``-10003`` data解密失败.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from typing import Any, Final, Literal, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from schemas.kingdee import BASE64_CODEC, DataCodec, DataDecodeError

__all__ = [
    "AES_IV_BYTES",
    "AES_TAG_BYTES",
    "AesGcmCodec",
    "DataEncryption",
    "aes_key_bytes",
    "codec_for",
    "codec_for_tenant",
]

AES_IV_BYTES: Final = 12
AES_TAG_BYTES: Final = 16

DataEncryption = Literal["base64", "aes"]


def aes_key_bytes(aes_key: str) -> bytes:
    """The 16-byte AES key from the aesKey configured in the cloud: SHA1(SHA1(key))[:16]."""
    first = hashlib.sha1(aes_key.encode("utf-8")).digest()
    return hashlib.sha1(first).digest()[:16]


class AesGcmCodec:
    """AES-128-GCM as the cloud's AES 加密策略 (table in the module docstring)."""

    name = "AES"

    def __init__(self, aes_key: str, *, iv: bytes | None = None) -> None:
        if not aes_key:
            raise ValueError("an AES codec needs a non-empty aes_key / AES密钥不能为空")
        if iv is not None and len(iv) != AES_IV_BYTES:
            raise ValueError(f"the IV must be {AES_IV_BYTES} bytes")
        self._aead = AESGCM(aes_key_bytes(aes_key))
        # A fixed IV exists only for known-answer tests; real use draws one per message.
        self._fixed_iv = iv

    def encode(self, payload: bytes) -> str:
        iv = self._fixed_iv if self._fixed_iv is not None else secrets.token_bytes(AES_IV_BYTES)
        sealed = self._aead.encrypt(iv, payload, None)
        return base64.b64encode(iv + sealed).decode("ascii")

    def decode(self, value: str) -> bytes:
        compact = "".join(value.split())
        compact += "=" * (-len(compact) % 4)
        try:
            raw = base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DataDecodeError(
                f"data is not valid base64 ({exc}) / data不是有效的base64字符串"
            ) from exc
        if len(raw) < AES_IV_BYTES + AES_TAG_BYTES:
            raise DataDecodeError("AES data too short / AES数据长度不足")
        try:
            return self._aead.decrypt(raw[:AES_IV_BYTES], raw[AES_IV_BYTES:], None)
        except InvalidTag as exc:
            raise DataDecodeError(
                "AES data failed authentication (wrong aes_key or not AES) / AES解密失败"
            ) from exc


def codec_for(encryption: str, aes_key: str | None = None) -> DataCodec:
    """The codec of a 加密策略: ``"base64"`` → BASE64, ``"aes"`` → AES with ``aes_key``."""
    if encryption == "base64":
        return BASE64_CODEC
    if encryption == "aes":
        if not aes_key:
            raise ValueError("data_encryption 'aes' needs aes_key / AES加密需要aes_key")
        return AesGcmCodec(aes_key)
    raise ValueError(f"unknown data_encryption {encryption!r}; choices: base64, aes")


class _HasEncryption(Protocol):
    @property
    def data_encryption(self) -> str: ...


def codec_for_tenant(tenant: _HasEncryption) -> DataCodec:
    """The codec of a tenant (``TenantConfig`` or simulator tenant): its ``data_encryption``
    and ``aes_key`` (a ``SecretStr`` or plain text)."""
    key: Any = getattr(tenant, "aes_key", None)
    getter = getattr(key, "get_secret_value", None)
    text = getter() if callable(getter) else key
    return codec_for(tenant.data_encryption, None if text is None else str(text))
