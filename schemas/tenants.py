"""The tenants file: one ``[[tenants]]`` table per Kingdee Invoice Cloud account (TOML).

The bridge and the simulator read the same file (``FAPIAO_TENANTS_FILE``), so
``tenants.example.toml`` works against ``fapiao simulator`` out of the box.

| key | type | meaning (Kingdee console page) |
|---|---|---|
| ``name`` | slug | our name for the account (logs, metrics, CLI) |
| ``base_url`` | URL | tenant base incl. tenant path: ``https://cosmic-sandbox.piaozone.com/x`` |
| ``app_id`` | str | 第三方应用 appId (开放服务云 → OpenApi → 安全策略 → 第三方应用) |
| ``app_secret`` | secret | that app's appSecret / appSecuret (same page) |
| ``account_id`` | str | 数据中心 id (accountId) |
| ``user`` | str | login user for login.do (user name or phone, see ``usertype``) |
| ``usertype`` | ``UserName``/``Mobile`` | how ``user`` is to be read |
| ``business_system_code`` | str | 业务系统编码 (发票云 → 系统管理 → 业务系统列表) |
| ``seller_tax_ids`` | list | 销方税号 this account issues for (each in ONE tenant only) |
| ``auto_invoice`` | bool | default ``autoInvoice`` for documents that do not say |
| ``unlinked_red_bills`` | ``refuse``/``accept`` | an ERP red bill whose blue invoice no |
| | | document of the bridge holds: refused (default), or accepted unlinked (invoices |
| | | issued before the bridge; the cloud still checks it at push) |
| ``rate_limit_per_second`` | float > 0 | calls per second we allow toward this tenant |
| ``erp_webhook_url`` | URL | where outcomes are posted back to the ERP (optional) |
| ``erp_webhook_secret`` | secret | HMAC key for those posts (optional) |
| ``paused`` | bool | operator switch: no pushes while true |
| ``sandbox`` | bool | a test account (沙箱): ``fapiao probe`` may push test bills to it |
| ``data_encryption`` | ``base64``/``aes`` | 加密策略 of ``business_system_code`` (``base64``) |
| ``aes_key`` | secret | its aesKey; required iff ``data_encryption = "aes"`` |
| ``[tenants.cloud]`` | table | what is KNOWN of this tenant's contract dialect (below) |

``[tenants.cloud]`` declares, per switch of ``schemas.cloud_contract.DIALECT_SWITCHES``, the
reading this tenant has been seen to use (``unknown_bill = "error"``). Names and values are
checked against that registry; an unknown one is an error naming the tenant, the key and the
choices. A switch not declared means "unknown": the bridge then behaves so that it is right
under EVERY value of it (docs/CLOUD-CONTRACT.md, "How the bridge behaves under each reading").

A ``business_system_code`` starting with ``3std1`` gets per-bill callbacks (5.1.03), any other
per-invoice callbacks (5.1.02).

``data``, answers and callbacks are encoded with ``schemas.data_codec.codec_for_tenant``
(AES-128-GCM, key ``SHA1(SHA1(aes_key))[:16]``, docs/CLOUD-CONTRACT.md §2.3 [C S16]).

Each secret (``app_secret``, ``erp_webhook_secret``, ``aes_key``) is given in exactly ONE of
three forms:

| form | example | the secret is |
|---|---|---|
| ``<key>`` | ``app_secret = "…"`` | the value itself (plaintext in the file) |
| ``<key>_file`` | ``app_secret_file = "/run/secrets/acme_app_secret"`` | the file's text |
| ``<key>_env`` | ``app_secret_env = "ACME_APP_SECRET"`` | that environment variable's value |

A secret file is read as UTF-8 without its trailing line breaks; a relative path is relative
to the tenants file's directory (docker/Kubernetes secrets are absolute: ``/run/secrets/…``).
``load_tenants`` reads the file or variable; a missing, unreadable or empty file, an unset or
empty variable, or two forms for one secret are errors naming the tenant, the key and the
path or variable (never the value).

Secrets are ``SecretStr``: ``repr``, ``str`` and ``model_dump_json`` show ``**********``.
Placeholder secrets (see ``is_placeholder_secret``) are refused unless the environment is
``development``, whichever form they came from. Every error names the file, the tenant and the
field (English + Chinese).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from schemas.cloud_contract import DIALECT_SWITCHES, DialectError, callback_style_for
from schemas.data_codec import codec_for_tenant
from schemas.kingdee import DataCodec

__all__ = [
    "PLACEHOLDER_MARKERS",
    "SECRET_KEYS",
    "TAXPAYER_ID_PATTERN",
    "Environment",
    "TenantConfig",
    "TenantsFile",
    "TenantsFileError",
    "is_placeholder_secret",
    "load_tenants",
    "normalise_tax_id",
]

Environment = Literal["development", "production", "test"]

# 统一社会信用代码 is 18 characters; older 税号 are 15, 17 or 20. Letters upper-case.
TAXPAYER_ID_PATTERN: Final = re.compile(r"^[0-9A-Z]{15,20}$")
_SLUG: Final = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,62})$")

# Lower-case substrings that mark a value someone forgot to replace.
PLACEHOLDER_MARKERS: Final[tuple[str, ...]] = (
    "change-me",
    "changeme",
    "change_me",
    "placeholder",
    "xxx",
    "todo",
    "replace",
    "example",
    "dummy",
)
_PLACEHOLDER_WORDS: Final = frozenset({"secret", "password", "passwd", "changeit", "test", "demo"})
MIN_SECRET_LENGTH: Final = 8

# The tenant keys holding secrets; each also accepts "<key>_file" and "<key>_env".
SECRET_KEYS: Final[tuple[str, ...]] = ("app_secret", "erp_webhook_secret", "aes_key")


class TenantsFileError(ValueError):
    """The tenants file is missing, not TOML, or describes an invalid tenant."""


def is_placeholder_secret(value: str | SecretStr | None) -> bool:
    """Empty, short (< 8), ``<...>``, one repeated character, or a well-known stand-in."""
    raw = value.get_secret_value() if isinstance(value, SecretStr) else (value or "")
    text = raw.strip()
    lowered = text.lower()
    if len(text) < MIN_SECRET_LENGTH:
        return True
    if text.startswith("<") and text.endswith(">"):
        return True
    if len(set(text)) == 1:
        return True
    if lowered in _PLACEHOLDER_WORDS:
        return True
    return any(marker in lowered for marker in PLACEHOLDER_MARKERS)


def normalise_tax_id(value: str) -> str:
    """Tax ids compare upper-case without surrounding blanks."""
    return value.strip().upper()


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


Stripped = Annotated[str, BeforeValidator(_strip)]


class TenantConfig(BaseModel):
    """One Kingdee account (table in the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Stripped
    base_url: AnyHttpUrl
    app_id: Stripped = Field(min_length=1)
    app_secret: SecretStr
    account_id: Stripped = Field(min_length=1)
    user: Stripped = Field(min_length=1)
    usertype: Literal["UserName", "Mobile"] = "Mobile"
    business_system_code: Stripped = Field(min_length=1)
    seller_tax_ids: list[str] = Field(min_length=1)
    auto_invoice: bool = True
    unlinked_red_bills: Literal["refuse", "accept"] = "refuse"
    rate_limit_per_second: float = Field(default=5.0, gt=0)
    erp_webhook_url: AnyHttpUrl | None = None
    erp_webhook_secret: SecretStr | None = None
    paused: bool = False
    sandbox: bool = False
    data_encryption: Literal["base64", "aes"] = "base64"
    aes_key: SecretStr | None = None
    cloud: dict[str, str] = Field(default_factory=dict)

    @field_validator("cloud", mode="before")
    @classmethod
    def _declared_dialect(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise ValueError(
                'must be a table of dialect switches, e.g. [tenants.cloud] unknown_bill = "error"'
                " / cloud 必须是表"
            )
        for name, reading in value.items():
            if name not in DIALECT_SWITCHES:
                raise ValueError(
                    f"unknown cloud switch {name!r}; switches: {', '.join(DIALECT_SWITCHES)}"
                    " / 未知的接口方言开关"
                )
            choices = DIALECT_SWITCHES[name]
            if reading not in choices:
                raise ValueError(
                    f"cloud.{name} = {reading!r} is not a reading of {name!r}; choices:"
                    f" {', '.join(choices)} / 接口方言取值不正确"
                )
        return dict(value)

    def declared(self, switch: str) -> str | None:
        """The declared reading of dialect ``switch``; None = unknown (be right under all)."""
        if switch not in DIALECT_SWITCHES:
            raise DialectError(f"unknown dialect switch {switch!r}")
        return self.cloud.get(switch)

    def declares(self, switch: str, *readings: str) -> bool:
        """True when ``switch`` is declared and its reading is one of ``readings``."""
        return self.declared(switch) in readings

    @model_validator(mode="after")
    def _aes_key_iff_aes(self) -> TenantConfig:
        has_key = self.aes_key is not None and bool(self.aes_key.get_secret_value())
        if self.data_encryption == "aes" and not has_key:
            raise ValueError(
                "data_encryption 'aes' needs aes_key (or aes_key_file / aes_key_env)"
                " / AES加密策略需要aes_key"
            )
        if self.data_encryption == "base64" and self.aes_key is not None:
            raise ValueError(
                "aes_key is given but data_encryption is 'base64'; set data_encryption = 'aes'"
                " or remove aes_key / 未启用AES加密却配置了aes_key"
            )
        return self

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _SLUG.match(value):
            raise ValueError(
                "must be a slug: lower-case letters, digits, '-' or '_', at most 63 characters"
                " / 名称只能包含小写字母、数字、-、_"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _plain_base(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        if value.query or value.fragment:
            raise ValueError(
                "must not carry a query string or fragment; give scheme://host[:port]/tenantPath"
                " / 地址不能包含查询参数或锚点"
            )
        return value

    @field_validator("seller_tax_ids")
    @classmethod
    def _tax_ids(cls, values: list[str]) -> list[str]:
        cleaned = [normalise_tax_id(v) for v in values]
        for tax_id in cleaned:
            if not TAXPAYER_ID_PATTERN.match(tax_id):
                raise ValueError(
                    f"{tax_id!r} is not a taxpayer id (15-20 letters/digits, e.g. an 18-character"
                    " 统一社会信用代码) / 销方税号格式不正确"
                )
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("lists a seller tax id twice / 销方税号重复")
        return cleaned

    @property
    def base(self) -> str:
        """The base URL without a trailing slash, ready for ``base + "/api/login.do"``."""
        return str(self.base_url).rstrip("/")

    @property
    def tenant_path(self) -> str:
        """The path part of the base URL (``/demo``), "" when the tenant has none."""
        return (self.base_url.path or "").rstrip("/")

    def url_for(self, path: str) -> str:
        """Absolute URL of an endpoint path such as ``/kapi/app/sim/openApi``."""
        return self.base + "/" + path.lstrip("/")

    @property
    def callback_style(self) -> Literal["per_invoice", "per_bill"]:
        return callback_style_for(self.business_system_code)


class TenantsFile(BaseModel):
    """All tenants; names unique, and a seller tax id belongs to one tenant only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenants: list[TenantConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> TenantsFile:
        names: set[str] = set()
        owner: dict[str, str] = {}
        for tenant in self.tenants:
            if tenant.name in names:
                raise ValueError(f"tenant name {tenant.name!r} is used twice / 租户名称重复")
            names.add(tenant.name)
            for tax_id in tenant.seller_tax_ids:
                if tax_id in owner:
                    raise ValueError(
                        f"seller tax id {tax_id} belongs to both {owner[tax_id]!r} and"
                        f" {tenant.name!r}; a seller may belong to one tenant only"
                        " / 同一销方税号只能属于一个租户"
                    )
                owner[tax_id] = tenant.name
        return self

    def tenant_for_seller(self, tax_id: str) -> TenantConfig | None:
        """The tenant issuing for ``tax_id`` (case-insensitive), None when nobody does."""
        wanted = normalise_tax_id(tax_id)
        for tenant in self.tenants:
            if wanted in tenant.seller_tax_ids:
                return tenant
        return None

    def by_name(self, name: str) -> TenantConfig | None:
        for tenant in self.tenants:
            if tenant.name == name:
                return tenant
        return None

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tenants]

    def callback_codecs(self) -> list[DataCodec]:
        """The codecs to try on a callback's ``data`` after BASE64: one per AES tenant.

        A callback does not say which tenant sent it; ``schemas.kingdee.parse_callback_with``
        tries each key (AES-GCM's tag makes a wrong key fail cleanly).
        """
        return [codec_for_tenant(t) for t in self.tenants if t.data_encryption == "aes"]


def _describe(errors: ValidationError, path: Path, raw: Any) -> list[str]:
    lines: list[str] = []
    for err in errors.errors():
        loc = list(err["loc"])
        where = f"{path}"
        if len(loc) >= 2 and loc[0] == "tenants" and isinstance(loc[1], int):
            index = loc[1]
            label = f"#{index + 1}"
            try:
                tenant_name = raw["tenants"][index].get("name")
            except (KeyError, IndexError, TypeError, AttributeError):
                tenant_name = None
            if isinstance(tenant_name, str) and tenant_name:
                label = f"{tenant_name!r} (#{index + 1})"
            where += f": tenant {label}"
            field = ".".join(str(p) for p in loc[2:])
            if field:
                where += f", field {field!r}"
        elif loc:
            where += f": {'.'.join(str(p) for p in loc)}"
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    return lines


def _tenant_label(raw_tenant: Any, index: int) -> str:
    name = raw_tenant.get("name") if isinstance(raw_tenant, dict) else None
    return f"{name!r} (#{index + 1})" if isinstance(name, str) and name else f"#{index + 1}"


def _read_secret_file(value: Any, base: Path) -> tuple[str | None, str]:
    """(the secret, "") or (None, why not)."""
    if not isinstance(value, str) or not value.strip():
        return None, "must be a file path / 必须是文件路径"
    path = Path(value.strip())
    if not path.is_absolute():
        path = base / path
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None, f"secret file {path} does not exist / 密钥文件不存在"
    except UnicodeDecodeError:
        return None, f"secret file {path} is not UTF-8 text / 密钥文件不是UTF-8文本"
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return None, f"cannot read secret file {path} ({reason}) / 无法读取密钥文件"
    secret = text.rstrip("\r\n")
    if not secret.strip():
        return None, f"secret file {path} is empty / 密钥文件为空"
    return secret, ""


def _read_secret_env(value: Any, environ: Mapping[str, str]) -> tuple[str | None, str]:
    """(the secret, "") or (None, why not)."""
    if not isinstance(value, str) or not value.strip():
        return None, "must be an environment variable name / 必须是环境变量名"
    name = value.strip()
    secret = environ.get(name)
    if secret is None:
        return None, f"environment variable {name} is not set / 环境变量未设置"
    if not secret.strip():
        return None, f"environment variable {name} is empty / 环境变量为空"
    return secret, ""


def _resolve_secrets(
    raw: dict[str, Any], file: Path, environ: Mapping[str, str]
) -> dict[tuple[int, str], str]:
    """Replace every ``<key>_file`` / ``<key>_env`` of ``raw`` by ``<key>`` (in place).

    Returns where each resolved secret came from, keyed by (tenant index, key), for messages.
    """
    tenants = raw.get("tenants")
    if not isinstance(tenants, list):
        return {}
    problems: list[str] = []
    sources: dict[tuple[int, str], str] = {}
    for index, tenant in enumerate(tenants):
        if not isinstance(tenant, dict):
            continue
        where = f"{file}: tenant {_tenant_label(tenant, index)}"
        for key in SECRET_KEYS:
            given = [k for k in (key, f"{key}_file", f"{key}_env") if k in tenant]
            if len(given) > 1:
                both = " and ".join(repr(k) for k in given)
                problems.append(
                    f"{where}: {both} are {'both' if len(given) == 2 else 'all'} given;"
                    " use exactly one of them"
                    " / 同一密钥只能用一种方式提供"
                )
                continue
            if not given or given[0] == key:
                continue
            form = given[0]
            value = tenant.pop(form)
            if form.endswith("_file"):
                secret, why = _read_secret_file(value, file.parent)
            else:
                secret, why = _read_secret_env(value, environ)
            if secret is None:
                problems.append(f"{where}, field {form!r}: {why}")
                continue
            tenant[key] = secret
            sources[(index, key)] = f"{form} {str(value).strip()}"
    if problems:
        raise TenantsFileError("invalid tenants file / 租户配置无效:\n" + "\n".join(problems))
    return sources


def _refuse_placeholders(
    tenants: TenantsFile,
    path: Path,
    environment: str,
    sources: Mapping[tuple[int, str], str] | None = None,
) -> None:
    if environment == "development":
        return
    problems: list[str] = []
    for index, tenant in enumerate(tenants.tenants):
        secrets = {"app_secret": tenant.app_secret}
        if tenant.erp_webhook_secret is not None:
            secrets["erp_webhook_secret"] = tenant.erp_webhook_secret
        if tenant.aes_key is not None:
            secrets["aes_key"] = tenant.aes_key
        for field, secret in secrets.items():
            if is_placeholder_secret(secret):
                source = (sources or {}).get((index, field))
                origin = f" (from {source})" if source else ""
                problems.append(
                    f"{path}: tenant {tenant.name!r}, field {field!r}{origin}: placeholder or"
                    f" too short secret refused in {environment} (allowed only with"
                    " FAPIAO_ENVIRONMENT=development) / 非开发环境不允许使用占位密钥"
                )
    if problems:
        raise TenantsFileError("\n".join(problems))


def load_tenants(
    path: str | Path,
    environment: str = "production",
    *,
    environ: Mapping[str, str] | None = None,
) -> TenantsFile:
    """Read and validate the tenants TOML file; placeholder secrets only in development.

    ``<key>_env`` secrets are looked up in ``environ`` (default: the process environment).
    """
    file = Path(path)
    try:
        text = file.read_bytes()
    except FileNotFoundError as exc:
        raise TenantsFileError(
            f"{file}: tenants file not found (set FAPIAO_TENANTS_FILE; see tenants.example.toml)"
            " / 找不到租户配置文件"
        ) from exc
    except OSError as exc:
        raise TenantsFileError(
            f"{file}: cannot read tenants file ({exc}) / 无法读取租户配置文件"
        ) from exc
    try:
        raw = tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise TenantsFileError(f"{file}: not UTF-8 ({exc}) / 文件不是UTF-8编码") from exc
    except tomllib.TOMLDecodeError as exc:
        raise TenantsFileError(f"{file}: not valid TOML ({exc}) / TOML格式错误") from exc
    if "tenants" not in raw:
        raise TenantsFileError(f"{file}: no [[tenants]] table / 未定义任何租户 ([[tenants]])")
    sources = _resolve_secrets(raw, file, os.environ if environ is None else environ)
    try:
        tenants = TenantsFile.model_validate(raw)
    except ValidationError as exc:
        raise TenantsFileError(
            "invalid tenants file / 租户配置无效:\n" + "\n".join(_describe(exc, file, raw))
        ) from exc
    _refuse_placeholders(tenants, file, environment, sources)
    return tenants
