"""The producer: posts events to crewstreamd's Unix socket and waits for a person's answers.

One :class:`Producer` is one connection to the daemon, and its reconnections. It keeps the
contract of the C library (docs/client.md) in Python:

* every event gets an ``event_id`` (UUID v4) before it is first sent, so sending the same line
  again after a broken connection is idempotent: the daemon answers the original ``seq``
  (``Ack.duplicate``);
* lines are pipelined: at most ``window`` events are posted and not yet acknowledged;
* when the connection breaks, it is made again (back-off 50 ms doubling to 2 s) and every line
  not acknowledged is written again, in order, then an ``await`` for every human-input request
  still awaited;
* refusals are exceptions (:class:`~crewstream.errors.RefusedError` with the daemon's code and
  detail); ``unavailable`` is retried with back-off a bounded number of times first.

I/O happens on one background thread per producer, which owns the socket; the public methods
are thread-safe (crewAI calls its event handlers from a pool of threads).
"""

import collections
import concurrent.futures
import heapq
import json
import logging
import os
import select
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Tuple

from .errors import (
    ClosedError,
    ProtocolError,
    RefusedError,
    RequestNotFoundError,
    UnavailableError,
    WindowFullError,
)

__all__ = ["Producer", "Ack", "Answer", "default_socket_path"]

log = logging.getLogger("crewstream")

DEFAULT_WINDOW = 1024
DEFAULT_MAX_LINE_BYTES = 1024 * 1024


def default_socket_path() -> str:
    """The socket path a producer uses when given none, as the C library chooses it:
    ``$CREWSTREAM_SOCKET`` when set and not empty, else ``$XDG_RUNTIME_DIR/crewstream.sock``,
    else ``/tmp/crewstream.sock`` (the daemon's own default). Under systemd the daemon's socket is
    ``/run/crewstream/ingest.sock``: set ``CREWSTREAM_SOCKET``."""
    path = os.environ.get("CREWSTREAM_SOCKET")
    if path:
        return path
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "crewstream.sock")
    return "/tmp/crewstream.sock"


@dataclass(frozen=True)
class Ack:
    """The daemon stored an event (or already held it).

    ``seq`` is the event's per-execution sequence number; ``duplicate`` is true when the daemon
    already held this ``event_id`` and type and stored nothing (``seq`` is then the original);
    ``resent`` is true when the line was written on more than one connection; ``connection``
    counts the producer's connections (a new daemon after a restart answers on a later one)."""

    execution_id: str
    event_id: str
    seq: int
    duplicate: bool = False
    resent: bool = False
    connection: int = 1  # which of the producer's connections (1, 2, …) delivered the ack


@dataclass(frozen=True)
class Answer:
    """A person's answer to a ``human_input_required`` request (the daemon's push)."""

    execution_id: str
    request_event_id: str
    is_approve: bool
    human_feedback: Optional[str] = None
    task_id: Optional[str] = None
    event_id: Optional[str] = None  # the human_input_completed event that carries it
    seq: Optional[int] = None

    @property
    def approved(self) -> bool:
        """Whether the person approved."""
        return self.is_approve


class _Entry:
    """One line waiting for its reply (an event or a command)."""

    __slots__ = ("line", "future", "kind", "execution_id", "event_id", "type", "sends", "retries", "retry_due", "done")

    def __init__(self, line: bytes, kind: str, future: Optional[concurrent.futures.Future] = None, **kw: Any) -> None:
        self.line = line
        self.kind = kind  # "event", or a command: "await", "ping", "serve", "kickoff_ack", "auto_await"
        self.future = future
        self.execution_id: str = kw.get("execution_id", "")
        self.event_id: str = kw.get("event_id", "")
        self.type: str = kw.get("type", "")
        self.sends = 0
        self.retries = 0
        self.retry_due: Optional[float] = None
        self.done = False


def _encode(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def _resolve(fut: Optional[concurrent.futures.Future], value: Any = None, exc: Optional[BaseException] = None) -> None:
    if fut is None or fut.done():
        return
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)
    except concurrent.futures.InvalidStateError:  # cancelled meanwhile
        pass


