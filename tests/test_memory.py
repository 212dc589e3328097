"""The memory budget: least recently used content leaves, leased content never does."""

from __future__ import annotations

import pytest

from llm_async_attachments import memory

KiB = 1024


@pytest.fixture(autouse=True)
def _empty_store():
    """Each test starts from a store holding nothing unleased: a budget of 0 drops it all."""
    memory.Lease(0).release()
    yield
    memory.Lease(0).release()


def _admit(size: int, budget: int, lease=None, *, keep: bool = True, source=None):
    blob, leaving = memory.admit(b"x" * size, keep=keep, budget=budget, lease=lease, source=source)
    return blob, leaving


def test_least_recently_used_leave_first_within_the_budget():
    first, _ = _admit(40 * KiB, 100 * KiB)
    second, _ = _admit(40 * KiB, 100 * KiB)
    assert first.read() is not None  # now the most recently used
    third, _ = _admit(40 * KiB, 100 * KiB)
    assert second.data is None  # the least recently used left
    assert first.data is not None and third.data is not None
    assert memory.statistics().held <= 100 * KiB


def test_leased_content_never_leaves_and_goes_first_once_released():
    with memory.Lease(64 * KiB) as lease:
        held, _ = _admit(48 * KiB, 64 * KiB, lease)
        other, _ = _admit(48 * KiB, 64 * KiB, lease)
        assert held.data is not None and other.data is not None  # over budget while leased
        assert memory.statistics().leased == 96 * KiB
    assert memory.statistics().held <= 64 * KiB
    assert held.data is None  # released: the least recently used left


def test_no_store_content_lives_only_while_leased():
    lease = memory.Lease(1 << 30)
    blob, _ = _admit(KiB, 1 << 30, lease, keep=False)
    assert blob.data is not None
    lease.release()
    assert blob.data is None  # whatever the budget


def test_content_with_a_source_stays_counted_until_written():
    kept, _ = _admit(40 * KiB, 50 * KiB, source="disk-key")
    _newer, leaving = _admit(40 * KiB, 50 * KiB)
    assert leaving == [kept] and kept.data is not None  # in hand, for the disk
    assert memory.statistics().held == 80 * KiB
    memory.left(kept)
    assert kept.data is None and memory.statistics().held == 40 * KiB


def test_content_needed_again_while_on_its_way_to_disk_stays():
    kept, _ = _admit(40 * KiB, 50 * KiB, source="disk-key")
    _newer, _leaving = _admit(40 * KiB, 50 * KiB)
    with memory.Lease(50 * KiB) as lease:
        assert memory.hold(kept, lease)
        memory.left(kept)
        assert kept.data is not None  # leased: it stays
    assert memory.statistics().held <= 50 * KiB


def test_hold_refuses_content_that_left():
    blob, _ = _admit(KiB, 1 << 30)
    memory.Lease(0).release()  # a budget of 0: everything unleased leaves
    assert blob.data is None
    assert not memory.hold(blob, memory.Lease(1 << 30))
