"""The subscriber: an iterator over crewstreamd's Server-Sent Events streams.

``Subscriber("http://127.0.0.1:8000", "run-42")`` reads ``GET /v1/executions/run-42/events``
(without an execution id, the global ``GET /v1/events``) with ``http.client`` and yields one
:class:`StreamEvent` per event. When the connection is cut (the daemon restarted, a proxy timed
out, nothing arrived for ``read_timeout`` seconds although the daemon sends heartbeats), it
connects again with ``Last-Event-ID`` set to the cursor of the last event it yielded, so the
stream goes on exactly after it. When the daemon cannot resume exactly (the event left the ring,
the cursor is from before a restart), the first thing it sends is a ``stream.gap`` event: it is
yielded like any other event (``event.is_gap``), never swallowed.
"""

import http.client
import json
import logging
import socket
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence

from .errors import HTTPError

__all__ = ["Subscriber", "StreamEvent"]

log = logging.getLogger("crewstream")


@dataclass(frozen=True)
class StreamEvent:
    """One event of a stream: ``data`` is the event object, ``id`` its cursor (the SSE ``id:``
    line; ``None`` for a ``stream.gap``, which has none)."""

    data: Dict[str, Any]
    id: Optional[str] = None
    event: Optional[str] = None  # the SSE ``event:`` line (with named=True)
    reconnects: int = field(default=0, compare=False)  # connections made before this one arrived

    @property
    def type(self) -> str:
        """The event's ``type``."""
        return str(self.data.get("type", ""))

    @property
    def seq(self) -> Optional[int]:
        """The event's per-execution ``seq`` (``None`` for a ``stream.gap``)."""
        s = self.data.get("seq")
        return s if isinstance(s, int) else None

    @property
    def is_gap(self) -> bool:
        """True for the daemon's ``stream.gap``: events between the position asked for and
        ``data["first_seq"]`` are not available any more."""
        return self.type == "stream.gap"


