"""The decoding memory budget: decodes that fit run side by side, the rest wait their turn
(first come, first served), and one that waits too long is refused with a sentence."""
from __future__ import annotations

import threading
import time

import pytest

from appliance.inference.budget import Busy, MemoryBudget

MB = 1024 * 1024


def test_decodes_that_fit_run_together_and_the_next_waits_for_memory():
    budget = MemoryBudget(100 * MB, wait_seconds=5)
    order = []

    def late():
        with budget.reserve(60 * MB):
            order.append("late")
    with budget.reserve(50 * MB), budget.reserve(40 * MB):
        assert budget.used_bytes == 90 * MB
        waiter = threading.Thread(target=late)
        waiter.start()
        time.sleep(0.2)
        assert order == [] and waiter.is_alive()          # 60 MB do not fit beside 90 MB
    waiter.join(5)
    assert order == ["late"] and budget.used_bytes == 0


def test_an_image_larger_than_the_whole_budget_is_decoded_alone():
    budget = MemoryBudget(100 * MB, wait_seconds=0.1)
    with budget.reserve(500 * MB):                      # not refused: it takes the whole budget
        assert budget.used_bytes == 100 * MB
        with pytest.raises(Busy):
            with budget.reserve(1):
                pass
    assert budget.used_bytes == 0


def test_first_come_first_served_a_big_request_is_not_overtaken_by_small_ones():
    budget = MemoryBudget(100 * MB, wait_seconds=5)
    order = []
    holder = budget.reserve(80 * MB)
    holder.__enter__()

    def take(name, size):
        with budget.reserve(size):
            order.append(name)
            time.sleep(0.05)
    big = threading.Thread(target=take, args=("big", 90 * MB))
    big.start()
    time.sleep(0.1)
    small = threading.Thread(target=take, args=("small", 10 * MB))   # would fit now, but queues behind
    small.start()
    time.sleep(0.2)
    assert order == []
    holder.__exit__(None, None, None)
    big.join(5)
    small.join(5)
    assert order == ["big", "small"]


def test_waiting_too_long_is_refused_with_the_sentence_and_takes_nothing():
    budget = MemoryBudget(100 * MB, wait_seconds=0.2)
    with budget.reserve(100 * MB):
        started = time.monotonic()
        with pytest.raises(Busy) as busy:
            with budget.reserve(1 * MB):
                pass
        assert 0.15 <= time.monotonic() - started < 2
    assert busy.value.message == "The box is busy analysing other images; try again in a moment."
    assert busy.value.hint and budget.used_bytes == 0
    with budget.reserve(100 * MB):                      # the refused request left no trace in the queue
        pass
