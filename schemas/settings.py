"""``Settings``: every knob of fapiao-bridge, from ``FAPIAO_*`` environment variables.

Read once by a composition root (``Settings.load()``), never at import time, then passed down.
Nested groups use ``__``: ``FAPIAO_PUSH__MAX_ATTEMPTS=5``. Lists accept a comma-separated
value or a JSON array: ``FAPIAO_API_KEYS=k1,k2``, ``FAPIAO_POLL__SCHEDULE_SECONDS=5,15,60``.

| variable | default | meaning |
|---|---|---|
| ``FAPIAO_DATABASE_URL`` | ``sqlite:///fapiao.db`` | SQLAlchemy URL (sqlite or postgresql) |
| ``FAPIAO_BROKER_URL`` | ``redis://127.0.0.1:6379/0`` | Celery broker |
| ``FAPIAO_REDIS_URL`` | ``redis://127.0.0.1:6379/0`` | token cache, locks, rate limits |
| ``FAPIAO_TENANTS_FILE`` | ``tenants.toml`` | the tenants TOML file (``schemas.tenants``) |
| ``FAPIAO_API_KEYS`` | (none) | keys accepted by the HTTP API; prod: required by the API |
| ``FAPIAO_CALLBACK_SECRET`` | (none) | secret path part of the callback URL; ditto |
| ``FAPIAO_ENVIRONMENT`` | ``production`` | ``development`` / ``production`` / ``test`` |
| ``FAPIAO_LOG_FORMAT`` / ``_LEVEL`` | ``json`` / ``INFO`` | ``json`` or ``console``; level |
| ``FAPIAO_TOKENS__REFRESH_MARGIN_SECONDS`` | 600 | refresh this long before expire_time |
| ``FAPIAO_TOKENS__LOCK_TIMEOUT_SECONDS`` | 10 | single-flight refresh lock lifetime |
| ``FAPIAO_TOKENS__LOCK_WAIT_SECONDS`` | 15 | how long a waiter blocks for that lock |
| ``FAPIAO_HTTP__CONNECT_TIMEOUT_SECONDS`` | 5 | toward the cloud and ERP webhooks |
| ``FAPIAO_HTTP__READ_TIMEOUT_SECONDS`` | 30 | ditto; a read timeout on a push = in_doubt |
| ``FAPIAO_PUSH__MAX_ATTEMPTS`` | 8 | transient push failures before ``failed`` |
| ``FAPIAO_PUSH__BACKOFF_BASE_SECONDS`` | 2 | full-jitter backoff: base × 2^attempt … |
| ``FAPIAO_PUSH__BACKOFF_CAP_SECONDS`` | 300 | … capped; must stay ≤ visibility timeout / 4 |
| ``FAPIAO_PUSH__BATCH_SIZE`` | 20 | documents per ``fapiao.push_batch`` message (intake, sweep) |
| ``FAPIAO_PUSH__BATCH_CONCURRENCY`` | 8 | BILL.PUSH calls in flight at once inside one batch task |
| ``FAPIAO_BROKER__VISIBILITY_TIMEOUT_SECONDS`` | 3600 | Redis transport visibility timeout |
| ``FAPIAO_BROKER__UNACKED_RESTORE_INTERVAL_SECONDS`` | 2 | kombu restore sweep (default 10) |
| ``FAPIAO_BROKER__UNACKED_RESTORE_THROTTLE_SECONDS`` | 1 | kombu restore throttle (default 10) |
| ``FAPIAO_IN_DOUBT__MAX_AGE_SECONDS`` | 86400 | in_doubt longer than this → failed + alert |
| ``FAPIAO_IN_DOUBT__MAX_QUERIES`` | 20 | queries before giving up on in_doubt |
| ``FAPIAO_POLL__SCHEDULE_SECONDS`` | 5,15,60,300,900,3600,7200,14400,21600 | query delays |
| ``FAPIAO_POLL__CAP_SECONDS`` | 21600 | after the schedule, poll every this long |
| ``FAPIAO_POLL__ALERT_AFTER_SECONDS`` | 86400 | pushed without a result this long → alert |
| ``FAPIAO_POLL__ISSUE_OVERDUE_SECONDS`` | 900 | auto-issue bill, no invoice this long → flagged |
| ``FAPIAO_STUCK_ALERT__<STATE>`` | see ``StuckAlertSettings`` | age alerts per state |
| ``FAPIAO_CALLBACKS__MAX_BODY_BYTES`` | 1048576 | larger callback bodies get 413 |
| ``FAPIAO_CALLBACKS__IP_ALLOWLIST`` | (any) | networks allowed to call back, e.g. ``10.0.0.0/8`` |
| ``FAPIAO_CALLBACKS__CONFIRM_WITH_QUERY`` | true | query before trusting a callback |
| ``FAPIAO_CALLBACKS__POLL_GRACE_SECONDS`` | 60 | a stored callback defers its document's poll |
| ``FAPIAO_ERP_WEBHOOK__MAX_ATTEMPTS`` | 12 | webhook deliveries before giving up |
| ``FAPIAO_ERP_WEBHOOK__BACKOFF_CAP_SECONDS`` | 600 | cap of the webhook retry backoff |
| ``FAPIAO_RETRY__<KIND>__<COLUMN>`` | see below | one row of the retry table per kind |
| ``FAPIAO_METRICS__WORKER_PORT`` | 0 | ``celery worker`` serves its metrics on this port (0: off) |
| ``FAPIAO_METRICS__HOST`` | ``0.0.0.0`` | interface of that exporter |
| ``FAPIAO_METRICS__MULTIPROC_DIR`` | (system temp) | parent of a fresh per-start dir of counters |
| ``FAPIAO_CONSOLE__USERS`` | | console accounts, JSON ``[{"name","role","password_hash"}]`` |
| ``FAPIAO_CONSOLE__USERS_FILE`` | (none) | or a TOML/JSON file of them (``[[users]]``) |
| ``FAPIAO_CONSOLE__SESSION_SECRET`` | (none) | signs console sessions; required with accounts |
| ``FAPIAO_CONSOLE__SESSION_MAX_AGE_SECONDS`` | 28800 | a console login lasts this long |
| ``FAPIAO_CONSOLE__COOKIE_SECURE`` | (auto) | Secure session cookie; default: outside development |
| ``FAPIAO_CONSOLE__FLOWER_URL`` | ``http://127.0.0.1:5555`` | Flower, linked from a document page |

The retry table (``worker.retry_policy.RetryTable``, printed by ``python -m
worker.retry_policy``): one row per kind of retry, every column a variable
``FAPIAO_RETRY__<KIND>__<COLUMN>`` (columns ``MAX_ATTEMPTS``, ``BASE_SECONDS``, ``FACTOR``,
``STEP_SECONDS``, ``CAP_SECONDS``, ``JITTER``). The wait after failed attempt n is at most
min(cap, base × factor^(n−1) + step × (n−1)); with jitter it is drawn uniformly below that.
``MAX_ATTEMPTS`` counts every try, the first included; 0 means no limit (withdraw only).

| kind | max | base | factor | step | cap | jitter | older names feeding it (still honoured) |
|---|---|---|---|---|---|---|---|
| ``push`` | 8 | 2 | 2 | 0 | 300 | yes | ``FAPIAO_PUSH__MAX_ATTEMPTS``, ``…BACKOFF_BASE_SECONDS``, |
| | | | | | | | ``…BACKOFF_CAP_SECONDS`` |
| ``withdraw`` | 0 | 30 | 1 | 0 | 30 | no | — (no attempt counter: only base, cap, jitter) |
| ``webhook`` | 12 | 5 | 2 | 0 | 600 | yes | ``FAPIAO_ERP_WEBHOOK__MAX_ATTEMPTS``, |
| | | | | | | | ``…BACKOFF_CAP_SECONDS`` |
| ``reconcile`` | 30 | 2 | 1 | 2 | 60 | no | — |
| ``task`` | 6 | 2 | 2 | 0 | 30 | yes | — |
| ``publish`` | 3 | 0 | 1 | 0.2 | 0.5 | no | — (kombu's publish retry: factor must be 1) |

A base left unset is clamped to the row's cap. Setting an older name and its ``RETRY`` twin to
different values is refused. BILL.INVOICE.QUERY retries (in-doubt) follow the poll schedule
(``FAPIAO_POLL__*``), bounded by ``FAPIAO_IN_DOUBT__MAX_QUERIES``; the table shows them as the
``query`` row.

``Settings.load()`` turns a validation failure into ``SettingsError`` whose lines each start
with the ``FAPIAO_...`` variable at fault. Placeholder secrets are refused outside
``development`` wherever they are set. API keys and a callback secret are required in
production by the HTTP API process only (``Settings.load(role="api")``, i.e. ``fapiao api``
and ``producers.http.app_from_environment``): ``fapiao db upgrade``, read-only commands,
workers and beat start without them.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import asdict, dataclass, replace
from ipaddress import IPv4Network, IPv6Network, ip_address
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.tenants import Environment, TenantsFile, is_placeholder_secret, load_tenants

__all__ = [
    "ENV_PREFIX",
    "RETRY_DEFAULTS",
    "BrokerSettings",
    "CallbackSettings",
    "ConsoleSettings",
    "ConsoleUser",
    "ErpWebhookSettings",
    "HttpSettings",
    "InDoubtSettings",
    "MetricsSettings",
    "PollSettings",
    "ProcessRole",
    "PushSettings",
    "RetryKindName",
    "RetryRow",
    "RetryRowSettings",
    "RetrySettings",
    "Settings",
    "SettingsError",
    "StuckAlertSettings",
    "TokenSettings",
    "env_name",
]

ENV_PREFIX: Final = "FAPIAO_"

# Which process loads the settings: only "api" demands API keys and a callback secret.
ProcessRole = Literal["api", "worker", "cli"]


class SettingsError(ValueError):
    """Settings refused; every line names the ``FAPIAO_...`` variable at fault."""


def env_name(*loc: str | int) -> str:
    """``("push", "max_attempts")`` → ``FAPIAO_PUSH__MAX_ATTEMPTS`` (list indexes dropped)."""
    return ENV_PREFIX + "__".join(str(p).upper() for p in loc if isinstance(p, str))


def _split_list(value: Any) -> Any:
    """Comma-separated text or a JSON array → list; anything else passes through."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