class Subscriber:
    """An SSE iterator over one execution's events, or over every execution's.

    :param base_url: the daemon's HTTP address, e.g. ``http://127.0.0.1:8000``.
    :param execution_id: the execution; ``None`` reads ``GET /v1/events`` (every execution; the
        token needs ``read`` on ``"*"``).
    :param token: a bearer token, sent as ``Authorization: Bearer`` (or as ``?token=`` with
        ``token_in_query=True``).
    :param types: a filter, e.g. ``["run.*", "human_input_*"]`` (``stream.gap`` always passes).
    :param last_event_id: resume after this cursor, bare seq or event_id.
    :param since_seq: resume after this seq (0: from the start).
    :param since_now: skip the history; only events published from now on.
    :param reconnect: connect again after a cut (default); otherwise the iteration ends.
    :param read_timeout: a connection that delivers nothing (not even a heartbeat) this long is
        treated as cut (keep it above the daemon's ``heartbeat_s``).
    :param max_reconnect_delay: the back-off between attempts doubles from the daemon's
        ``retry:`` hint (or 0.1 s) up to this.
    :param max_attempts: consecutive failed connection attempts before giving up (``None``:
        never); the last error is then raised.

    Errors the daemon answers (401, 403, 400 for a bad filter…) raise
    :class:`~crewstream.errors.HTTPError` at once: retrying would not help.
    """

    def __init__(
        self,
        base_url: str,
        execution_id: Optional[str] = None,
        *,
        token: Optional[str] = None,
        token_in_query: bool = False,
        types: Optional[Sequence[str]] = None,
        last_event_id: Optional[str] = None,
        since_seq: Optional[int] = None,
        since_now: bool = False,
        named: bool = False,
        reconnect: bool = True,
        read_timeout: float = 60.0,
        connect_timeout: float = 10.0,
        max_reconnect_delay: float = 10.0,
        max_attempts: Optional[int] = None,
    ) -> None:
        u = urllib.parse.urlsplit(base_url)
        if u.scheme not in ("http", "https"):
            raise ValueError("base_url must be http:// or https://, not %r" % base_url)
        self._scheme = u.scheme
        self._host = u.hostname or "127.0.0.1"
        self._port = u.port or (443 if u.scheme == "https" else 80)
        self._prefix = u.path.rstrip("/")
        self.execution_id = execution_id
        self.token = token
        self.token_in_query = token_in_query
        self.types = list(types) if types else None
        self.last_event_id = last_event_id  # the cursor to resume after; moves with every event
        self.since_seq = since_seq
        self.since_now = since_now
        self.named = named
        self.reconnect = reconnect
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout
        self.max_reconnect_delay = max_reconnect_delay
        self.max_attempts = max_attempts
        self.reconnects = 0  # connections made after the first
        self.retry_hint: Optional[float] = None  # the daemon's ``retry:``, in seconds
        self._conn: Optional[http.client.HTTPConnection] = None
        self._resp: Optional[http.client.HTTPResponse] = None
        self._closed = False
        self._started = False

    # ---- public --------------------------------------------------------------------------

    def path(self) -> str:
        """The request path of the next connection (with the resume position and filter)."""
        if self.execution_id is None:
            p = "/v1/events"
        else:
            p = "/v1/executions/%s/events" % urllib.parse.quote(self.execution_id, safe="")
        q: List[tuple] = []
        if self.types:
            q.append(("types", ",".join(self.types)))
        if self.named:
            q.append(("named", "1"))
        if self.token and self.token_in_query:
            q.append(("token", self.token))
        if self.last_event_id is None:
            # Only the first connection: after an event, Last-Event-ID says where to go on.
            if self.since_seq is not None:
                q.append(("since_seq", str(self.since_seq)))
            elif self.since_now:
                q.append(("since", "now"))
        return self._prefix + p + ("?" + urllib.parse.urlencode(q) if q else "")

    def __iter__(self) -> Iterator[StreamEvent]:
        return self.events()

    def events(self) -> Iterator[StreamEvent]:
        """Yields events until :meth:`close` (or, with ``reconnect=False``, until the stream
        ends)."""
        failures = 0
        delay = 0.0
        while not self._closed:
            try:
                self._open()
            except HTTPError:
                raise
            except (OSError, http.client.HTTPException) as e:
                failures += 1
                if not self.reconnect or (self.max_attempts is not None and failures >= self.max_attempts):
                    raise
                delay = self._next_delay(delay)
                log.info("SSE connect failed (%s); again in %.1fs", e, delay)
                time.sleep(delay)
                continue
            got = False
            try:
                for ev in self._read_events():
                    got = True
                    failures = 0
                    delay = 0.0
                    yield ev
            except (OSError, http.client.HTTPException, ValueError) as e:
                log.info("SSE stream cut: %s", e)
            finally:
                self._drop()
            if self._closed or not self.reconnect:
                return
            if not got:
                failures += 1
                if self.max_attempts is not None and failures >= self.max_attempts:
                    raise ConnectionError("SSE stream cut %d times without an event" % failures)
                delay = self._next_delay(delay)
                time.sleep(delay)
            self.reconnects += 1

    def close(self) -> None:
        """Ends the iteration (from another thread too) and closes the connection."""
        self._closed = True
        self._drop()

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- internals -----------------------------------------------------------------------

    def _next_delay(self, delay: float) -> float:
        first = self.retry_hint if self.retry_hint is not None else 0.1
        return min(self.max_reconnect_delay, max(first, delay * 2 if delay else first))

    def _open(self) -> None:
        cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self.connect_timeout)
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.token and not self.token_in_query:
            headers["Authorization"] = "Bearer " + self.token
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        try:
            conn.request("GET", self.path(), headers=headers)
            resp = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        if resp.status != 200:
            body = resp.read(65536)
            conn.close()
            err, detail = "", ""
            try:
                j = json.loads(body)
                err, detail = str(j.get("error", "")), str(j.get("detail", ""))
            except ValueError:
                detail = body.decode("utf-8", "replace")[:200]
            if resp.status >= 500 or resp.status == 429:
                raise ConnectionError("HTTP %d %s %s" % (resp.status, err, detail))
            raise HTTPError(resp.status, err, detail, self.path())
        if conn.sock is not None:
            conn.sock.settimeout(self.read_timeout)
        self._conn, self._resp = conn, resp
        self._started = True

    def _drop(self) -> None:
        conn, self._conn, self._resp = self._conn, None, None
        if conn is not None:
            try:
                if conn.sock is not None:
                    conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _read_events(self) -> Iterator[StreamEvent]:
        resp = self._resp
        assert resp is not None
        data: List[str] = []
        ev_id: Optional[str] = None
        ev_name: Optional[str] = None
        while True:
            raw = resp.readline(1 << 24)
            if not raw:
                return  # the stream ended: the caller reconnects
            line = raw.decode("utf-8")
            if line.endswith("\n"):
                line = line[:-1]
            if line.endswith("\r"):
                line = line[:-1]
            if line == "":
                if data:
                    obj = json.loads("\n".join(data))
                    ev = StreamEvent(data=obj, id=ev_id, event=ev_name, reconnects=self.reconnects)
                    if ev_id is not None:
                        self.last_event_id = ev_id
                    data, ev_id, ev_name = [], None, None
                    if obj.get("type") == "heartbeat":
                        continue
                    yield ev
                else:
                    ev_id, ev_name = None, None
                continue
            if line.startswith(":"):
                continue  # a comment: the heartbeat
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "data":
                data.append(value)
            elif name == "id":
                ev_id = value
            elif name == "event":
                ev_name = value
            elif name == "retry":
                try:
                    self.retry_hint = int(value) / 1000.0
                except ValueError:
                    pass
