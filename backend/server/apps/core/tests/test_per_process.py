"""The per-process helpers: a remembered answer expires and is forgotten; one object per
process, a new one after a fork."""

from __future__ import annotations

import pytest

from apps.core.per_process import PerProcess, Remembered


def test_an_answer_is_remembered_for_its_ttl_only(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr("apps.core.per_process.time.monotonic", lambda: now[0])
    calls: list[str] = []
    remembered: Remembered[str, int] = Remembered()

    def compute() -> int:
        calls.append("x")
        return len(calls)

    assert remembered.get("k", 5, compute) == 1
    now[0] += 4.9
    assert remembered.get("k", 5, compute) == 1  # remembered
    now[0] += 0.2
    assert remembered.get("k", 5, compute) == 2  # expired
    remembered.forget()
    assert remembered.get("k", 5, compute) == 3
    assert remembered.get("k", 0, compute) == 4  # ttl 0: asked every time
    assert remembered.get("k", 0, compute) == 5


def test_one_object_per_process_and_a_new_one_after_a_fork(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[object] = []

    def make() -> object:
        made.append(object())
        return made[-1]

    holder = PerProcess(make)
    assert holder.existing() is None and made == []
    first = holder.get()
    assert holder.get() is first and holder.existing() is first
    monkeypatch.setattr("apps.core.per_process.os.getpid", lambda: -1)  # as in a forked child
    assert holder.existing() is None
    second = holder.get()
    assert second is not first and len(made) == 2
    holder.discard()
    assert holder.existing() is None