Seconds = Annotated[float, Field(gt=0)]
# Lists in env vars: "a,b,c" or a JSON array (NoDecode stops pydantic-settings' JSON-only parse).
IntList = Annotated[list[int], NoDecode, BeforeValidator(_split_list)]
NetworkList = Annotated[list[IPv4Network | IPv6Network], NoDecode, BeforeValidator(_split_list)]
SecretList = Annotated[list[SecretStr], NoDecode, BeforeValidator(_split_list)]


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenSettings(_Group):
    # lock_timeout: TTL of the per-tenant refresh lock. The holder extends it every third of
    # that while getAppToken + login run (worker.tokens), so a slow cloud never lets a second
    # process refresh; the TTL only bounds how long a crashed holder blocks the others.
    # lock_wait: how long the others wait for that refresh before treating it as transient
    # (a retry with backoff); kept short so a waiting task stays inside its time limit.
    refresh_margin_seconds: int = Field(default=600, ge=0, le=3600)
    lock_timeout_seconds: Seconds = 10.0
    lock_wait_seconds: Seconds = 15.0


class HttpSettings(_Group):
    connect_timeout_seconds: Seconds = 5.0
    read_timeout_seconds: Seconds = 30.0


class PushSettings(_Group):
    max_attempts: int = Field(default=8, ge=1, le=100)
    backoff_base_seconds: Seconds = 2.0
    backoff_cap_seconds: Seconds = 300.0
    batch_size: int = Field(default=20, ge=1, le=500)
    batch_concurrency: int = Field(default=8, ge=1, le=64)

    @model_validator(mode="after")
    def _base_below_cap(self) -> PushSettings:
        if self.backoff_base_seconds > self.backoff_cap_seconds:
            raise ValueError(
                f"{env_name('push', 'backoff_base_seconds')} must not exceed"
                f" {env_name('push', 'backoff_cap_seconds')} / 退避基数不能大于上限"
            )
        return self


