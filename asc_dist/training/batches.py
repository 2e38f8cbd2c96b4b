"""Mini-batches of waveforms read from the memory-mapped store, prefetched on a background thread.

No DataLoader worker processes: a Ray trial on a 2-core box cannot afford them, and copying a batch of
1-s clips out of a memory map takes milliseconds. One thread keeps the next batches ready while the model
trains (`wait_s` measures what the training loop still waits).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from asc_dist.data.store import SplitData


@dataclass
class Batch:
    index: np.ndarray  # positions within the split
    waves: np.ndarray  # float32 [B, samples]
    labels: np.ndarray  # int64 [B]
    devices: list[str]
    teacher_logits: object = None  # torch [B, C]: a teacher run on this batch's augmented waves (Trainer.online_teacher)


class BatchLoader:
    def __init__(self, data: SplitData, batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False, prefetch: int = 4):
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.prefetch = prefetch
        self.epoch = 0
        self.wait_s = 0.0

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self) -> np.ndarray:
        n = len(self.data)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, self.epoch]).permutation(n)

    def _make(self, index: np.ndarray) -> Batch:
        table = self.data.table
        return Batch(index, self.data.waves(index), table.label[index], table.device[index].tolist())

    def __iter__(self) -> Iterator[Batch]:
        order = self._order()
        self.epoch += 1
        chunks = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.drop_last and chunks and len(chunks[-1]) < self.batch_size:
            chunks = chunks[:-1]
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def produce() -> None:
            try:
                for chunk in chunks:
                    if stop.is_set():
                        return
                    q.put(self._make(chunk))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
                q.put(exc)
                return
            q.put(None)

        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        try:
            while True:
                t0 = time.perf_counter()
                item = q.get()
                self.wait_s += time.perf_counter() - t0
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():
                try:
                    q.get_nowait()
                except queue.Empty:
                    thread.join(timeout=0.05)
