"""A shared, crash-proof store of metric values: one memory-mapped slot per worker.

The server makes one folder for its life (:func:`server_folder`). Each worker claims a slot
with a non-blocking ``flock`` on ``slot-K.lock``: the lowest free K, so a worker that replaces
a dead one (whose lock died with it) takes over its slot and continues its values. A slot is
``slot-K.bin``, a fixed array of float64 cells mapped into memory (an increment is a plain
write into the page cache, which outlives a ``kill -9``), and ``slot-K.idx``, one line
``offset<TAB>width<TAB>family<TAB>labels`` per series, appended when a series first appears.

A reader (:class:`StoreReader`, any worker answering a scrape) maps every slot read-only and
tells live slots from dead ones by probing their locks; cells only ever grow for counters, and
slots are never removed while the server runs, so sums over slots never go backwards.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CAPACITY = 8192
"""Cells (float64) per slot: 64 KiB, room for about 500 histograms."""
SINK = 64
"""Cells 0..SINK-1 take the writes of series allocated once a slot is full; never exported."""

logger = logging.getLogger(__name__)

Key = tuple[str, str]
"""A series: (family name, rendered labels such as ``endpoint="fraud",version="1"``)."""


def server_folder(parent: Path, name: str) -> tuple[Path, int]:
    """A fresh metrics folder under ``parent`` for one server, and the lock fd that marks it live.

    Folders left by servers that died (their ``server.lock`` is free) are removed first. Keep
    the returned fd open for the server's life; :func:`release_folder` ends it.
    """
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.iterdir():
        lock = stale / "server.lock"
        if not lock.exists():
            continue
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # another server is using it
        finally:
            os.close(fd)
        shutil.rmtree(stale, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))
    fd = os.open(folder / "server.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return folder, fd


def release_folder(folder: Path, fd: int) -> None:
    """Remove a folder made by :func:`server_folder` and release its lock."""
    shutil.rmtree(folder, ignore_errors=True)
    os.close(fd)


@contextlib.contextmanager
def _claim_lock(folder: Path, operation: int) -> Iterator[None]:
    # claiming holds it exclusively; probing slot locks holds it shared, so a probe never
    # makes a claimer believe a dead worker's slot is taken
    fd = os.open(folder / "claim.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, operation)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _map(path: Path, writable: bool) -> mmap.mmap:
    fd = os.open(path, os.O_RDWR | os.O_CREAT if writable else os.O_RDONLY, 0o600)
    try:
        if writable and os.fstat(fd).st_size < CAPACITY * 8:
            os.ftruncate(fd, CAPACITY * 8)
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        return mmap.mmap(fd, CAPACITY * 8, access=access)
    finally:
        os.close(fd)  # the mapping keeps the file


def _parse_index(data: bytes, into: dict[Key, tuple[int, int]]) -> int:
    """Add the complete lines of ``data`` to ``into``; return the bytes they span."""
    end = data.rfind(b"\n") + 1
    for line in data[:end].decode().splitlines():
        offset, width, family, labels = line.split("\t", 3)
        into[(family, labels)] = (int(offset), int(width))
    return end


class Slot:
    """The cells one worker writes: claim one with :meth:`claim`, then :meth:`allocate` series."""

    def __init__(self, folder: Path, index: int, lock_fd: int) -> None:
        self.folder = folder
        self.index = index
        self._lock_fd = lock_fd
        self._map = _map(folder / f"slot-{index}.bin", writable=True)
        self.values = memoryview(self._map).cast("d")
        """The cells; ``values[offset] += 1`` is an increment."""
        self.series: dict[Key, tuple[int, int]] = {}
        idx = folder / f"slot-{index}.idx"
        data = idx.read_bytes() if idx.exists() else b""
        end = _parse_index(data, self.series)
        self._index_fd = os.open(idx, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if end < len(data):  # a line torn by the previous owner's death
            os.ftruncate(self._index_fd, end)
        self._next = max((o + w for o, w in self.series.values()), default=SINK)
        self._full = False
        self._allocating = threading.Lock()  # versions load in threads

    @classmethod
    def claim(cls, folder: Path) -> Slot:
        """Take the lowest slot no live process holds (a dead worker's slot is continued)."""
        folder.mkdir(parents=True, exist_ok=True)
        with _claim_lock(folder, fcntl.LOCK_EX):
            index = 0
            while True:
                fd = os.open(folder / f"slot-{index}.lock", os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    index += 1
                    continue
                return cls(folder, index, fd)

    def allocate(self, family: str, labels: str, width: int) -> int:
        """The offset of series ``(family, labels)`` of ``width`` cells, added if new."""
        with self._allocating:
            return self._allocate(family, labels, width)

    def _allocate(self, family: str, labels: str, width: int) -> int:
        known = self.series.get((family, labels))
        if known is not None:
            return known[0]
        if self._next + width > CAPACITY:
            if not self._full:
                logger.warning(
                    "metrics slot %d is full (%d cells): new series such as %s{%s} are not "
                    "exported; fewer label values (versions, error causes) avoid this",
                    self.index,
                    CAPACITY,
                    family,
                    labels,
                )
                self._full = True
            return 0
        offset = self._next
        os.write(self._index_fd, f"{offset}\t{width}\t{family}\t{labels}\n".encode())
        self.series[(family, labels)] = (offset, width)
        self._next = offset + width
        return offset

    def close(self) -> None:
        """Release the slot (its values stay for the next worker that claims it)."""
        self.values.release()
        self._map.close()
        os.close(self._index_fd)
        os.close(self._lock_fd)


@dataclass
class SlotSnapshot:
    """What one slot held at one moment."""

    index: int
    alive: bool
    series: dict[Key, tuple[int, int]]
    values: memoryview[float]


class _SlotReader:
    def __init__(self, folder: Path, index: int) -> None:
        self.index = index
        self.lock_fd = os.open(folder / f"slot-{index}.lock", os.O_RDONLY)
        self.map = _map(folder / f"slot-{index}.bin", writable=False)
        self.index_path = folder / f"slot-{index}.idx"
        self.read_to = 0
        self.series: dict[Key, tuple[int, int]] = {}

    def alive(self) -> bool:
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True  # its worker holds it
        fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
        return False

    def refresh(self) -> None:
        with contextlib.suppress(FileNotFoundError), self.index_path.open("rb") as file:
            file.seek(self.read_to)
            self.read_to += _parse_index(file.read(), self.series)


class StoreReader:
    """Reads every slot of a store folder; one per process, reused across scrapes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._slots: dict[int, _SlotReader] = {}

    def snapshot(self) -> list[SlotSnapshot]:
        """Every slot's series, a copy of its values, and whether its worker is alive."""
        out = []
        with _claim_lock(self.folder, fcntl.LOCK_SH):
            for index in self._indices():
                reader = self._slots.get(index)
                if reader is None:
                    reader = self._slots[index] = _SlotReader(self.folder, index)
                reader.refresh()
                values = memoryview(bytes(reader.map)).cast("d")
                out.append(SlotSnapshot(index, reader.alive(), dict(reader.series), values))
        return out

    def _indices(self) -> list[int]:
        found = []
        for path in self.folder.glob("slot-*.bin"):
            number = path.stem.removeprefix("slot-")
            if number.isdigit() and (self.folder / f"slot-{number}.lock").exists():
                found.append(int(number))
        return sorted(found)

    def close(self) -> None:
        """Unmap every slot."""
        for reader in self._slots.values():
            reader.map.close()
            os.close(reader.lock_fd)
        self._slots.clear()