class Producer:
    """A connection to crewstreamd's ingest socket that posts events, pipelined and acknowledged,
    and waits for people's answers; it reconnects and resends by itself.

    :param socket_path: the daemon's socket; default :func:`default_socket_path`.
    :param window: the most events posted and not yet acknowledged (default 1024; keep it at most
        the daemon's ``store.ring_events``, the duplicates it can recognise).
    :param connect_timeout: how long the constructor keeps trying to connect (0: one attempt).
        It raises the ``OSError`` of the last attempt (``FileNotFoundError`` when no socket is
        there, ``ConnectionRefusedError`` when nobody listens).
    :param post_timeout: how long :meth:`post` and :meth:`submit` wait for room in a full window.
    :param unavailable_retries: how many times an event refused ``unavailable`` is sent again
        (back-off 100 ms doubling to 5 s) before :class:`~crewstream.errors.UnavailableError`.
    :param max_line_bytes: the longest line accepted locally (the daemon's
        ``limits.max_event_bytes``, 1 MiB by default); longer events raise ``ValueError``.
    :param on_push: called on the I/O thread with every push that is not a human-input answer
        (``{"op":"kickoff",…}``, used by :mod:`crewstream.runtime`); it must not block.

    A producer is a context manager; :meth:`close` flushes first.
    """

    def __init__(
        self,
        socket_path: Optional[str] = None,
        *,
        window: int = DEFAULT_WINDOW,
        connect_timeout: float = 0.0,
        post_timeout: float = 30.0,
        unavailable_retries: int = 8,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        backoff_initial: float = 0.05,
        backoff_max: float = 2.0,
        on_push: Optional[Callable[[Dict[str, Any]], None]] = None,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.socket_path = socket_path or default_socket_path()
        self.window = window
        self.post_timeout = post_timeout
        self.unavailable_retries = unavailable_retries
        self.max_line_bytes = max_line_bytes
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.on_push = on_push
        self.last_error = ""  # the last connection problem, in words

        self._cv = threading.Condition(threading.Lock())
        self._pending: Deque[_Entry] = collections.deque()  # not yet acknowledged, in post order
        self._inflight: Deque[_Entry] = collections.deque()  # written on this connection, reply due
        self._unacked_events = 0
        self._out = bytearray()
        self._sock: Optional[socket.socket] = None
        self._conn_replies = 0
        self._retry_heap: List[Tuple[float, int, _Entry]] = []
        self._retry_n = 0
        self._awaited: Dict[str, str] = {}  # request event_id -> execution_id, not yet answered
        self._answers: Dict[str, Answer] = {}
        self._lost: Dict[str, RefusedError] = {}  # awaited requests the daemon did not know
        self._serves: List[bytes] = []  # serve registrations, made again on every connection
        self._closed = False
        self._connections = 0
        self.stats = {"posted": 0, "acked": 0, "duplicates": 0, "resent": 0, "refused": 0, "retried": 0, "reconnects": 0}

        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        deadline = time.monotonic() + max(0.0, connect_timeout)
        delay = backoff_initial
        while True:
            try:
                sock = self._connect_once()
                break
            except OSError:
                if time.monotonic() + delay > deadline:
                    self._wake_r.close()
                    self._wake_w.close()
                    raise
                time.sleep(delay)
                delay = min(delay * 2, backoff_max)
        with self._cv:
            self._on_connected(sock)
        self._thread = threading.Thread(target=self._io_loop, name="crewstream-producer", daemon=True)
        self._thread.start()

    # ---- public API ------------------------------------------------------------------------

    def submit(self, event: Mapping[str, Any], timeout: Optional[float] = None) -> "concurrent.futures.Future[Ack]":
        """Queues one event and returns a future of its :class:`Ack` without waiting for it
        (pipelining). The future fails with :class:`~crewstream.errors.RefusedError` when the
        daemon refuses the event. ``event`` is a mapping with at least ``execution_id`` and
        ``type``; an ``event_id`` is added (UUID v4) when it has none. Waits up to ``timeout``
        (default ``post_timeout``) for room in a full window, then raises
        :class:`~crewstream.errors.WindowFullError`; nothing is queued then."""
        if not isinstance(event, Mapping):
            raise TypeError("an event is a mapping (dict), not %s" % type(event).__name__)
        if "op" in event:
            raise ValueError('an event has no "op" member: commands have their own methods')
        ev = dict(event)
        if not ev.get("event_id"):
            ev = dict([("event_id", str(uuid.uuid4()))] + list(ev.items()))
        line = _encode(ev)
        if len(line) - 1 > self.max_line_bytes:
            raise ValueError("event line of %d bytes is longer than max_line_bytes (%d)" % (len(line) - 1, self.max_line_bytes))
        fut: concurrent.futures.Future = concurrent.futures.Future()
        entry = _Entry(line, "event", fut, execution_id=str(ev.get("execution_id", "")), event_id=str(ev["event_id"]), type=str(ev.get("type", "")))
        wait = self.post_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        with self._cv:
            while True:
                if self._closed:
                    raise ClosedError("the producer is closed")
                if self._unacked_events < self.window:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WindowFullError(
                        "%d events not acknowledged for %.1fs%s" % (self._unacked_events, wait, self._why_disconnected())
                    )
                self._cv.wait(left)
            self._unacked_events += 1
            self.stats["posted"] += 1
            self._queue_locked(entry)
        return fut

    def post(self, event: Mapping[str, Any], timeout: Optional[float] = None) -> Ack:
        """Posts one event and waits for its :class:`Ack` (up to ``timeout``, default
        ``post_timeout``; then ``TimeoutError``: the line stays queued and is still delivered).
        Raises :class:`~crewstream.errors.RefusedError` when the daemon refuses it."""
        wait = self.post_timeout if timeout is None else timeout
        fut = self.submit(event, wait)
        return self._result(fut, wait, "the ack of event %s" % event.get("event_id", ""))

    def post_many(self, events: List[Mapping[str, Any]], timeout: Optional[float] = None) -> List[Ack]:
        """Posts events pipelined and returns their acks, in order (the first refusal raises)."""
        wait = self.post_timeout if timeout is None else timeout
        futs = [self.submit(e, wait) for e in events]
        return [self._result(f, wait, "an ack") for f in futs]

    def flush(self, timeout: Optional[float] = None) -> None:
        """Waits until every line posted so far is acknowledged or refused (``TimeoutError``
        after ``timeout`` seconds; ``None`` waits without limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while self._pending:
                if self._closed:
                    raise ClosedError("the producer is closed")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError("%d lines not acknowledged within %.1fs%s" % (len(self._pending), timeout, self._why_disconnected()))
                self._cv.wait(left)

    def ping(self, timeout: float = 5.0) -> None:
        """Round trip to the daemon (``{"op":"ping"}``)."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._cv:
            self._check_open()
            self._queue_locked(_Entry(_encode({"op": "ping"}), "ping", fut))
        self._result(fut, timeout, "pong")

    def ask(
        self,
        execution_id: str,
        prompt: str,
        *,
        task_id: Optional[str] = None,
        timeout: Optional[float] = None,
        repost_if_lost: bool = True,
        **fields: Any,
    ) -> Answer:
        """Posts a ``human_input_required`` event and blocks until a person answers it (from the
        dashboard, ``POST /resume``, a WebSocket…), for at most ``timeout`` seconds (``None``: no
        limit; then ``TimeoutError``). ``fields`` go into the event as they are (``crew_id``,
        ``agent_id``, ``context``, ``reason_flags``, ``event_id``…).

        A broken connection or a daemon restart meanwhile is handled inside: the producer
        reconnects and sends ``await`` for the request. A daemon that does not know the request
        any more (restarted without a journal) is sent the request again, with the same
        ``event_id``, unless ``repost_if_lost`` is false (then
        :class:`~crewstream.errors.RequestNotFoundError`)."""
        ev: Dict[str, Any] = {"execution_id": execution_id, "type": "human_input_required", "prompt": prompt}
        if task_id is not None:
            ev["task_id"] = task_id
        ev.update(fields)
        if not ev.get("event_id"):
            ev["event_id"] = str(uuid.uuid4())
        ack = self.post(ev)
        return self.wait_answer(execution_id, ack.event_id, timeout=timeout, repost=ev if repost_if_lost else None)

    def wait_answer(
        self,
        execution_id: str,
        request_event_id: str,
        timeout: Optional[float] = None,
        repost: Optional[Mapping[str, Any]] = None,
    ) -> Answer:
        """Blocks until the answer to the request ``request_event_id`` is in (the daemon's
        ``await``; an answer given long before is returned at once), for at most ``timeout``
        seconds. ``repost``, the request event itself, is posted again when the daemon says it
        does not know the request; without it that raises
        :class:`~crewstream.errors.RequestNotFoundError`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            self._check_open()
            if request_event_id not in self._answers and request_event_id not in self._awaited:
                self._awaited[request_event_id] = execution_id
                if not self._request_pending_locked(request_event_id):
                    self._queue_locked(_Entry(self._await_line(execution_id, request_event_id), "auto_await", event_id=request_event_id, execution_id=execution_id), pending=False)
            while True:
                ans = self._answers.get(request_event_id)
                if ans is not None:
                    return ans
                lost = self._lost.pop(request_event_id, None)
                if lost is not None:
                    if repost is None:
                        self._awaited.pop(request_event_id, None)
                        raise lost
                    log.warning("the daemon does not know request %s (%s); posting it again", request_event_id, lost.detail)
                    self._cv.release()
                    try:
                        self.submit(repost)
                    finally:
                        self._cv.acquire()
                    self._awaited[request_event_id] = execution_id
                if self._closed:
                    raise ClosedError("the producer is closed")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError("no answer to request %s within %.1fs%s" % (request_event_id, timeout, self._why_disconnected()))
                self._cv.wait(left)

    def serve(self, crew: str, inputs: Optional[List[str]] = None, concurrency: int = 1, timeout: float = 10.0) -> Dict[str, Any]:
        """Registers this connection as a runtime of ``crew`` (SPEC §9, ``{"op":"serve"}``); the
        registration is made again on every reconnection. Kickoffs arrive through ``on_push``.
        Returns the daemon's reply; raises :class:`~crewstream.errors.RefusedError`."""
        line = _encode({"op": "serve", "crew": crew, "inputs": list(inputs or []), "concurrency": concurrency})
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._cv:
            self._check_open()
            self._serves.append(line)
            self._queue_locked(_Entry(line, "serve", fut), pending=False)
        try:
            return self._result(fut, timeout, "the serve reply")
        except RefusedError:
            with self._cv:
                if line in self._serves:
                    self._serves.remove(line)
            raise

    def command(self, cmd: Mapping[str, Any]) -> "concurrent.futures.Future[Dict[str, Any]]":
        """Sends one command line (``{"op":…}``: ``kickoff_ack``, ``webhooks``…) and returns a
        future of its reply; a refusal fails the future with
        :class:`~crewstream.errors.RefusedError`. Commands not answered when a connection breaks
        are sent again on the next one."""
        if "op" not in cmd:
            raise ValueError('a command has an "op" member')
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._cv:
            self._check_open()
            self._queue_locked(_Entry(_encode(cmd), str(cmd["op"]), fut, execution_id=str(cmd.get("execution_id", ""))))
        return fut

    @property
    def connected(self) -> bool:
        """Whether the producer has a connection now."""
        return self._sock is not None

    def close(self, flush_timeout: Optional[float] = 5.0) -> None:
        """Flushes (up to ``flush_timeout`` seconds; 0 skips it), then closes the connection and
        stops the I/O thread. Lines still not acknowledged fail with
        :class:`~crewstream.errors.ClosedError` (they may or may not have been stored)."""
        if flush_timeout:
            try:
                self.flush(flush_timeout)
            except (TimeoutError, ClosedError) as e:
                log.warning("closing with lines not acknowledged: %s", e)
        with self._cv:
            if self._closed:
                return
            self._closed = True
            for e in list(self._pending) + list(self._inflight):
                _resolve(e.future, exc=ClosedError("the producer was closed before the reply"))
            self._cv.notify_all()
        self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(5.0)
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- for tests -----------------------------------------------------------------------

    def _break_connection(self) -> None:
        """Cuts the current connection (as a network fault would); the producer reconnects."""
        with self._cv:
            if self._sock is not None:
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._wake()

    # ---- internals -------------------------------------------------------------------------

    def _result(self, fut: concurrent.futures.Future, timeout: Optional[float], what: str) -> Any:
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError("%s did not come within %ss%s" % (what, timeout, self._why_disconnected())) from None

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the producer is closed")

    def _why_disconnected(self) -> str:
        return "" if self._sock is not None else " (disconnected: %s)" % (self.last_error or "reconnecting")

    @staticmethod
    def _await_line(execution_id: str, event_id: str) -> bytes:
        return _encode({"op": "await", "execution_id": execution_id, "event_id": event_id})

    def _request_pending_locked(self, event_id: str) -> bool:
        return any(e.kind == "event" and e.event_id == event_id for e in self._pending)

    def _queue_locked(self, entry: _Entry, pending: bool = True) -> None:
        if pending:
            self._pending.append(entry)
        if self._sock is not None:
            was_empty = not self._out
            self._write_locked(entry)
            if was_empty:
                self._wake()

    def _write_locked(self, entry: _Entry) -> None:
        entry.sends += 1
        self._inflight.append(entry)
        self._out += entry.line

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass

    def _connect_once(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(2.0)
            s.connect(self.socket_path)
            s.setblocking(False)
            return s
        except OSError as e:
            s.close()
            self.last_error = "connect %s: %s" % (self.socket_path, e.strerror or e)
            raise

    def _on_connected(self, sock: socket.socket) -> None:
        """A new connection: serve registrations, every line not acknowledged in order, then an
        ``await`` for every request still awaited (under the lock)."""
        self._sock = sock
        self._connections += 1
        self._conn_replies = 0
        self._inflight.clear()
        self._out = bytearray()
        for line in self._serves:
            self._write_locked(_Entry(line, "serve"))
        resent = 0
        for e in self._pending:
            if e.sends > 0:
                resent += 1
            e.retry_due = None
            self._write_locked(e)
        pending_ids = {e.event_id for e in self._pending if e.kind == "event"}
        for req, x in self._awaited.items():
            if req not in pending_ids:
                self._write_locked(_Entry(self._await_line(x, req), "auto_await", event_id=req, execution_id=x))
        if self._connections > 1:
            self.stats["reconnects"] += 1
            self.stats["resent"] += resent
            log.info("reconnected to %s; %d lines sent again, %d requests awaited again", self.socket_path, resent, len(self._awaited))
        self._cv.notify_all()

    def _on_disconnected(self, why: str) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None
        self._inflight.clear()
        self._out = bytearray()
        self.last_error = why
        log.warning("connection to %s lost: %s", self.socket_path, why)
        self._cv.notify_all()

    def _io_loop(self) -> None:
        buf = b""
        delay = self.backoff_initial
        next_attempt = 0.0
        while True:
            with self._cv:
                if self._closed:
                    if self._sock is not None:
                        self._sock.close()
                        self._sock = None
                    return
                sock = self._sock
                out = bytes(self._out[:262144]) if self._out else b""
                now = time.monotonic()
                timeout = 1.0
                if self._retry_heap:
                    timeout = min(timeout, max(0.0, self._retry_heap[0][0] - now))
            if sock is None:
                now = time.monotonic()
                if now < next_attempt:
                    self._sleep_or_wake(min(next_attempt - now, 1.0))
                    continue
                try:
                    sock = self._connect_once()
                except OSError:
                    next_attempt = time.monotonic() + delay
                    delay = min(delay * 2, self.backoff_max)
                    continue
                buf = b""
                with self._cv:
                    if self._closed:
                        sock.close()
                        continue
                    self._on_connected(sock)
                continue
            try:
                r, w, _ = select.select([sock, self._wake_r], [sock] if out else [], [], timeout)
            except (OSError, ValueError):
                r, w = [sock], []
            if self._wake_r in r:
                try:
                    while self._wake_r.recv(4096):
                        pass
                except (BlockingIOError, OSError):
                    pass
            broken = ""
            if w:
                try:
                    n = sock.send(out)
                    with self._cv:
                        if self._sock is sock:
                            del self._out[:n]
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as e:
                    broken = "write: %s" % (e.strerror or e)
            if sock in r and not broken:
                try:
                    chunk = sock.recv(262144)
                    if not chunk:
                        broken = "the daemon closed the connection"
                    else:
                        buf += chunk
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as e:
                    broken = "read: %s" % (e.strerror or e)
            pushes: List[Dict[str, Any]] = []
            if b"\n" in buf:
                lines = buf.split(b"\n")
                buf = lines.pop()
                with self._cv:
                    for line in lines:
                        if not line.strip():
                            continue
                        try:
                            self._handle_line(line, pushes)
                        except ProtocolError as e:
                            broken = str(e)
                            break
                    if not broken and self._conn_replies:
                        delay = self.backoff_initial
            self._fire_retries()
            if broken:
                with self._cv:
                    had_replies = self._conn_replies > 0
                    if self._sock is sock:
                        self._on_disconnected(broken)
                buf = b""
                next_attempt = 0.0 if had_replies else time.monotonic() + delay
                if not had_replies:
                    delay = min(delay * 2, self.backoff_max)
            for p in pushes:
                if self.on_push is not None:
                    try:
                        self.on_push(p)
                    except Exception:  # noqa: BLE001 - a callback's bug must not stop the I/O thread
                        log.exception("on_push callback failed for %r", p)
                else:
                    log.warning("push with no on_push callback dropped: %r", p)

    def _sleep_or_wake(self, seconds: float) -> None:
        try:
            r, _, _ = select.select([self._wake_r], [], [], seconds)
            if r:
                while self._wake_r.recv(4096):
                    pass
        except (BlockingIOError, OSError, ValueError):
            pass

    def _fire_retries(self) -> None:
        with self._cv:
            now = time.monotonic()
            while self._retry_heap and self._retry_heap[0][0] <= now:
                due, _, e = heapq.heappop(self._retry_heap)
                if e.done or e.retry_due != due:
                    continue
                e.retry_due = None
                if self._sock is not None:
                    self._write_locked(e)
                    self.stats["retried"] += 1

    def _handle_line(self, line: bytes, pushes: List[Dict[str, Any]]) -> None:
        """One line from the daemon (under the lock)."""
        try:
            obj = json.loads(line)
        except ValueError:
            raise ProtocolError("unreadable line from the daemon: %r" % line[:200]) from None
        if not isinstance(obj, dict):
            raise ProtocolError("unreadable line from the daemon: %r" % line[:200])
        if "ok" not in obj:
            if obj.get("op") == "human_input":
                self._on_answer(obj)
            else:
                pushes.append(obj)
            return
        if not self._inflight:
            raise ProtocolError("a reply with no line waiting for it: %r" % line[:200])
        e = self._inflight.popleft()
        self._conn_replies += 1
        ok = obj.get("ok") is True
        if e.kind == "event":
            if ok:
                ack = Ack(
                    execution_id=e.execution_id,
                    event_id=str(obj.get("event_id", e.event_id)),
                    seq=int(obj.get("seq", 0)),
                    duplicate=bool(obj.get("duplicate", False)),
                    resent=e.sends > 1,
                    connection=self._connections,
                )
                self.stats["acked"] += 1
                if ack.duplicate:
                    self.stats["duplicates"] += 1
                if e.type == "human_input_required" and ack.event_id not in self._answers:
                    self._awaited[ack.event_id] = e.execution_id
                self._finish(e, ack)
                return
            code = str(obj.get("error", "error"))
            detail = str(obj.get("detail", ""))
            if code == "unavailable" and e.retries < self.unavailable_retries:
                e.retries += 1
                due = time.monotonic() + min(0.1 * (2 ** (e.retries - 1)), 5.0)
                e.retry_due = due
                self._retry_n += 1
                heapq.heappush(self._retry_heap, (due, self._retry_n, e))
                log.info("event %s unavailable (%s); retry %d in %.1fs", e.event_id, detail, e.retries, due - time.monotonic())
                return
            self.stats["refused"] += 1
            cls = UnavailableError if code == "unavailable" else RefusedError
            self._finish(e, exc=cls(code, detail, e.event_id))
            return
        if e.kind == "auto_await":
            if not ok:
                cls2 = RequestNotFoundError if obj.get("error") == "not_found" else RefusedError
                if e.event_id in self._awaited:
                    self._awaited.pop(e.event_id, None)
                    self._lost[e.event_id] = cls2(str(obj.get("error")), str(obj.get("detail", "")), e.event_id)
                    self._cv.notify_all()
            return
        if e.kind == "serve" and e.future is None:
            if not ok:
                log.error("serve refused on reconnection: %s %s", obj.get("error"), obj.get("detail"))
            return
        if ok:
            self._finish(e, obj)
        else:
            self._finish(e, exc=RefusedError(str(obj.get("error", "error")), str(obj.get("detail", ""))))

    def _finish(self, e: _Entry, value: Any = None, exc: Optional[BaseException] = None) -> None:
        e.done = True
        if self._pending and self._pending[0] is e:
            self._pending.popleft()
        else:
            try:
                self._pending.remove(e)
            except ValueError:
                pass
        if e.kind == "event":
            self._unacked_events -= 1
        _resolve(e.future, value, exc)
        self._cv.notify_all()

    def _on_answer(self, obj: Dict[str, Any]) -> None:
        req = str(obj.get("request_event_id", ""))
        ans = Answer(
            execution_id=str(obj.get("execution_id", "")),
            request_event_id=req,
            is_approve=bool(obj.get("is_approve", False)),
            human_feedback=obj.get("human_feedback"),
            task_id=obj.get("task_id"),
            event_id=obj.get("event_id"),
            seq=obj.get("seq"),
        )
        self._answers[req] = ans
        self._awaited.pop(req, None)
        self._lost.pop(req, None)
        # Bound what is kept: the oldest answers go first (a caller that never collects them).
        if len(self._answers) > 4096:
            for k in list(self._answers)[: len(self._answers) - 4096]:
                del self._answers[k]
        self._cv.notify_all()
