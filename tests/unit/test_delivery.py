"""The per-partition cursors that keep record delivery gapless (agents/delivery.py)."""

from __future__ import annotations

from agents.delivery import Cursors, Verdict

TP = ("events", 0)


def deliver(cursors: Cursors, offsets: list[int]) -> list[int]:
    """Feed one fetched batch; return the offsets handed over (delivering them)."""
    out = []
    cursors.begin_batch()
    for offset in offsets:
        if cursors.admit(TP, offset) is Verdict.DELIVER:
            cursors.delivered(TP, offset)
            out.append(offset)
    return out


def test_nothing_is_handed_over_before_the_assignment_positions_the_partition() -> None:
    cursors = Cursors()
    assert deliver(cursors, [5, 6, 7]) == []
    assert cursors.skipped_unpositioned == 3
    cursors.position(TP, 5)
    assert deliver(cursors, [5, 6, 7]) == [5, 6, 7]


def test_records_read_again_after_a_seek_back_are_skipped() -> None:
    cursors = Cursors()
    cursors.position(TP, 10)
    assert deliver(cursors, [10, 11, 12]) == [10, 11, 12]
    assert deliver(cursors, [11, 12, 13]) == [13]


def test_a_batch_fetched_before_the_seek_starts_above_the_committed_offset() -> None:
    """The loss of faust-streaming #216: such a batch must not move the cursor past 10."""
    cursors = Cursors()
    cursors.position(TP, 10)  # the assignment's seek to the committed offset
    cursors.begin_batch()
    assert cursors.admit(TP, 14) is Verdict.SEEK
    # the rest of that stale batch is skipped; nothing was handed over
    assert cursors.admit(TP, 15) is Verdict.SKIP
    assert cursors.expected[TP] == 10
    # after the seek back, 10.. arrive and are handed over in order
    assert deliver(cursors, [10, 11, 12, 13, 14, 15]) == [10, 11, 12, 13, 14, 15]


def test_a_gap_that_is_still_there_after_seeking_back_is_real() -> None:
    cursors = Cursors()
    cursors.position(TP, 3)
    cursors.begin_batch()
    assert cursors.admit(TP, 8) is Verdict.SEEK
    # the seek back to 3 reads 8 first again: 3..7 are not in the log (retention)
    assert deliver(cursors, [8, 9]) == [8, 9]
    assert cursors.expected[TP] == 10


def test_a_new_gap_after_a_seek_is_checked_again() -> None:
    cursors = Cursors()
    cursors.position(TP, 0)
    cursors.begin_batch()
    assert cursors.admit(TP, 9) is Verdict.SEEK
    # after the seek the log starts at 4: a different first record, so check once more
    cursors.begin_batch()
    assert cursors.admit(TP, 4) is Verdict.SEEK
    assert deliver(cursors, [4, 5]) == [4, 5]


def test_revoked_partitions_wait_for_their_next_assignment() -> None:
    cursors = Cursors()
    cursors.position(TP, 0)
    cursors.committed[TP] = 0
    assert deliver(cursors, [0, 1]) == [0, 1]
    cursors.forget([TP])
    assert TP not in cursors.committed
    assert deliver(cursors, [2]) == []
    cursors.position(TP, 1)
    assert deliver(cursors, [1, 2]) == [1, 2]


def test_records_skipped_before_positioning_make_the_partition_seek_again() -> None:
    """Read after the assignment's seek but before the cursor knew its start: a quiet
    partition would never read them again, so positioning asks for another seek."""
    cursors = Cursors()
    assert deliver(cursors, [7, 8]) == []
    assert cursors.position(TP, 7) is True  # seek to 7 again
    assert deliver(cursors, [7, 8]) == [7, 8]
    assert cursors.position(("events", 1), 0) is False  # nothing skipped there


def test_the_commit_floor_is_the_higher_of_the_committed_offset_and_the_start() -> None:
    cursors = Cursors()
    assert cursors.commit_floor(TP, None) is None
    cursors.position(TP, 5)
    assert cursors.commit_floor(TP, None) == 5  # never committed: from where it was read
    assert cursors.commit_floor(TP, 9) == 9
    assert cursors.commit_floor(TP, 3) == 5  # the log starts at 5
    cursors.begin_batch()
    assert cursors.admit(TP, 8) is Verdict.SEEK
    assert cursors.admit(TP, 8) is Verdict.SKIP  # the rest of the batch
    cursors.begin_batch()
    assert cursors.admit(TP, 8) is Verdict.DELIVER  # 5..7 are not in the log
    assert cursors.gaps == [(TP, 5, 8)]


def test_a_partition_being_sought_again_skips_its_records_and_keeps_its_floor() -> None:
    cursors = Cursors()
    cursors.position(TP, 4)
    assert deliver(cursors, [4, 5]) == [4, 5]
    cursors.unposition([TP])
    assert deliver(cursors, [6]) == []  # read while the seek runs: skipped...
    assert cursors.commit_floor(TP, None) == 4  # ...and nothing above 4 commits unseen
    assert cursors.position(TP, 4) is True  # ...and read again after it