class BrokerSettings(_Group):
    visibility_timeout_seconds: int = Field(default=3600, ge=60)
    unacked_restore_interval_seconds: Seconds = 2.0
    unacked_restore_throttle_seconds: Seconds = 1.0


class InDoubtSettings(_Group):
    max_age_seconds: int = Field(default=86400, ge=60)
    max_queries: int = Field(default=20, ge=1)


DEFAULT_POLL_SCHEDULE: Final = (5, 15, 60, 300, 900, 3600, 7200, 14400, 21600)


class PollSettings(_Group):
    schedule_seconds: IntList = Field(
        default_factory=lambda: list(DEFAULT_POLL_SCHEDULE), min_length=1
    )
    cap_seconds: int = Field(default=21600, ge=1)
    alert_after_seconds: int = Field(default=86400, ge=1)
    # An auto-issue bill with no invoice this long after the push is flagged for an operator:
    # under some readings a failed issuance never shows in the query (failed_in_query).
    issue_overdue_seconds: int = Field(default=900, ge=1)

    @model_validator(mode="after")
    def _schedule(self) -> PollSettings:
        name = env_name("poll", "schedule_seconds")
        if any(s <= 0 for s in self.schedule_seconds):
            raise ValueError(f"{name}: every delay must be a positive number of seconds")
        if any(
            b < a for a, b in zip(self.schedule_seconds, self.schedule_seconds[1:], strict=False)
        ):
            raise ValueError(f"{name}: delays must not decrease / 轮询间隔必须递增")
        if max(self.schedule_seconds) > self.cap_seconds:
            raise ValueError(
                f"{name}: no delay may exceed {env_name('poll', 'cap_seconds')}"
                f" ({self.cap_seconds}) / 轮询间隔不能超过上限"
            )
        return self

    def delay_for(self, attempt: int) -> int:
        """Seconds before poll number ``attempt`` (0-based); the cap once the list runs out."""
        if attempt < len(self.schedule_seconds):
            return self.schedule_seconds[max(0, attempt)]
        return self.cap_seconds


