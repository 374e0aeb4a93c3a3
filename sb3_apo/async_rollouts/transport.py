"""
The messages between the learner and a forked rollout actor, deadlock-free for any size.

A :class:`Link` is made before the fork: two pipes (weights to the actor, rollouts to the
learner) and a heartbeat the actor bumps at every env step and every chunk it sends. Each
side then takes its end:

- the actor's end (:class:`ActorEnd`) reads every message the learner sends on a thread
  of its own, as it arrives. The learner's sends therefore never wait for the actor to
  finish a rollout or a send: two large messages crossing each other (new weights one
  way, a rollout the other) cannot block both sides, whatever their sizes;
- the learner's end (:class:`LearnerEnd`) never blocks forever: it writes and reads with
  ``poll``, and gives up with :class:`PeerSilent` once neither a byte moved nor the
  heartbeat changed for :data:`SILENCE_TIMEOUT_S` seconds, and with :class:`PeerGone`
  once the actor's pipe is closed or its process has ended.

A message is a pickle (protocol 5) whose large buffers (the numpy arrays of weights and
rollouts) are written out of band, straight from the arrays' memory, and read back into
buffers that the arrays then use: no copy on the way out, one on the way in. Nothing here
creates a shared-memory segment; the heartbeat is an anonymous mapping, gone with the
processes that map it.
"""

from __future__ import annotations

import mmap
import os
import pickle
import queue
import select
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

#: Seconds without a byte moved or an env step in the actor after which the learner gives up on it.
SILENCE_TIMEOUT_S = 600.0

#: The largest write or read at once: the actor bumps its heartbeat after each.
CHUNK_BYTES = 1 << 20

#: Pipe capacity asked for (Linux); the kernel's default is 64 KiB.
PIPE_BYTES = 1 << 20

#: The learner's ends of every link made in this process: an actor forked later must not hold them,
#: or an actor forked earlier would never see the end of its own pipe when the learner closes it.
_LEARNER_FDS: set[int] = set()

_LENGTH = struct.Struct("!Q")


class PeerGone(Exception):
    """The other side closed its end of the link, or its process ended."""


class PeerSilent(Exception):
    """The actor moved no byte and took no env step for :data:`SILENCE_TIMEOUT_S` seconds."""


def encode(message: Any) -> list[memoryview]:
    """
    The bytes of a message, in parts: a header with the parts' lengths, the pickle, and the
    out-of-band buffers of the pickle (the arrays' own memory, not copied).

    :param message: any picklable object
    :return: the parts, to be written in order
    """
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    parts = [memoryview(payload), *(buffer.raw() for buffer in buffers)]
    lengths = [part.nbytes for part in parts]
    header = struct.pack(f"!{len(lengths) + 1}Q", len(lengths), *lengths)
    return [memoryview(header), *parts]


def _set_pipe_size(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, AttributeError, OSError):
        pass  # not Linux, or above the system's limit: the default capacity works, in more writes


class Heartbeat:
    """A counter in memory shared by the learner and its forked actor (an anonymous mapping)."""

    def __init__(self) -> None:
        self._memory = mmap.mmap(-1, _LENGTH.size)

    def beat(self) -> None:
        """Count one more sign of life (only the actor calls it: one writer)."""
        _LENGTH.pack_into(self._memory, 0, (self.count + 1) % (1 << 64))

    @property
    def count(self) -> int:
        """The signs of life so far."""
        return _LENGTH.unpack_from(self._memory, 0)[0]


class Link:
    """Both ends of one learner-actor link, made in the learner before it forks the actor."""

    def __init__(self) -> None:
        self.to_actor = os.pipe()
        self.to_learner = os.pipe()
        for _, write_fd in (self.to_actor, self.to_learner):
            _set_pipe_size(write_fd)
        self.heartbeat = Heartbeat()
        _LEARNER_FDS.update((self.to_actor[1], self.to_learner[0]))

    def learner_end(self, sentinel: int) -> LearnerEnd:
        """
        In the learner, after the fork: close the actor's fds and take the learner's end.

        :param sentinel: a fd that becomes readable when the actor's process ends
        """
        os.close(self.to_actor[0])
        os.close(self.to_learner[1])
        return LearnerEnd(self.to_learner[0], self.to_actor[1], self.heartbeat, sentinel)

    def actor_end(self) -> ActorEnd:
        """In the actor, after the fork: close every learner's fd (this link's and the others') and take the actor's end."""
        for fd in _LEARNER_FDS:
            os.close(fd)
        _LEARNER_FDS.clear()
        return ActorEnd(self.to_actor[0], self.to_learner[1], self.heartbeat)

    def close_all(self) -> None:
        """Close every fd of a link whose actor never started."""
        for fd in (*self.to_actor, *self.to_learner):
            _LEARNER_FDS.discard(fd)
            os.close(fd)


def _write(fd: int, parts: list[memoryview], wait_writable: Callable[[], None], progress: Callable[[], None]) -> None:
    for part in parts:
        view = part.cast("B")
        while view.nbytes:
            try:
                written = os.write(fd, view[:CHUNK_BYTES])
            except BlockingIOError:
                wait_writable()
                continue
            except (BrokenPipeError, ConnectionResetError) as error:
                raise PeerGone from error
            view = view[written:]
            progress()


