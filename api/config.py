"""Settings, read from the environment once, when the app is created (never at import)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values that are fine on a laptop and never in production.
PLACEHOLDERS = {"", "changethis", "sk_test_placeholder", "whsec_placeholder"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    environment: Literal["development", "test", "production"] = "production"

    # The PostgreSQL server (libpq URI or key=value string). The service's connections
    # SET ROLE to database_role, which may only execute the api functions. Through a pooler in
    # transaction mode (PgBouncer), database_role is empty and the login is a member of
    # tollgate_app: SET ROLE is session state (docs/OPERATIONS.md, "Behind PgBouncer").
    database_url: str
    database_role: str | None = "tollgate_app"
    # A direct connection to the same database for LISTEN (the Stripe event applier's
    # wake-ups), which a transaction pooler cannot carry; None: database_url.
    database_listen_url: str | None = None
    db_pool_min_size: int = Field(default=2, ge=1)
    db_pool_max_size: int = Field(default=10, ge=1)
    # Seconds a request waits for a free connection before it gets 503.
    db_pool_timeout: float = Field(default=5.0, gt=0)
    # A hot standby of database_url's server for the GET routes (api/reads.py: a caller reads
    # its own writes, others see the standby's lag); None: everything on database_url.
    database_read_url: str | None = None

    # Each worker applies the Stripe events webhooks stored (api/applier.py). Off when
    # `tollgate apply-events` runs on its own instead (several appliers are safe either way).
    apply_stripe_events: bool = True
    # Events per applier transaction.
    apply_batch: int = Field(default=100, ge=1, le=5000)

    stripe_api_key: SecretStr
    # No webhook secret here: PostgreSQL verifies webhook signatures with the secrets
    # registered in it (`tollgate webhook-secret add`; `tollgate migrate` registers
    # STRIPE_WEBHOOK_SECRET), which the service's role cannot read or change.
    # Another Stripe API address (an emulator such as localstripe); None for Stripe itself.
    stripe_api_base: str | None = None
    stripe_timeout: float = Field(default=15.0, gt=0)

    # GET /metrics answers anyone who can reach it, unless this is set: then only requests
    # with Authorization: Bearer <METRICS_TOKEN> (Prometheus: authorization.credentials).
    metrics_token: SecretStr | None = None

    @field_validator("metrics_token", "database_listen_url", "database_read_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _no_placeholder_secrets(self) -> Settings:
        if self.environment == "production":
            if self.stripe_api_key.get_secret_value() in PLACEHOLDERS:
                raise ValueError("STRIPE_API_KEY must be set to a real secret in production")
        return self
