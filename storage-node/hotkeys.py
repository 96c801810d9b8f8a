"""A sampled, decaying top-k of the keys a partition serves.

The operator picks split keys from this distribution, and decides not to split
when one key carries the heat; sampling keeps it off the request hot path.
"""

from __future__ import annotations

from collections import Counter, deque


class HotKeys:
    def __init__(self, *, sample_every: int = 8, capacity: int = 256, decay_every: int = 4096) -> None:
        self._sample_every = sample_every
        self._capacity = capacity
        self._decay_every = decay_every
        self._n = 0
        self._samples = 0
        self._counts: Counter[bytes] = Counter()
        self._recent: deque[bytes] = deque(maxlen=256)

    def record(self, position: bytes, units: float = 1.0) -> None:
        self._n += 1
        if self._n % self._sample_every:
            return
        self._samples += 1
        self._counts[position] += units
        self._recent.append(position)
        if len(self._counts) > self._capacity:
            # Evict the coldest half: a key that is truly hot re-enters at once.
            for key, _ in self._counts.most_common()[self._capacity // 2 :]:
                del self._counts[key]
        if self._samples % self._decay_every == 0:
            for key in list(self._counts):
                self._counts[key] /= 2
                if self._counts[key] < 0.5:
                    del self._counts[key]

    def top(self, k: int = 5) -> list[tuple[bytes, float]]:
        """The k hottest sampled positions with their share of all sampled load."""
        total = sum(self._counts.values())
        if not total:
            return []
        return [(key, count / total) for key, count in self._counts.most_common(k)]

    def recent(self) -> list[bytes]:
        """Recently sampled positions in arrival order: tells a sequential key run from spread load."""
        return list(self._recent)

    def distribution(self) -> list[tuple[bytes, float]]:
        """Every sampled position in key order with its weight: the split planner's input."""
        return sorted(self._counts.items())