def _read_exactly(fd: int, size: int, wait_readable: Callable[[], None], progress: Callable[[], None]) -> bytearray:
    data = bytearray(size)
    view, done = memoryview(data), 0
    while done < size:
        wait_readable()
        try:
            count = os.readv(fd, [view[done : done + CHUNK_BYTES]])
        except BlockingIOError:
            continue
        if count == 0:
            raise PeerGone
        done += count
        progress()
    return data


def _read(fd: int, wait_readable: Callable[[], None], progress: Callable[[], None]) -> Any:
    count = _LENGTH.unpack(_read_exactly(fd, _LENGTH.size, wait_readable, progress))[0]
    lengths = struct.unpack(f"!{count}Q", _read_exactly(fd, count * _LENGTH.size, wait_readable, progress))
    payload, *buffers = (_read_exactly(fd, length, wait_readable, progress) for length in lengths)
    return pickle.loads(payload, buffers=buffers)


class LearnerEnd:
    """
    The learner's end of a link: sends and receives that give up on a silent or dead actor.

    :param read_fd: the rollouts' pipe
    :param write_fd: the weights' pipe
    :param heartbeat: the actor's heartbeat
    :param sentinel: a fd that becomes readable when the actor's process ends
    """

    def __init__(self, read_fd: int, write_fd: int, heartbeat: Heartbeat, sentinel: int):
        self.read_fd, self.write_fd, self.heartbeat, self.sentinel = read_fd, write_fd, heartbeat, sentinel
        os.set_blocking(write_fd, False)
        os.set_blocking(read_fd, False)
        self._last_sign = (heartbeat.count, time.monotonic())

    def _progress(self) -> None:
        self._last_sign = (self.heartbeat.count, time.monotonic())

    def _wait(self, fd: int, event: int) -> None:
        """Wait until ``fd`` is ready for ``event``; :class:`PeerGone` or :class:`PeerSilent` if it never will be."""
        poller = select.poll()
        poller.register(fd, event)
        poller.register(self.sentinel, select.POLLIN)
        self._progress()
        while True:
            ready = dict(poller.poll(1000 * min(1.0, SILENCE_TIMEOUT_S)))
            if fd in ready:
                return
            if self.sentinel in ready:
                raise PeerGone
            count, since = self._last_sign
            if self.heartbeat.count != count:
                self._progress()
            elif time.monotonic() - since >= SILENCE_TIMEOUT_S:
                raise PeerSilent(f"nothing moved and no env step for {SILENCE_TIMEOUT_S:g} s")

    def send(self, message: Any) -> None:
        """Send a message; raises :class:`PeerGone` or :class:`PeerSilent`."""
        _write(self.write_fd, encode(message), lambda: self._wait(self.write_fd, select.POLLOUT), self._progress)

    def receive(self) -> Any:
        """The next message; raises :class:`PeerGone` or :class:`PeerSilent`."""
        return _read(self.read_fd, lambda: self._wait(self.read_fd, select.POLLIN), self._progress)

    def leftovers(self) -> list[Any]:
        """The whole messages still in the pipe, once the actor's process has ended."""
        messages = []

        def wait_readable() -> None:
            if not select.select([self.read_fd], [], [], 0)[0]:
                raise PeerGone  # nothing more will come: its writer is gone

        while True:
            try:
                messages.append(_read(self.read_fd, wait_readable, lambda: None))
            except (PeerGone, pickle.UnpicklingError, EOFError):
                return messages

    def close(self) -> None:
        """Close the learner's fds: the actor reads the end of its pipe, and a send of its own fails."""
        for fd in (self.write_fd, self.read_fd):
            _LEARNER_FDS.discard(fd)
            os.close(fd)


class ActorEnd:
    """
    The actor's end of a link. A thread receives the learner's messages as they come
    (:meth:`receive` takes them in order); :meth:`send` blocks until the learner reads.

    :param read_fd: the weights' pipe
    :param write_fd: the rollouts' pipe
    :param heartbeat: the heartbeat the actor bumps
    """

    def __init__(self, read_fd: int, write_fd: int, heartbeat: Heartbeat):
        self.read_fd, self.write_fd, self.heartbeat = read_fd, write_fd, heartbeat
        #: Set once the learner closed its end (or died): no message will come any more.
        self.learner_gone = threading.Event()
        self._messages: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._receiver = threading.Thread(target=self._receive_all, name="sb3-apo-actor-receiver", daemon=True)

    def start(self, on_learner_gone: Callable[[], None]) -> None:
        """
        Start receiving.

        :param on_learner_gone: called on the receiving thread once the learner's end closed
        """
        self._on_learner_gone = on_learner_gone
        self._receiver.start()

    def _receive_all(self) -> None:
        try:
            while True:
                self._messages.put(_read(self.read_fd, lambda: None, lambda: None))
        except (PeerGone, OSError, pickle.UnpicklingError, EOFError):
            pass
        self.learner_gone.set()
        self._messages.put(None)
        self._on_learner_gone()

    def receive(self) -> Any:
        """The learner's next message, or ``None`` once it closed its end."""
        return self._messages.get()

    def send(self, message: Any) -> None:
        """Send a message, bumping the heartbeat at each chunk; raises :class:`PeerGone` if the learner closed its end."""
        _write(self.write_fd, encode(message), lambda: None, self.heartbeat.beat)