class StuckAlertSettings(_Group):
    """Age (seconds) after which a document still in that state raises an alert."""

    draft: int = Field(default=300, ge=1)
    pushing: int = Field(default=900, ge=1)
    in_doubt: int = Field(default=3600, ge=1)
    pushed: int = Field(default=86400, ge=1)
    partially_invoiced: int = Field(default=86400, ge=1)
    withdrawing: int = Field(default=3600, ge=1)
    # Polled until an operator re-issues or withdraws; same age as the poller's own alert.
    invoice_failed: int = Field(default=86400, ge=1)

    def for_state(self, state: str) -> int | None:
        """The alert age of ``state``; None for states that cannot be stuck (terminal ones)."""
        value = getattr(self, state, None) if state in type(self).model_fields else None
        return value if isinstance(value, int) else None


class CallbackSettings(_Group):
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    ip_allowlist: NetworkList = Field(default_factory=list)
    confirm_with_query: bool = True
    poll_grace_seconds: int = Field(default=60, ge=0, le=3600)
    # Stored callbacks one fapiao.reconcile task claims and confirms together.
    batch_size: int = Field(default=20, ge=1, le=500)

    def allows(self, address: str) -> bool:
        """Is a caller address allowed? An empty allow-list admits everyone."""
        if not self.ip_allowlist:
            return True
        try:
            ip = ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.ip_allowlist)


class ErpWebhookSettings(_Group):
    max_attempts: int = Field(default=12, ge=1, le=1000)
    backoff_cap_seconds: Seconds = 600.0


RetryKindName = Literal["push", "withdraw", "webhook", "reconcile", "task", "publish"]
RETRY_KINDS: Final[tuple[RetryKindName, ...]] = get_args(RetryKindName)


@dataclass(frozen=True, slots=True)
class RetryRow:
    """One resolved row of the retry table (module docstring); ``max_attempts`` 0 = no limit."""

    max_attempts: int
    base_seconds: float
    factor: float
    step_seconds: float
    cap_seconds: float
    jitter: bool


RETRY_DEFAULTS: Final[dict[RetryKindName, RetryRow]] = {
    "push": RetryRow(8, 2.0, 2.0, 0.0, 300.0, True),
    "withdraw": RetryRow(0, 30.0, 1.0, 0.0, 30.0, False),
    "webhook": RetryRow(12, 5.0, 2.0, 0.0, 600.0, True),
    "reconcile": RetryRow(30, 2.0, 1.0, 2.0, 60.0, False),
    "task": RetryRow(6, 2.0, 2.0, 0.0, 30.0, True),
    "publish": RetryRow(3, 0.0, 1.0, 0.2, 0.5, False),
}

