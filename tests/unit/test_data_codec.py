"""The AES 加密策略 codec (schemas.data_codec, kingdee-api.md §2.3) and tenant settings."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from schemas.data_codec import AesGcmCodec, aes_key_bytes, codec_for, codec_for_tenant
from schemas.kingdee import BASE64_CODEC, DataDecodeError, decode_data, encode_data
from schemas.tenants import TenantsFileError, load_tenants

KEY = "kingdee-aes-key"
IV = bytes(range(12))
PLAIN = b'{"billNo":"B1"}'
# SHA1(SHA1("kingdee-aes-key")) computed with `openssl dgst -sha1 -binary | openssl dgst -sha1`.
DERIVED_KEY_HEX = "46f5958bc5886509d7f72a1f7a7938cd"
# AES-128-GCM of PLAIN under that key and IV, written as base64(IV ‖ ciphertext ‖ tag).
KNOWN_VECTOR = "AAECAwQFBgcICQoLKN5hTvBnEqOKaFPyNINCa9nOT4pdSgnOg0+257STSA=="


def test_key_is_sha1_of_sha1_first_16_bytes() -> None:
    assert aes_key_bytes(KEY).hex() == DERIVED_KEY_HEX


def test_fixed_iv_known_vector_matches_an_independent_gcm_computation() -> None:
    encryptor = Cipher(algorithms.AES(bytes.fromhex(DERIVED_KEY_HEX)), modes.GCM(IV)).encryptor()
    sealed = encryptor.update(PLAIN) + encryptor.finalize() + encryptor.tag
    independent = base64.b64encode(IV + sealed).decode("ascii")
    assert independent == KNOWN_VECTOR
    assert AesGcmCodec(KEY, iv=IV).encode(PLAIN) == KNOWN_VECTOR
    assert AesGcmCodec(KEY).decode(KNOWN_VECTOR) == PLAIN


def test_round_trip_with_random_ivs() -> None:
    codec = AesGcmCodec(KEY)
    payload = [{"billNo": "B1", "buyerName": "上海示例贸易有限公司"}]
    first, second = encode_data(payload, codec), encode_data(payload, codec)
    assert first != second  # a fresh IV per message
    assert decode_data(first, codec) == decode_data(second, codec) == payload
    assert base64.b64decode(first)[:12] != base64.b64decode(second)[:12]


@pytest.mark.parametrize("position", [0, 12, 20, -1])
def test_tampering_anywhere_is_refused(position: int) -> None:
    raw = bytearray(base64.b64decode(KNOWN_VECTOR))
    raw[position] ^= 0x01
    with pytest.raises(DataDecodeError, match="AES"):
        AesGcmCodec(KEY).decode(base64.b64encode(bytes(raw)).decode("ascii"))


def test_wrong_key_base64_data_and_garbage_are_refused() -> None:
    with pytest.raises(DataDecodeError):
        AesGcmCodec("another-key").decode(KNOWN_VECTOR)
    with pytest.raises(DataDecodeError):
        decode_data(encode_data([{"billNo": "B1"}]), AesGcmCodec(KEY))  # BASE64 sent to AES
    with pytest.raises(DataDecodeError):
        AesGcmCodec(KEY).decode("not base64 !")
    with pytest.raises(DataDecodeError, match="short"):
        AesGcmCodec(KEY).decode(base64.b64encode(b"short").decode("ascii"))


def test_codec_for() -> None:
    assert codec_for("base64") is BASE64_CODEC
    assert codec_for("aes", KEY).decode(KNOWN_VECTOR) == PLAIN
    with pytest.raises(ValueError, match="aes_key"):
        codec_for("aes")
    with pytest.raises(ValueError, match="choices: base64, aes"):
        codec_for("rot13")


_TENANT = """
[[tenants]]
name = "acme"
base_url = "https://cosmic-sandbox.piaozone.com/acme"
app_id = "acme-app"
app_secret = "{secret}"
account_id = "1900000000000000001"
user = "bridge"
usertype = "UserName"
business_system_code = "ACMEERP"
seller_tax_ids = ["91310000MA1FL0BENC"]
"""


def _write(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "tenants.toml"
    path.write_text(_TENANT.format(secret="a-real-secret-3f9c1e77b2d04a58") + extra, "utf-8")
    return path


def test_tenant_default_is_base64(tmp_path: Path) -> None:
    [tenant] = load_tenants(_write(tmp_path, "")).tenants
    assert tenant.data_encryption == "base64" and tenant.aes_key is None
    assert codec_for_tenant(tenant) is BASE64_CODEC


def test_tenant_aes_key_forms(tmp_path: Path) -> None:
    key_file = tmp_path / "aes.key"
    key_file.write_text(KEY + "\n", "utf-8")
    for extra in (
        f'data_encryption = "aes"\naes_key = "{KEY}"\n',
        'data_encryption = "aes"\naes_key_file = "aes.key"\n',
        'data_encryption = "aes"\naes_key_env = "ACME_AES_KEY"\n',
    ):
        environ = {"ACME_AES_KEY": KEY}
        [tenant] = load_tenants(_write(tmp_path, extra), environ=environ).tenants
        assert tenant.aes_key is not None and tenant.aes_key.get_secret_value() == KEY
        assert KEY not in repr(tenant)
        assert codec_for_tenant(tenant).decode(KNOWN_VECTOR) == PLAIN


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('data_encryption = "aes"\n', "needs aes_key"),
        (f'aes_key = "{KEY}"\n', "data_encryption is 'base64'"),
        ('data_encryption = "des"\n', "data_encryption"),
        ('data_encryption = "aes"\naes_key_env = "UNSET_AES_KEY_VAR"\n', "aes_key_env"),
        (f'data_encryption = "aes"\naes_key = "{KEY}"\naes_key_env = "X"\n', "use exactly one"),
        ('data_encryption = "aes"\naes_key = "changeme"\n', "placeholder"),
    ],
)
def test_tenant_aes_settings_refused(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(TenantsFileError, match=message):
        load_tenants(_write(tmp_path, extra), environ={})
