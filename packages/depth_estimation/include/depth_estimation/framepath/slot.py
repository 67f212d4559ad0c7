"""The hand-off between a producer and a consumer thread: a one-item mailbox.

In :class:`~.stream.FrameStream` one sits before each stage (camera callback | decode | network |
output), in ``depth-live`` between the camera's thread and the loop. The producer puts the newest
item, the consumer takes it; an item replaced before it was taken is *dropped* (the caller counts
it), so a slow consumer never builds a backlog.
"""
from __future__ import annotations

import threading
from typing import Any, Optional


class SlotClosed(RuntimeError):
    """``put`` on a closed slot: the item was not stored (the caller accounts for it)."""


class LatestSlot:
    """A one-item mailbox: ``put`` replaces what the consumer has not taken yet.

    After :meth:`close`, ``put`` refuses (:class:`SlotClosed`) and ``take`` returns what is left
    without waiting, so whoever closes a slot can drain it and count what it held."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item: Any = None
        self._closed = False

    def put(self, item: Any) -> bool:
        """Store ``item``; True when it replaced an untaken one (that one is dropped)."""
        with self._cond:
            if self._closed:
                raise SlotClosed("slot closed")
            dropped = self._item is not None
            self._item = item
            self._cond.notify()
            return dropped

    def take(self, timeout: Optional[float] = None) -> Any:
        """The newest item (removing it), or None on timeout or after close()."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            self._cond.notify_all()  # wait_empty()
            return item

    def wait_empty(self, timeout: Optional[float] = None) -> bool:
        """Wait until the consumer has taken the item (or the slot is closed); True when it is empty."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is None or self._closed, timeout)
            return self._item is None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