# (kind, column) → the older setting that feeds it: (group, field).
_LEGACY_RETRY: Final[dict[tuple[RetryKindName, str], tuple[str, str]]] = {
    ("push", "max_attempts"): ("push", "max_attempts"),
    ("push", "base_seconds"): ("push", "backoff_base_seconds"),
    ("push", "cap_seconds"): ("push", "backoff_cap_seconds"),
    ("webhook", "max_attempts"): ("erp_webhook", "max_attempts"),
    ("webhook", "cap_seconds"): ("erp_webhook", "backoff_cap_seconds"),
}


class RetryRowSettings(_Group):
    """``FAPIAO_RETRY__<KIND>__*``: unset columns take the older setting or the default."""

    max_attempts: int | None = Field(default=None, ge=0, le=1000)
    base_seconds: float | None = Field(default=None, ge=0)
    factor: float | None = Field(default=None, ge=1, le=10)
    step_seconds: float | None = Field(default=None, ge=0)
    cap_seconds: float | None = Field(default=None, gt=0)
    jitter: bool | None = None


class RetrySettings(_Group):
    push: RetryRowSettings = Field(default_factory=RetryRowSettings)
    withdraw: RetryRowSettings = Field(default_factory=RetryRowSettings)
    webhook: RetryRowSettings = Field(default_factory=RetryRowSettings)
    reconcile: RetryRowSettings = Field(default_factory=RetryRowSettings)
    task: RetryRowSettings = Field(default_factory=RetryRowSettings)
    publish: RetryRowSettings = Field(default_factory=RetryRowSettings)


class MetricsSettings(_Group):
    # worker_port: 0 keeps the worker's exporter off (the API's /metrics is always on).
    # multiproc_dir: each worker start creates a fresh directory under it (default: the
    # system temp dir) and removes it at shutdown; a tmpfs keeps the writes off disk.
    worker_port: int = Field(default=0, ge=0, le=65535)
    host: str = "0.0.0.0"
    multiproc_dir: Path | None = None


CONSOLE_ROLES: Final = ("viewer", "operator")
# What ``fapiao console hash-password`` writes (producers.console.auth): Django's layout.
_PASSWORD_HASH = re.compile(r"^pbkdf2_sha256\$[0-9]{4,8}\$[^$]{8,}\$[A-Za-z0-9+/=]{40,}$")


