"""Small shared state of a process: a value remembered for a while, and an object made once
per process. Plain Python, as the rest of ``core``."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T = TypeVar("T")


class Remembered(Generic[K, V]):
    """Answers remembered per key for ``ttl`` seconds in this process (0: never), for
    reads asked on every request whose answer changes rarely (which versions serve an
    endpoint, its running shadow): another process's change is seen within ``ttl``; this
    process's at once after ``forget``."""

    def __init__(self) -> None:
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K, ttl: float, compute: Callable[[], V]) -> V:
        if ttl > 0:
            cached = self._entries.get(key)
            if cached is not None and cached[0] > time.monotonic():
                return cached[1]
        value = compute()
        if ttl > 0:
            self._entries[key] = (time.monotonic() + ttl, value)
        return value

    def forget(self) -> None:
        self._entries.clear()


class PerProcess(Generic[T]):
    """One ``T`` per process, made by ``make`` on first use in each: a forked worker
    (gunicorn's, Celery's) makes its own, since the threads a ``T`` may start do not
    survive a fork."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._made: tuple[int, T] | None = None

    def get(self) -> T:
        made = self._made
        if made is not None and made[0] == os.getpid():
            return made[1]
        with self._lock:
            if self._made is None or self._made[0] != os.getpid():
                self._made = (os.getpid(), self._make())
            return self._made[1]

    def existing(self) -> T | None:
        """This process's ``T`` if it made one; None otherwise (nothing is made)."""
        made = self._made
        return made[1] if made is not None and made[0] == os.getpid() else None

    def discard(self) -> None:
        """The next ``get`` makes a new one (tests)."""
        self._made = None
