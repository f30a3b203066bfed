"""The names of steplog's topics: the one place they are spelled.

Fixed names (DESIGN "Kafka layout") and each app's internal topics, all after the
optional ``STEPLOG_TOPIC_PREFIX``. docs/runtime.md has the table of what each holds.
"""

from __future__ import annotations

from dataclasses import dataclass

EVENTS = "events"
DLQ = "events.dlq"
#: Run cancellations asked for by ``steplog runs cancel`` and ``DELETE /v1/runs/{id}``:
#: ``{"run_id", "reason"}`` as JSON, keyed by run id; every app's router reads it.
CANCELLATIONS = "steplog.cancellations"
FINISHED = "inngest/function.finished"
FAILED = "inngest/function.failed"
CANCELLED = "inngest/function.cancelled"
SYSTEM_EVENTS = (FINISHED, FAILED, CANCELLED)
#: steplog's topics shared by every app, before the prefix.
CORE = (EVENTS, DLQ, *(name.replace("/", ".") for name in SYSTEM_EVENTS), CANCELLATIONS)


def system_topic(event_name: str) -> str:
    """The topic of a system event: ``inngest/function.failed`` -> ``inngest.function.failed``."""
    return event_name.replace("/", ".")


def consumer_group(app_id: str) -> str:
    """The workers' consumer group (the Faust app id)."""
    return f"steplog-{app_id}"


@dataclass(frozen=True)
class Topics:
    """Full topic names (prefix included) for one app."""

    prefix: str
    app_id: str

    def _app(self, suffix: str) -> str:
        return f"{self.prefix}steplog-{self.app_id}-{suffix}"

    @property
    def events(self) -> str:
        return self.prefix + EVENTS

    @property
    def dlq(self) -> str:
        return self.prefix + DLQ

    @property
    def cancellations(self) -> str:
        return self.prefix + CANCELLATIONS

    def system(self, event_name: str) -> str:
        return self.prefix + system_topic(event_name)

    def journal(self, fn_id: str) -> str:
        """A function's run journal."""
        return self._app(f"fn-{fn_id}")

    def state_changelog(self, fn_id: str) -> str:
        """The changelog of a function's RocksDB state."""
        return self._app(f"fn-{fn_id}-state-changelog")

    @property
    def router_dedup_changelog(self) -> str:
        return self._app("router-dedup-changelog")

    @property
    def cron(self) -> str:
        return self._app("cron")

    @property
    def cron_changelog(self) -> str:
        return self._app("cron-changelog")

    @property
    def gate(self) -> str:
        """Asks and frees of env-scoped concurrency slots, keyed by the key's value."""
        return self._app("gate")

    @property
    def gate_changelog(self) -> str:
        return self._app("gate-changelog")

    @property
    def runs(self) -> str:
        """The compacted run history (``steplog runs``)."""
        return self._app("runs")

    @property
    def waits(self) -> str:
        return self._app("waits")

    @property
    def marks(self) -> str:
        return self._app("marks")

    @property
    def manifest(self) -> str:
        return self._app("manifest")
