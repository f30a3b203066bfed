"""The router's decisions: deterministic run ids, dedup, re-delivery, replay epochs."""

from __future__ import annotations

from dataclasses import dataclass

from ulid import ULID

from streams.event import Event, accept
from streams.routing import DedupEntry, DedupKeys, remembers, route, run_id

WINDOW = 24 * 3600 * 1000


@dataclass
class Fn:
    slug: str
    name: str
    key: str | None = None

    def matches(self, event: Event) -> bool:
        return event.name == self.name

    def run_key(self, event: Event) -> str | None:
        return str(event.data[self.key]) if self.key else None

    def idempotency_key(self, event: Event) -> str | None:
        return None


def ev(name: str = "app/a", id: str | None = None, at: int = 1_700_000_000_000) -> Event:
    return accept(Event(name=name, id=id, data={"user": "u1"}), at_ms=at)


def test_run_id_is_a_deterministic_ulid_with_the_event_time() -> None:
    e = ev()
    rid = run_id(e.internal_id or "", "shop-f")
    assert rid == run_id(e.internal_id or "", "shop-f")
    assert ULID.from_str(rid).milliseconds == 1_700_000_000_000
    assert rid != run_id(e.internal_id or "", "shop-g")
    assert rid != run_id(e.internal_id or "", "shop-f", epoch=1)


def test_fan_out_starts_one_run_per_matching_function() -> None:
    fns = [Fn("s-a", "app/a"), Fn("s-b", "app/a", key="user"), Fn("s-c", "app/other")]
    d = route(ev(id="order-1"), fns, None, epoch=0, now_ms=1, window_ms=WINDOW)
    assert [s.function for s in d.starts] == ["s-a", "s-b"]
    assert d.starts[0].key == d.starts[0].run_id
    assert d.starts[1].key == "u1"
    assert d.dedup is not None and d.dedup.functions == ["s-a", "s-b"]


def test_redelivery_repeats_the_same_run_ids_and_changes_nothing() -> None:
    fns = [Fn("s-a", "app/a")]
    e = ev(id="order-1")
    first = route(e, fns, None, epoch=0, now_ms=1, window_ms=WINDOW)
    again = route(e, fns, first.dedup, epoch=0, now_ms=2, window_ms=WINDOW)
    assert again.starts == first.starts
    assert again.dedup is None


def test_duplicate_id_starts_no_run_within_the_window() -> None:
    fns = [Fn("s-a", "app/a")]
    first = route(ev(id="order-1"), fns, None, epoch=0, now_ms=1, window_ms=WINDOW)
    dup = route(ev(id="order-1"), fns, first.dedup, epoch=0, now_ms=2, window_ms=WINDOW)
    assert dup.starts == [] and dup.duplicate_of == first.dedup.internal_id  # type: ignore[union-attr]
    later = route(ev(id="order-1"), fns, first.dedup, epoch=0, now_ms=WINDOW + 2, window_ms=WINDOW)
    assert len(later.starts) == 1


def test_duplicate_still_starts_a_function_that_had_not_run_for_the_id() -> None:
    first = route(ev(id="x"), [Fn("s-a", "app/a")], None, epoch=0, now_ms=1, window_ms=WINDOW)
    dup = route(
        ev(id="x"),
        [Fn("s-a", "app/a"), Fn("s-new", "app/a")],
        first.dedup,
        epoch=0,
        now_ms=2,
        window_ms=WINDOW,
    )
    assert [s.function for s in dup.starts] == ["s-new"]
    assert dup.dedup is not None and dup.dedup.functions == ["s-a", "s-new"]


def test_replay_epoch_gives_new_run_ids_and_dedups_again_within_the_replay() -> None:
    fns = [Fn("s-a", "app/a")]
    e1, e2 = ev(id="x"), ev(id="x")
    first = route(e1, fns, None, epoch=0, now_ms=1, window_ms=WINDOW)
    replay = route(e1, fns, first.dedup, epoch=1, now_ms=5, window_ms=WINDOW)
    assert len(replay.starts) == 1 and replay.starts[0].run_id != first.starts[0].run_id
    dup = route(e2, fns, replay.dedup, epoch=1, now_ms=6, window_ms=WINDOW)
    assert dup.starts == []


def test_dedup_entry_round_trips() -> None:
    entry = DedupEntry("01H", 2, 10, ["a"])
    assert DedupEntry.from_dict(entry.to_dict()) == entry


def test_an_event_sent_without_an_id_is_not_remembered() -> None:
    fns = [Fn("s-a", "app/a")]
    e = ev()  # its id is its internal id
    assert not remembers(e) and remembers(ev(id="order-1"))
    d = route(e, fns, None, epoch=0, now_ms=1, window_ms=WINDOW)
    assert [s.run_id for s in d.starts] == [run_id(e.internal_id or "", "s-a")]
    assert d.dedup is None
    # a later event that names that id explicitly is the first one with it: it runs
    named = accept(Event(name="app/a", id=e.internal_id, data={}), at_ms=2)
    assert remembers(named)
    again = route(named, fns, None, epoch=0, now_ms=2, window_ms=WINDOW)
    assert len(again.starts) == 1 and again.dedup is not None


def test_dedup_keys_find_every_entry_inside_its_window_and_expire_whole_generations() -> None:
    keys = DedupKeys(window_ms=1000)  # generations of 500 ms
    seen = 10_250
    stored = keys.key(b"order-1", seen)
    # looked up at every moment of the window, the entry's key is among the lookups
    for now in range(seen, seen + 1000, 50):
        assert stored in keys.lookups(b"order-1", now)
        assert stored >= keys.expired_below(now)  # and never deleted while inside it
    # past the window it is deleted once its whole generation is past it: within 1.5 windows
    assert keys.expires_at(stored) - seen in range(1000, 1501)
    assert stored < keys.expired_below(keys.expires_at(stored))
    assert stored >= keys.expired_below(keys.expires_at(stored) - 1)
    # generations sort numerically as keys, whatever the event id
    assert keys.key(b"zzz", 9_999) < keys.key(b"aaa", 10_000)