class ConsoleUser(_Group):
    """One console account; the password only as a hash (``fapiao console hash-password``)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[^\s:]+$")
    role: Literal["viewer", "operator"]
    password_hash: SecretStr

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, value: SecretStr) -> SecretStr:
        if not _PASSWORD_HASH.match(value.get_secret_value()):
            raise ValueError(
                "password_hash must come from `fapiao console hash-password`"
                " (pbkdf2_sha256$…) / 密码哈希格式错误，请用 fapiao console hash-password 生成"
            )
        return value


class ConsoleSettings(_Group):
    """The operator console at ``/console``: accounts, session signing, the Flower link.

    Accounts come from ``users`` (JSON in the environment) and/or ``users_file``; with none,
    only API keys open the console. ``cookie_secure`` unset means Secure outside development.
    """

    users: list[ConsoleUser] = Field(default_factory=list)
    users_file: Path | None = None
    session_secret: SecretStr | None = None
    session_max_age_seconds: int = Field(default=28800, ge=60, le=30 * 86400)
    cookie_secure: bool | None = None
    flower_url: str = "http://127.0.0.1:5555"

    @field_validator("flower_url")
    @classmethod
    def _flower(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL / Flower 地址格式错误")
        return value.rstrip("/")

    def load_users(self) -> list[ConsoleUser]:
        """``users`` plus those of ``users_file`` (TOML ``[[users]]`` or a JSON list); a name
        may appear once. Raises SettingsError naming the variable at fault."""
        users = list(self.users)
        if self.users_file is not None:
            where = env_name("console", "users_file")
            try:
                text = self.users_file.read_text(encoding="utf-8")
                raw: Any = (
                    json.loads(text)
                    if self.users_file.suffix == ".json"
                    else tomllib.loads(text).get("users", [])
                )
                if isinstance(raw, dict):
                    raw = raw.get("users", [])
                users += [ConsoleUser.model_validate(item) for item in raw]
            except (OSError, ValueError, TypeError) as exc:
                raise SettingsError(f"{where} ({self.users_file}): {exc}") from exc
        names = [user.name for user in users]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise SettingsError(
                f"{env_name('console', 'users')}: account names appear twice: "
                f"{', '.join(duplicates)} / 操作台账号重复"
            )
        return users


class Settings(BaseSettings):
    """All settings; build with ``Settings.load()`` in a composition root."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        case_sensitive=False,
        extra="ignore",
        frozen=True,
    )

    database_url: str = "sqlite:///fapiao.db"
    broker_url: str = "redis://127.0.0.1:6379/0"
    redis_url: str = "redis://127.0.0.1:6379/0"
    tenants_file: Path = Path("tenants.toml")
    api_keys: SecretList = Field(default_factory=list)
    callback_secret: SecretStr | None = None
    environment: Annotated[Environment, BeforeValidator(_lower)] = "production"
    log_format: Annotated[Literal["json", "console"], BeforeValidator(_lower)] = "json"
    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)
    ] = "INFO"

    tokens: TokenSettings = Field(default_factory=TokenSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    push: PushSettings = Field(default_factory=PushSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    in_doubt: InDoubtSettings = Field(default_factory=InDoubtSettings)
    poll: PollSettings = Field(default_factory=PollSettings)
    stuck_alert: StuckAlertSettings = Field(default_factory=StuckAlertSettings)
    callbacks: CallbackSettings = Field(default_factory=CallbackSettings)
    erp_webhook: ErpWebhookSettings = Field(default_factory=ErpWebhookSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "sqlite+", "postgresql:", "postgresql+")):
            raise ValueError(
                f"{env_name('database_url')} must be an sqlite:// or postgresql:// URL"
                " / 数据库地址必须是sqlite或postgresql"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"{env_name('redis_url')} must be a redis://, rediss:// or unix:// URL"
                " / Redis地址格式错误"
            )
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError(
                f"{env_name('broker_url')} must be a URL such as redis://127.0.0.1:6379/0"
                " / 消息队列地址格式错误"
            )
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        visibility = self.broker.visibility_timeout_seconds
        rows = {kind: self._retry_row_checked(kind) for kind in RETRY_KINDS}
        # A countdown or runtime longer than the visibility timeout makes Redis redeliver the
        # task while it still waits/runs (docs/STACK.md: 3 tasks ran 12 times); keep a wide margin.
        for loc, value in (
            (self._retry_loc("push", "cap_seconds"), rows["push"].cap_seconds),
            (self._retry_loc("webhook", "cap_seconds"), rows["webhook"].cap_seconds),
            (("http", "read_timeout_seconds"), self.http.read_timeout_seconds),
        ):
            if value * 4 > visibility:
                raise ValueError(
                    f"{env_name(*loc)} ({value:g}) must stay at or below a quarter of"
                    f" {env_name('broker', 'visibility_timeout_seconds')} ({visibility})"
                    " / 重试间隔必须远小于可见性超时"
                )
        if self.tokens.lock_wait_seconds < self.http.connect_timeout_seconds:
            raise ValueError(
                f"{env_name('tokens', 'lock_wait_seconds')} must be at least"
                f" {env_name('http', 'connect_timeout_seconds')} / 令牌锁等待时间过短"
            )
        if self.environment != "development":
            self._refuse_placeholders()
        return self

    def retry_row(self, kind: RetryKindName) -> RetryRow:
        """The row ``kind`` of the retry table: default ← older setting ← ``FAPIAO_RETRY__``."""
        return self._retry_row_checked(kind)

    def _retry_given(self, kind: RetryKindName) -> dict[str, Any]:
        group: RetryRowSettings = getattr(self.retry, kind)
        return {name: value for name, value in group if value is not None}

    def _retry_loc(self, kind: RetryKindName, column: str) -> tuple[str, ...]:
        """Where ``column`` of ``kind`` was set, for error messages (the older name if any)."""
        legacy = _LEGACY_RETRY.get((kind, column))
        if column in self._retry_given(kind) or legacy is None:
            return ("retry", kind, column)
        return legacy

    def _retry_row_checked(self, kind: RetryKindName) -> RetryRow:
        given = self._retry_given(kind)
        values = asdict(RETRY_DEFAULTS[kind])
        for (row_kind, column), (group, name) in _LEGACY_RETRY.items():
            if row_kind != kind:
                continue
            legacy_group = getattr(self, group)
            legacy_value = getattr(legacy_group, name)
            if (
                column in given
                and name in legacy_group.model_fields_set
                and given[column] != legacy_value
            ):
                raise ValueError(
                    f"{env_name('retry', kind, column)} and {env_name(group, name)} disagree"
                    " (set one of them) / 两个重试设置互相矛盾"
                )
            values[column] = legacy_value
        values.update(given)
        row = RetryRow(**values)
        if "base_seconds" not in given and row.base_seconds > row.cap_seconds:
            row = replace(row, base_seconds=row.cap_seconds)
        self._refuse_bad_retry(kind, row)
        return row

    def _refuse_bad_retry(self, kind: RetryKindName, row: RetryRow) -> None:
        def name(column: str) -> str:
            return env_name(*self._retry_loc(kind, column))

        if row.base_seconds > row.cap_seconds:
            raise ValueError(
                f"{name('base_seconds')} must not exceed {name('cap_seconds')}"
                " / 退避基数不能大于上限"
            )
        if row.max_attempts == 0 and kind != "withdraw":
            raise ValueError(f"{name('max_attempts')} must be at least 1 / 重试次数至少为1")
        if kind == "withdraw" and (
            row.max_attempts != 0 or row.factor != 1 or row.step_seconds != 0
        ):
            raise ValueError(
                f"{env_name('retry', 'withdraw')}: a withdrawal keeps no attempt count, so"
                " MAX_ATTEMPTS must be 0, FACTOR 1 and STEP_SECONDS 0 / 撤回重试只能设置间隔"
            )
        if kind == "publish" and row.factor != 1:
            raise ValueError(
                f"{name('factor')} must be 1: kombu's publish retry grows by a step only"
                " / 发布重试只能线性增长"
            )

    def require_api_secrets(self) -> None:
        """The HTTP API's own demand: in production, API keys and a callback secret.

        Only the API process serves requests that need them; migrations, read-only commands,
        workers and beat start without them (``Settings.load(role="api")`` calls this).
        """
        if self.environment != "production":
            return
        problems: list[str] = []
        if not self.api_keys:
            problems.append(
                f"{env_name('api_keys')} is required in production (comma-separated keys)"
                " / 生产环境必须配置API密钥"
            )
        if self.callback_secret is None:
            problems.append(
                f"{env_name('callback_secret')} is required in production"
                " / 生产环境必须配置回调密钥"
            )
        if problems:
            raise SettingsError(
                "\n".join(["invalid settings for the HTTP API / 配置无效:", *problems])
            )

    def _refuse_placeholders(self) -> None:
        for index, key in enumerate(self.api_keys):
            if is_placeholder_secret(key):
                raise ValueError(
                    f"{env_name('api_keys')}: key #{index + 1} is a placeholder or shorter than"
                    f" 8 characters; refused in {self.environment} / 非开发环境不允许使用占位密钥"
                )
        secret = self.console.session_secret
        if secret is not None and is_placeholder_secret(secret):
            raise ValueError(
                f"{env_name('console', 'session_secret')} is a placeholder or shorter than 8"
                f" characters; refused in {self.environment} / 非开发环境不允许使用占位密钥"
            )
        if self.callback_secret is not None and is_placeholder_secret(self.callback_secret):
            raise ValueError(
                f"{env_name('callback_secret')} is a placeholder or shorter than 8 characters;"
                f" refused in {self.environment} / 非开发环境不允许使用占位密钥"
            )

    @classmethod
    def load(cls, *, role: ProcessRole | None = None, **overrides: Any) -> Settings:
        """Read the environment once; ``SettingsError`` names each bad ``FAPIAO_`` variable.

        ``role="api"`` (the HTTP API's composition roots) adds ``require_api_secrets()``.
        """
        try:
            settings = cls(**overrides)
        except ValidationError as exc:
            raise SettingsError(_explain(exc)) from exc
        if role == "api":
            settings.require_api_secrets()
        return settings

    def load_tenants(self) -> TenantsFile:
        """The tenants file named by ``FAPIAO_TENANTS_FILE``, checked for this environment."""
        return load_tenants(self.tenants_file, self.environment)


def _explain(exc: ValidationError) -> str:
    lines = ["invalid settings / 配置无效:"]
    for err in exc.errors():
        loc = [p for p in err["loc"] if isinstance(p, str | int)]
        message = err["msg"].removeprefix("Value error, ")
        if loc:
            lines.append(f"{env_name(*loc)}: {message}")
        else:
            lines.append(message)
    return "\n".join(lines)
