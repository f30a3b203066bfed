"""One frozen settings object for every command, class and client steplog makes.

Read from the environment with the prefix ``STEPLOG_`` (and from an optional
``.env`` file). Nothing else in steplog reads ``os.environ``.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from streams.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path.home() / ".steplog"
#: The file ``steplog kafka start`` writes so that other commands find the broker.
BROKER_FILE = "kafka/broker.json"


class Settings(BaseSettings):
    """steplog's configuration. Every field maps to ``STEPLOG_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="STEPLOG_", frozen=True, env_file=".env", extra="ignore"
    )

    # --- Kafka -------------------------------------------------------------------
    bootstrap_servers: str | None = None
    topic_prefix: str = ""
    partitions: int = Field(default=8, ge=1, le=10_000)
    replication_factor: int = Field(default=1, ge=1, le=32)
    #: Largest record steplog writes (a 4 MiB step output plus its envelope).
    max_record_bytes: int = 8 * 1024 * 1024
    #: How long a write may wait for the broker before it counts as failed.
    produce_timeout_ms: int = Field(default=30_000, ge=1_000)

    # Security pass-through, applied to every Kafka client steplog creates.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None

    # --- Events and HTTP API -------------------------------------------------------
    event_keys: Annotated[tuple[str, ...], NoDecode] = ()
    signing_key: SecretStr | None = None
    schema_registry_url: str | None = None
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8288, ge=0, le=65535)
    max_event_bytes: int = 512 * 1024
    max_events_per_request: int = 5_000
    max_request_bytes: int = 10 * 1024 * 1024

    # --- State -------------------------------------------------------------------
    data_dir: Path = DEFAULT_DATA_DIR
    #: How long state of finished runs (memos, waits, timers) is kept.
    run_retention: timedelta = timedelta(days=7)
    #: How long event ids and idempotency keys deduplicate.
    dedup_window: timedelta = timedelta(hours=24)
    #: Run states a retention sweep looks at per journal record (it goes on in another).
    sweep_batch: int = Field(default=500, ge=1)

    # --- Workers -------------------------------------------------------------------
    #: How long an agent keeps applying a run's effects inline before it detaches
    #: the run (its later effects then come back through the run journal).
    inline_budget_ms: float = Field(default=5.0, ge=0)
    #: Skip that wait for a function whose runs almost never end within it (slow
    #: steps): it would only hold up the partition's next records.
    inline_adaptive: bool = True
    #: Runs executing at once in one worker (sleeping runs do not count).
    max_active_runs: int = Field(default=10_000, ge=1)
    #: Multiplies retry backoff delays (tests use a small value).
    retry_backoff_scale: float = Field(default=1.0, ge=0)
    #: How often due timers are looked for.
    timer_tick_ms: float = Field(default=10.0, gt=0)
    #: How often workers commit consumer offsets. Records after the last commit are
    #: read again after a crash (harmless: re-deliveries start no second run).
    commit_interval_ms: float = Field(default=500.0, gt=0)
    #: How long the broker keeps a silent worker in the consumer group. A worker killed
    #: with SIGKILL holds its partitions until then, so it is the shortest brokers take
    #: by default (group.min.session.timeout.ms, 6 s; they refuse values outside
    #: group.min/max.session.timeout.ms). Heartbeats go every half second from the consumer's
    #: own thread, so a busy or blocked event loop does not miss them.
    session_timeout_ms: float = Field(default=6_000.0, ge=1_000, le=90_000)
    #: A worker logs a warning (naming the step) when its event loop is blocked this
    #: long, e.g. by an async step body that calls time.sleep; 0 turns the check off.
    loop_block_warn_ms: float = Field(default=1_000.0, ge=0)

    @field_validator("event_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(k.strip() for k in value.split(",") if k.strip())
        return value

    # --- Derived -------------------------------------------------------------------
    def topic(self, name: str) -> str:
        """The full name of one of steplog's topics (``events``, ``events.dlq`` ...)."""
        return f"{self.topic_prefix}{name}"

    @property
    def broker_file(self) -> Path:
        return self.data_dir / BROKER_FILE

    def resolved_bootstrap(self) -> str:
        """The bootstrap servers to use: configured ones, else the local broker's."""
        if self.bootstrap_servers:
            return self.bootstrap_servers
        try:
            record = json.loads(self.broker_file.read_text())
        except FileNotFoundError:
            raise ConfigError(
                "no Kafka broker configured: set STEPLOG_BOOTSTRAP_SERVERS, "
                f"or start the local one with `steplog kafka start` (looked in {self.broker_file})"
            ) from None
        if not record.get("pid"):
            raise ConfigError(
                f"the local broker recorded in {self.broker_file} is stopped: start it with "
                "`steplog kafka start` (or set STEPLOG_BOOTSTRAP_SERVERS)"
            )
        bootstrap = str(record["bootstrap"])
        log.info("using the local broker at %s (recorded in %s)", bootstrap, self.broker_file)
        return bootstrap

    def kafka_security(self) -> dict[str, str]:
        """Security settings in librdkafka (confluent-kafka) names."""
        conf: dict[str, str] = {"security.protocol": self.security_protocol.lower()}
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_cafile:
            conf["ssl.ca.location"] = str(self.ssl_cafile)
        if self.ssl_certfile:
            conf["ssl.certificate.location"] = str(self.ssl_certfile)
        if self.ssl_keyfile:
            conf["ssl.key.location"] = str(self.ssl_keyfile)
        if self.ssl_key_password:
            conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        return conf

    def kafka_config(self, **extra: Any) -> dict[str, Any]:
        """A confluent-kafka client config: bootstrap, security, then ``extra``."""
        conf: dict[str, Any] = {"bootstrap.servers": self.resolved_bootstrap()}
        conf.update(self.kafka_security())
        conf.update(extra)
        return conf

    def producer_config(self, **extra: Any) -> dict[str, Any]:
        """An idempotent, acks=all producer sized for steplog's largest records."""
        return self.kafka_config(
            **{
                "enable.idempotence": True,
                "acks": "all",
                # A lone event leaves at once (a sequential run's latency gains ~1 ms
                # per send); records queued while requests are in flight still batch.
                "linger.ms": 0,
                "message.max.bytes": self.max_record_bytes + 65536,
                "compression.type": "lz4",
                "message.timeout.ms": self.produce_timeout_ms,
                **extra,
            }
        )
