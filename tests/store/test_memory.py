"""The memory budget: least recently used content leaves, leased content never does."""

from __future__ import annotations

import gc

import pytest

from llm_async_attachments.store import memory

KiB = 1024


@pytest.fixture(autouse=True)
def _empty_store():
    """Each test starts from a store holding nothing unleased: a budget of 0 drops it all."""
    memory.Lease(0).release()
    yield
    memory.Lease(0).release()


def _admit(size: int, budget: int, lease=None, *, keep: bool = True):
    return memory.admit(b"x" * size, keep=keep, budget=budget, lease=lease)


def test_least_recently_used_leave_first_within_the_budget():
    first = _admit(40 * KiB, 100 * KiB)
    second = _admit(40 * KiB, 100 * KiB)
    assert first.read() is not None  # now the most recently used
    third = _admit(40 * KiB, 100 * KiB)
    assert second.data is None  # the least recently used left
    assert first.data is not None and third.data is not None
    assert memory.statistics().held <= 100 * KiB


def test_leased_content_never_leaves_and_goes_first_once_released():
    with memory.Lease(64 * KiB) as lease:
        held = _admit(48 * KiB, 64 * KiB, lease)
        other = _admit(48 * KiB, 64 * KiB, lease)
        assert held.data is not None and other.data is not None  # over budget while leased
        assert memory.statistics().leased == 96 * KiB
    assert memory.statistics().held <= 64 * KiB
    assert held.data is None  # released: the least recently used left


def test_no_store_content_lives_only_while_leased():
    lease = memory.Lease(1 << 30)
    blob = _admit(KiB, 1 << 30, lease, keep=False)
    assert blob.data is not None
    lease.release()
    assert blob.data is None  # whatever the budget


def test_hold_refuses_content_that_left():
    blob = _admit(KiB, 1 << 30)
    memory.Lease(0).release()  # a budget of 0: everything unleased leaves
    assert blob.data is None
    assert not memory.hold(blob, memory.Lease(1 << 30))


def test_content_whose_holders_are_all_gone_is_no_longer_counted():
    before = memory.statistics().held
    lease = memory.Lease(1 << 30)
    _admit(KiB, 1 << 30)  # kept, held by nobody
    _admit(2 * KiB, 1 << 30, lease, keep=False)  # no-store, in a lease never released
    del lease
    gc.collect()
    assert memory.statistics().held == before
