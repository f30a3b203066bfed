"""The ``steplog`` command line: one Typer app, one module per command group."""

from __future__ import annotations

import logging

import typer

from streams.cli import events, kafka, runs, serve

app = typer.Typer(
    name="steplog",
    help="Durable event-driven functions on Apache Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(kafka.app, name="kafka", help="Run the embedded single-node Apache Kafka broker.")
app.add_typer(kafka.topics_app, name="topics", help="Create steplog's topics.")
app.add_typer(events.events_app, name="events", help="Read the events topic.")
app.add_typer(runs.runs_app, name="runs", help="Inspect runs (status, steps, outputs).")
events.register(app)
serve.register(app)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()
