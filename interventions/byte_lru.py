"""A least-recently-used cache of arrays bounded by bytes (the sum of the stored tensors' / arrays' ``nbytes``)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Generic, Iterator, TypeVar

__all__ = ["ByteLRU", "nbytes"]

V = TypeVar("V")  # a torch.Tensor or a numpy array (anything with ``nbytes``)


def nbytes(t: Any) -> int:
    """Bytes held by the elements of ``t`` (a tensor's ``numel * element_size``, an array's ``nbytes``)."""
    return int(t.nbytes)


class ByteLRU(Generic[V]):
    """Tensors by key, least recently used evicted first while the stored bytes exceed ``max_bytes``.

    ``max_bytes`` None: unbounded.  ``max_entries``: an additional bound on the entry count (None: none).
    ``keep``: the most recently used ``keep`` entries are never evicted (a caller's working set; see
    :meth:`interventions.engine.Engine.reserve_prefix_cache`), even when they exceed the budget.
    An entry larger than the whole budget is evicted right away (unless kept): callers use the value they
    put, not a later :meth:`get`.
    """

    def __init__(self, max_bytes: int | None, *, max_entries: int | None = None, keep: int = 0):
        for name, v in (("max_bytes", max_bytes), ("max_entries", max_entries)):
            if v is not None and int(v) < 0:
                raise ValueError(f"{name}={v!r}; valid: a number >= 0, or None (unbounded)")
        self.max_bytes = None if max_bytes is None else int(max_bytes)
        self.max_entries = None if max_entries is None else int(max_entries)
        self.keep = int(keep)
        self._data: OrderedDict[str, V] = OrderedDict()
        self.nbytes = 0  # bytes stored now
        self.evictions = 0  # entries evicted so far

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def keys(self) -> Iterator[str]:
        """Keys from least to most recently used."""
        return iter(list(self._data))

    def get(self, key: str) -> V | None:
        """The value of ``key`` (marked most recently used), or None."""
        v = self._data.get(key)
        if v is not None:
            self._data.move_to_end(key)
        return v

    def put(self, key: str, value: V) -> None:
        """Store ``value`` under ``key`` (most recently used) and evict down to the bounds."""
        old = self._data.pop(key, None)
        if old is not None:
            self.nbytes -= nbytes(old)
        self._data[key] = value
        self.nbytes += nbytes(value)
        self.evict()

    def _over(self) -> bool:
        n = len(self._data)
        return n > self.keep and ((self.max_bytes is not None and self.nbytes > self.max_bytes)
                                  or (self.max_entries is not None and n > self.max_entries))

    def evict(self) -> None:
        """Drop least recently used entries until the bounds hold (or only the kept entries are left)."""
        while self._over():
            _, v = self._data.popitem(last=False)
            self.nbytes -= nbytes(v)
            self.evictions += 1

    def clear(self) -> None:
        """Forget every entry."""
        self._data.clear()
        self.nbytes = 0
