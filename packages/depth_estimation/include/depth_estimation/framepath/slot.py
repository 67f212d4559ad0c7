"""The hand-off between the node's subscriber and its worker: a one-item mailbox.

The subscriber callback only puts the newest message into a :class:`LatestSlot`; the worker
takes it. A message replaced before the worker took it is *dropped* (counted), so a slow model
never builds a backlog.
"""
from __future__ import annotations

import threading
from typing import Any, Optional


class LatestSlot:
    """A one-item mailbox: ``put`` replaces what the consumer has not taken yet."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item: Any = None
        self._closed = False
        self.replaced = 0

    def put(self, item: Any) -> bool:
        """Store ``item``; True when it replaced an untaken one (that one is dropped)."""
        with self._cond:
            dropped = self._item is not None
            self.replaced += int(dropped)
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
