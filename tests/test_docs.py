"""Every python block of README.md and docs/*.md runs, and does what the docs say.

The convention, for whoever edits the docs:

* Every fenced block names its language (```python, ```bash, ```text ...), so that
  no python block can hide in a bare fence.
* Every ```python block is followed, on the next non-blank line after its closing
  fence, by a hidden marker naming its check::

      ```python
      ...
      ```
      <!-- test: readme-example -->

* The check is a function below registered with ``@check("readme-example")``. It runs
  the block with ``block.run()`` -- as a fresh module, with nothing injected, so a
  block must define (or import) every name it uses -- and asserts what the block is
  there to show. Its other parameters are pytest fixtures (``settings``: the real
  broker, which also marks the case ``kafka``). Tracebacks point at the markdown lines.

The test fails for a python block without a marker, a marker that names no check or
follows no python block, two blocks with one marker, a check no block uses, and a check
that never ran its block.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from streams import Event, testing
from streams.app import Function
from streams.core import RunCompleted, RunDriver, StepCompleted
from streams.cron import SCHEDULED_EVENT, next_tick, scheduled_event
from streams.kafka.admin import ensure_topics
from streams.options import TriggerCron, TriggerEvent
from streams.serde import set_default_codec
from streams.settings import Settings
from streams.testing.engine import RUNS

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON = {"python", "py", "python3"}
#: Languages of interactive sessions, which cannot be run as a module.
REFUSED = {"pycon", "ipython", "python-repl"}

#: An opening fence, at any indentation (fences inside list items are indented).
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER = re.compile(r"<!--\s*test:\s*(?P<name>.*?)\s*-->")


@dataclass(eq=False)
class Block:
    """One fenced code block of a page, and the check its marker names (if any)."""

    page: Path
    where: str  # "docs/avro.md:10": the page and the line of the opening fence
    line: int  # of the opening fence, 1-based
    language: str
    source: str
    marker: str | None
    executed: bool = False

    def run(self) -> ModuleType:
        """Execute the block as a fresh module; return it (its globals are the block's names)."""
        name = "docs_" + re.sub(r"\W", "_", self.page.stem) + f"_{self.line}"
        module = ModuleType(name)
        module.__file__ = str(self.page)
        sys.modules[name] = module  # pydantic models, dataclasses and pickling look here
        # Pad with blank lines so that tracebacks name the markdown file's own lines.
        code = compile("\n" * self.line + self.source, str(self.page), "exec")
        try:
            exec(code, module.__dict__)
        finally:
            self.executed = True
        return module


def parse(page: Path, root: Path = ROOT) -> tuple[list[Block], list[str]]:
    """The page's fenced blocks, and where markers that follow no block are."""
    shown = page.relative_to(root)
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    used: set[int] = set()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        fence, indent = opening["fence"], opening["indent"]
        end = i + 1
        while end < len(lines) and not _closes(lines[end], fence):
            end += 1
        if end == len(lines):
            raise AssertionError(f"{shown}:{i + 1}: this code fence never closes")
        body = [line.removeprefix(indent) for line in lines[i + 1 : end]]
        after = end + 1
        while after < len(lines) and not lines[after].strip():
            after += 1
        found = _MARKER.fullmatch(lines[after].strip()) if after < len(lines) else None
        if found is not None:
            used.add(after)
        blocks.append(
            Block(
                page=page,
                where=f"{shown}:{i + 1}",
                line=i + 1,
                language=(opening["info"].split() or [""])[0].lower(),
                source="\n".join(body) + "\n",
                marker=found["name"] if found else None,
            )
        )
        i = end + 1
    stray = [
        f"{shown}:{n + 1}" for n, line in enumerate(lines) if _MARKER.search(line) and n not in used
    ]
    return blocks, stray


def _closes(line: str, fence: str) -> bool:
    text = line.strip()
    return len(text) >= len(fence) and set(text) == {fence[0]}


BLOCKS: list[Block] = []
STRAY: list[str] = []
for _page in PAGES:
    _blocks, _stray = parse(_page)
    BLOCKS += _blocks
    STRAY += _stray
PYTHON_BLOCKS = [b for b in BLOCKS if b.language in PYTHON]


# --- Checks: one per python block ------------------------------------------------------

Check = Callable[..., None]
CHECKS: dict[str, Check] = {}
_KAFKA_FIXTURES = {"settings", "kafka_broker"}


def check(name: str) -> Callable[[Check], Check]:
    """Register the check that ``<!-- test: name -->`` names."""

    def register(fn: Check) -> Check:
        assert name not in CHECKS, f"two checks are named {name!r}"
        CHECKS[name] = fn
        return fn

    return register


def _fixtures(fn: Check) -> list[str]:
    return list(inspect.signature(fn).parameters)[1:]


def use_environment(monkeypatch: pytest.MonkeyPatch, settings: Settings, **extra: str) -> None:
    """Point ``Settings()`` (what the blocks build) at ``settings``, as a user's shell would."""
    for name in list(os.environ):
        if name.startswith("STEPLOG_"):
            monkeypatch.delenv(name)
    if settings.bootstrap_servers is not None:
        monkeypatch.setenv("STEPLOG_BOOTSTRAP_SERVERS", settings.bootstrap_servers)
    monkeypatch.setenv("STEPLOG_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("STEPLOG_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("STEPLOG_PARTITIONS", str(settings.partitions))
    for name, value in extra.items():
        monkeypatch.setenv(f"STEPLOG_{name.upper()}", value)


@check("readme-example")
def _readme_example(block: Block) -> None:
    flows = block.run()
    fn = flows.process_order
    assert isinstance(fn, Function)
    assert flows.app.functions == {"shop-process-order": fn}
    assert fn.retries == 4
    order = Event(name="app/order.created", data={"items": ["sku-1", "sku-2"], "total": 30})
    assert fn.matches(order)
    assert not fn.matches(Event(name="app/order.created", data={"items": [], "total": 0}))
    for always_replay in (False, True):  # True: re-executed from the top after every step
        result = testing.run(fn, order, always_replay=always_replay)
        assert result.status == "completed", result.error
        assert result.result == {
            "status": "completed",
            "reservation": {"items": ["sku-1", "sku-2"], "hold": "h-1"},
        }
        assert [m.name for m in result.steps] == ["reserve-inventory", "charge", "paid"]
        assert result.step("charge").output == {"id": "ch-1", "amount": 30}
        assert [(e.name, e.data) for e in result.events_sent] == [
            ("app/order.paid", {"id": "ch-1"})
        ]


@check("readme-concurrency")
def _readme_concurrency(block: Block) -> None:
    page = block.run()
    fn = page.send_notification
    assert fn.slot_limits == (3, 50) and fn.one_partition
    # In memory, runs that hold their slots past their first step: 3 of one user run,
    # the other 5 of that user queue, another user's run is not held up by them.
    engine = testing.Engine(page.app, detach_after=0)
    events = [{"name": "app/notification.send", "data": {"userId": "u1"}} for _ in range(8)]
    engine.send([*events, {"name": "app/notification.send", "data": {"userId": "u2"}}])
    engine.settle()
    runs = engine.runs("send-notification")
    assert sorted(r.result for r in runs) == ["sent to u1"] * 8 + ["sent to u2"]
    queued = [r for _, r, _ in engine.topics[RUNS] if r["status"] == "queued"]
    assert len(queued) == 5


@check("readme-batch")
def _readme_batch(block: Block) -> None:
    page = block.run()
    engine = testing.Engine(page.app)
    calls = [
        {"name": "log/api.call", "data": {"userId": f"u{n % 2}", "endpoint": f"/e{n}"}}
        for n in range(250)
    ]
    engine.send(calls)  # full batches start at once: 100 of the 125 of each user
    assert sorted(r.result for r in engine.runs("record-api-calls")) == [100, 100]
    engine.settle()  # the clock jumps to the open batches' timeout: they start too
    assert sorted(r.result for r in engine.runs("record-api-calls")) == [25, 25, 100, 100]


@check("testing-engine")
def _testing_engine(block: Block) -> None:
    page = block.run()  # its asserts ran
    engine = page.engine
    runs = {r.result["order"]: r for r in engine.runs("invoice")}
    assert runs["o1"].step("price")["output"] == 15
    assert runs["o1"].result == {"order": "o1", "status": "paid", "amount": 15}
    assert [s["name"] for s in runs["o2"].steps] == ["price", "paid"]
    finished = [e for e in engine.events if e.name == "inngest/function.finished"]
    assert len(finished) == 2


@check("avro-decode")
def _avro_decode(
    block: Block,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ensure_topics(settings)  # what `steplog topics create` (or a worker) does first
    use_environment(monkeypatch, settings)
    set_default_codec(None)  # decode() builds its codec from these Settings()
    try:
        page = block.run()
    finally:
        set_default_codec(None)
    assert page.msg.topic() == settings.topic("events")
    assert page.msg.value()[:2] == b"\xc3\x01"  # Avro single-object encoding
    event = page.event
    assert isinstance(event, Event)
    assert event.internal_id == event.id == page.sent_id
    assert (event.name, event.data, event.v) == ("app/order.created", {"total": 30}, None)
    assert event.ts > 0
    printed = capsys.readouterr().out
    ids = f"{page.sent_id} {page.sent_id}"
    assert printed == f"app/order.created {{'total': 30}} {ids} {event.ts} None\n"


@check("avro-codec")
def _avro_codec(block: Block, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # No broker: the codec only needs Settings (and, for the Confluent form, a registry).
    local = Settings(topic_prefix="docs.", data_dir=tmp_path)
    use_environment(monkeypatch, local)
    single = block.run()
    assert single.value[:2] == b"\xc3\x01"
    assert single.value[2:10] == single.codec.envelope.fingerprint
    assert single.event == single.accepted_event
    assert single.event.internal_id is not None

    use_environment(monkeypatch, local, schema_registry_url=f"mock://docs-{uuid.uuid4().hex}")
    confluent = block.run()
    assert confluent.value[0] == 0  # the Confluent wire format: 00 + schema id + body
    assert confluent.event == confluent.accepted_event
    # `topic` names the subject: the settings' events topic, prefix included.
    assert confluent.codec.registry.client.get_subjects() == ["docs.events-value"]


@check("execution-activation")
def _execution_activation(block: Block) -> None:
    page = block.run()
    first, last = page.effects
    assert isinstance(first, StepCompleted) and (first.name, first.output) == ("double", 40)
    assert isinstance(last, RunCompleted) and last.result == 41
    assert [m.name for m in page.memos.values()] == ["double"]

    # "hit, completed": a later activation with those memos returns the step's output
    # without running its body again.
    bodies: list[str] = []

    def body() -> int:
        bodies.append("ran")
        return 0

    async def handler(ctx: Any) -> int:
        return int(await ctx.step.run("double", body)) + 1

    replayed = asyncio.run(RunDriver(handler, page.run, page.memos).run_to_end())
    assert bodies == []
    [done] = replayed
    assert isinstance(done, RunCompleted) and done.result == 41


@check("runtime-cron")
def _runtime_cron(block: Block) -> None:
    page = block.run()
    fn = page.weekly_report
    cron, on_demand = fn.triggers
    assert cron == TriggerCron(cron="TZ=Europe/Paris 0 9 * * 1")
    assert on_demand == TriggerEvent(event="app/report.requested")
    assert fn.event_patterns == ["app/report.requested"]

    # Mondays at 09:00 in Paris: 2024-03-25 is a Monday, 09:00 CET = 08:00 UTC.
    wednesday = int(datetime(2024, 3, 20, tzinfo=UTC).timestamp() * 1000)
    tick = next_tick(cron, wednesday)
    assert tick == int(datetime(2024, 3, 25, 8, tzinfo=UTC).timestamp() * 1000)
    event = scheduled_event(cron, fn.slug, tick, fired_ms=tick + 40)
    assert (event.name, event.id) == (SCHEDULED_EVENT, "2024-03-25T08:00:00Z")
    assert event.data["cron"] == "TZ=Europe/Paris 0 9 * * 1"

    ticked = testing.run(fn, event)
    assert ticked.status == "completed", ticked.error
    assert ticked.result == {"by": "inngest/scheduled.timer", "tick": "2024-03-25T08:00:00Z"}
    requested = testing.run(fn, Event(name="app/report.requested"))
    assert requested.result == {"by": "app/report.requested", "tick": None}


# --- The tests ----------------------------------------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "block" in metafunc.fixturenames:
        params = []
        for block in PYTHON_BLOCKS:
            fn = CHECKS.get(block.marker or "")
            kafka = fn is not None and bool(_KAFKA_FIXTURES & set(_fixtures(fn)))
            marks = [pytest.mark.kafka] if kafka else []
            params.append(pytest.param(block, id=f"{block.where}-{block.marker}", marks=marks))
        metafunc.parametrize("block", params)


@pytest.fixture(autouse=True)
def _forget_block_modules() -> Iterator[None]:
    yield
    for name in [n for n in sys.modules if n.startswith("docs_")]:
        del sys.modules[name]


def test_doc_block(block: Block, request: pytest.FixtureRequest) -> None:
    """Runs one python block of the docs through its check."""
    assert block.marker is not None, (
        f"{block.where}: this python block has no check: put <!-- test: NAME --> on the line "
        "after its closing fence and add a @check('NAME') in tests/test_docs.py that runs it "
        "(block.run()) and asserts what it shows"
    )
    fn = CHECKS.get(block.marker)
    assert fn is not None, (
        f"{block.where}: <!-- test: {block.marker} --> names no check in tests/test_docs.py "
        f"(checks: {', '.join(sorted(CHECKS))}); add @check({block.marker!r})"
    )
    block.executed = False
    fn(block, **{name: request.getfixturevalue(name) for name in _fixtures(fn)})
    assert block.executed, f"check {block.marker!r} never ran the block at {block.where}"


def test_the_docs_have_python_blocks() -> None:
    """A parser that found nothing would make every other test here pass vacuously."""
    pages = {b.page.name for b in PYTHON_BLOCKS}
    assert {"README.md", "avro.md", "execution.md", "runtime.md"} <= pages


def test_every_fence_names_its_language() -> None:
    bare = [b.where for b in BLOCKS if not b.language]
    assert not bare, (
        f"fenced blocks without a language at {', '.join(bare)}: write ```python (it will be "
        "run: see tests/test_docs.py) or ```text / ```bash ..."
    )
    sessions = [b.where for b in BLOCKS if b.language in REFUSED]
    assert not sessions, (
        f"interactive-session blocks at {', '.join(sessions)} cannot be run as a module: "
        "write them as ```python blocks"
    )


def test_markers_belong_to_one_python_block_each() -> None:
    assert not STRAY, f"<!-- test: ... --> markers that follow no code block: {STRAY}"
    not_python = [
        f"{b.where} ({b.language})" for b in BLOCKS if b.marker and b.language not in PYTHON
    ]
    assert not not_python, f"markers after blocks that are not python: {not_python}"
    seen: dict[str, str] = {}
    for block in PYTHON_BLOCKS:
        if block.marker is None:
            continue
        assert block.marker not in seen, (
            f"{block.where} and {seen[block.marker]} share <!-- test: {block.marker} -->: "
            "give each block its own check"
        )
        seen[block.marker] = block.where


def test_every_check_has_its_block() -> None:
    used = {b.marker for b in PYTHON_BLOCKS}
    unused = sorted(set(CHECKS) - used)
    assert not unused, f"checks no doc block names (remove them, or mark their block): {unused}"


def test_the_parser_reads_fences_markers_and_strays(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# t\n\n```python\nx = 1\n```\n\n<!-- test: one -->\n\n~~~~ bash extra\necho\n~~~~\n"
        "  ```\nbare\n  ```\n<!-- test: two -->\n\n<!-- test: stray -->\n",
        encoding="utf-8",
    )
    blocks, stray = parse(page, root=tmp_path)
    assert [(b.where, b.language, b.source, b.marker) for b in blocks] == [
        ("page.md:3", "python", "x = 1\n", "one"),
        ("page.md:9", "bash", "echo\n", None),
        ("page.md:12", "", "bare\n", "two"),
    ]
    assert stray == ["page.md:17"]
    assert blocks[0].run().x == 1
