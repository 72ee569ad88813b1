"""The tenants the simulator serves, read from the same tenants file as the bridge.

Each tenant is served under the path of its base URL: base ``http://127.0.0.1:8765/demo`` →
``/demo/api/getAppToken.do``, ``/demo/api/login.do``, ``/demo/kapi/app/sim/openApi``, and
invoice files under ``/demo/doc/free/fileInfo/preview/``. Several tenants (accounts) may share
one path; the token calls pick the tenant by ``accountId``, later calls by the token.

``SimTenant`` is the simulator's read-only view of a ``schemas.tenants.TenantConfig``: only
what the cloud checks (ids, secret, user, business system codes, seller tax ids, autoInvoice,
the 加密策略 ``data_encryption``/``aes_key``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from schemas.data_codec import codec_for
from schemas.kingdee import DataCodec

__all__ = ["SimTenant", "TenantDirectory", "base_path", "tenants_from_config"]


def base_path(base_url: str) -> str:
    """The path part of a base URL without the trailing slash (``""`` for the root)."""
    return urlsplit(base_url).path.rstrip("/")


@dataclass(frozen=True, slots=True)
class SimTenant:
    name: str
    base_url: str
    app_id: str
    app_secret: str
    account_id: str
    user: str
    usertype: str
    business_system_codes: frozenset[str]
    seller_tax_ids: frozenset[str]
    auto_invoice: bool
    data_encryption: str = "base64"
    aes_key: str = ""

    @property
    def codec(self) -> DataCodec:
        """How this tenant's ``data`` is encoded (BASE64 or AES, §2.3)."""
        return codec_for(self.data_encryption, self.aes_key or None)

    @property
    def path(self) -> str:
        return base_path(self.base_url)

    @property
    def origin(self) -> str:
        """The base URL without a trailing slash: where this tenant's file URLs point."""
        return self.base_url.rstrip("/")

    @classmethod
    def from_config(cls, config: Any) -> SimTenant:
        """From a ``TenantConfig`` (duck-typed: only the public attributes are read)."""
        secret = config.app_secret
        secret_text = secret.get_secret_value() if hasattr(secret, "get_secret_value") else secret
        codes = {str(config.business_system_code)}
        codes.update(str(code) for code in getattr(config, "extra_business_system_codes", ()))
        return cls(
            name=str(config.name),
            base_url=str(config.base_url),
            app_id=str(config.app_id),
            app_secret=str(secret_text),
            account_id=str(config.account_id),
            user=str(config.user),
            usertype=str(config.usertype),
            business_system_codes=frozenset(codes),
            seller_tax_ids=frozenset(str(t) for t in config.seller_tax_ids),
            auto_invoice=_flag(config.auto_invoice),
            data_encryption=str(getattr(config, "data_encryption", "base64")),
            aes_key=_secret_text(getattr(config, "aes_key", None)),
        )


def _secret_text(value: object) -> str:
    if value is None:
        return ""
    get = getattr(value, "get_secret_value", None)
    return str(get() if callable(get) else value)


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip() in {"1", "true", "True", "yes"}


def tenants_from_config(source: Any) -> list[SimTenant]:
    """A ``TenantsFile`` (anything with ``.tenants``), a sequence of configs, or of SimTenants."""
    items: Iterable[Any] = source.tenants if hasattr(source, "tenants") else source
    if isinstance(items, dict):
        items = items.values()
    return [t if isinstance(t, SimTenant) else SimTenant.from_config(t) for t in items]


class TenantDirectory:
    """Tenants by name and by path; refuses two tenants with one name or one accountId+path."""

    def __init__(self, tenants: Sequence[SimTenant]) -> None:
        self.by_name: dict[str, SimTenant] = {}
        self.by_path: dict[str, list[SimTenant]] = {}
        for tenant in tenants:
            if tenant.name in self.by_name:
                raise ValueError(f"two tenants are named {tenant.name!r}")
            siblings = self.by_path.setdefault(tenant.path, [])
            if any(t.account_id == tenant.account_id for t in siblings):
                raise ValueError(
                    f"tenants at path {tenant.path or '/'!r} share accountId {tenant.account_id!r}"
                )
            self.by_name[tenant.name] = tenant
            siblings.append(tenant)

    def __iter__(self) -> Iterator[SimTenant]:
        return iter(self.by_name.values())

    def at(self, path: str, account_id: str) -> SimTenant | None:
        for tenant in self.by_path.get(path, ()):
            if tenant.account_id == account_id:
                return tenant
        return None
