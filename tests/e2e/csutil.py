"""Client helpers for the end-to-end tests.

Raw-socket clients (SSE, HTTP, ingest) so that the tests see exactly the bytes the daemon
sends and every operation has a deadline; thin wrappers for WebSocket (python websockets 10.4,
asyncio) and long-poll (requests).
"""

import asyncio
import datetime
import json
import re
import select
import socket
import time

SANITIZER_MARKS = ("AddressSanitizer", "runtime error:", "LeakSanitizer")

UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def parse_ts(ts):
    """Parses the daemon's ISO-8601 UTC timestamp (e.g. 2026-01-15T10:30:02.123Z)."""
    assert TS_RE.match(ts), "bad timestamp %r" % ts
    return datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)


def ev(execution_id, type_, **fields):
    d = {"execution_id": execution_id, "type": type_}
    d.update(fields)
    return d


# ---- ingest ------------------------------------------------------------------------------------


def is_push(line):
    """An asynchronous line the daemon pushes (a human-input answer), not a reply to a line."""
    if b'"op"' not in line:
        return False
    try:
        obj = json.loads(line)
    except ValueError:
        return False
    return isinstance(obj, dict) and "ok" not in obj and obj.get("op") == "human_input"


def exchange(sock, data, nlines, timeout, buf=b"", leftover=None, pushes=None):
    """Writes `data` while reading replies; returns the first `nlines` reply lines (bytes).

    Pushed lines (`{"op":"human_input",...}`, never replies) are not counted; they are appended
    to the list `pushes` when one is given.

    Sending and receiving are interleaved (select), so a long pipelined batch cannot deadlock
    on full socket buffers. Raises TimeoutError past `timeout`, EOFError if the peer closes.
    `buf` holds bytes already read; bytes read past the last wanted line are appended to the
    list `leftover` when one is given.
    """
    deadline = time.monotonic() + timeout
    saved = sock.gettimeout()
    sock.setblocking(False)
    try:
        off = 0
        lines = []
        while True:
            while b"\n" in buf and len(lines) < nlines:
                line, buf = buf.split(b"\n", 1)
                if is_push(line):
                    if pushes is not None:
                        pushes.append(json.loads(line))
                    continue
                lines.append(line)
            if len(lines) >= nlines and off >= len(data):
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("got %d of %d reply lines within %.1fs" % (len(lines), nlines, timeout))
            wlist = [sock] if off < len(data) else []
            rlist = [sock] if len(lines) < nlines else []
            r, w, _ = select.select(rlist, wlist, [], min(left, 0.5))
            if w:
                try:
                    off += sock.send(data[off : off + 65536])
                except BlockingIOError:
                    pass
            if r:
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    raise EOFError("ingest connection closed after %d of %d replies" % (len(lines), nlines))
                buf += chunk
        if leftover is not None:
            leftover.append(buf)
        return lines
    finally:
        sock.settimeout(saved)


class Producer:
    """One ingest connection that keeps its read buffer between calls."""

    def __init__(self, path, timeout=5.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.pushes = []  # human-input answers pushed to this connection

    def send(self, *events):
        self.sock.sendall(b"".join(encode_line(e) for e in events))

    def read(self, n, timeout=5.0):
        rest = []
        lines = exchange(self.sock, b"", n, timeout, self.buf, rest, self.pushes)
        self.buf = rest[0]
        return [json.loads(x) for x in lines]

    def request(self, *events, timeout=10.0):
        data = b"".join(encode_line(e) for e in events)
        rest = []
        lines = exchange(self.sock, data, data.count(b"\n"), timeout, self.buf, rest, self.pushes)
        self.buf = rest[0]
        return [json.loads(x) for x in lines]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def encode_line(e):
    """One ingest line: a dict is JSON-encoded; str/bytes are sent as given (a newline is added)."""
    if isinstance(e, dict):
        data = json.dumps(e, separators=(",", ":")).encode()
    elif isinstance(e, str):
        data = e.encode()
    else:
        data = bytes(e)
    if not data.endswith(b"\n"):
        data += b"\n"
    return data


# ---- raw HTTP ----------------------------------------------------------------------------------


def _recv_some(sock, deadline):
    left = deadline - time.monotonic()
    if left <= 0:
        raise socket.timeout("deadline passed")
    sock.settimeout(left)
    return sock.recv(65536)


def http_raw(port, request, timeout=5.0, host="127.0.0.1"):
    """Sends raw request bytes, reads until the connection closes or the body is complete.

    Returns (status or None, headers dict (lower-case names; repeated ones joined with ", "),
    body bytes, raw response bytes).
    """
    deadline = time.monotonic() + timeout
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        if request:
            s.sendall(request)
        raw = b""
        status, headers, body_start = None, {}, None
        while True:
            if body_start is None and b"\r\n\r\n" in raw:
                head, _ = raw.split(b"\r\n\r\n", 1)
                status, headers = parse_head(head)
                body_start = len(head) + 4
            if body_start is not None:
                body = raw[body_start:]
                if "content-length" in headers and len(body) >= int(headers["content-length"]):
                    return status, headers, body[: int(headers["content-length"])], raw
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    done, decoded = _dechunk_complete(body)
                    if done:
                        return status, headers, decoded, raw
            try:
                chunk = _recv_some(s, deadline)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                break
            raw += chunk
        if body_start is None and b"\r\n\r\n" in raw:
            head, _ = raw.split(b"\r\n\r\n", 1)
            status, headers = parse_head(head)
            body_start = len(head) + 4
        body = raw[body_start:] if body_start is not None else b""
        return status, headers, body, raw
    finally:
        s.close()


def _dechunk_complete(data):
    out = b""
    while True:
        if b"\r\n" not in data:
            return False, out
        size_line, rest = data.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return True, out
        if len(rest) < size + 2:
            return False, out
        out += rest[:size]
        data = rest[size + 2 :]


def parse_head(head):
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            k = k.strip().lower()
            v = v.strip()
            headers[k] = headers[k] + ", " + v if k in headers else v
    return status, headers


def http_get(port, path, headers=None, timeout=5.0, method="GET"):
    """A small HTTP/1.1 request with Connection: close; returns (status, headers, body bytes)."""
    req = "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n" % (method, path, port)
    for k, v in (headers or {}).items():
        req += "%s: %s\r\n" % (k, v)
    req += "\r\n"
    status, hdrs, body, _ = http_raw(port, req.encode(), timeout)
    if status is None:
        raise ConnectionError("no HTTP response for %s %s" % (method, path))
    return status, hdrs, body


def http_json(port, path, headers=None, timeout=5.0, method="GET"):
    status, hdrs, body = http_get(port, path, headers, timeout, method)
    return status, hdrs, json.loads(body) if body else None


# ---- SSE ---------------------------------------------------------------------------------------


class Frame:
    """One SSE item: kind 'event' (has data), 'comment' (a lone comment line), or 'retry'."""

    def __init__(self):
        self.id = None
        self.event = None
        self.data = None
        self.retry = None
        self.comments = []
        self.lines = []
        self.kind = None
        self.t = None

    def json(self):
        return json.loads(self.data)

    def __repr__(self):
        return "Frame(%s, lines=%r)" % (self.kind, self.lines)


class SSEClient:
    """An SSE subscriber over a raw socket (HTTP/1.1, chunked decoding), with deadlines."""

    def __init__(self, port, path, headers=None, timeout=5.0, rcvbuf=None, read_head=True):
        self.port = port
        self.path = path
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        req = "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept: text/event-stream\r\n" % (path, port)
        for k, v in (headers or {}).items():
            req += "%s: %s\r\n" % (k, v)
        req += "\r\n"
        self.sock.sendall(req.encode())
        self.raw = b""  # undecoded bytes after the head
        self.body = b""  # decoded body bytes not yet parsed into lines
        self.all_body = b""  # every decoded body byte (for exact-bytes checks)
        self.status = None
        self.headers = {}
        self.chunked = False
        self.eof = False
        self.ended = False  # the terminating chunk arrived
        self._frame = Frame()
        self._pending = []
        if read_head:
            self.read_head(timeout)

    def read_head(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.raw:
            chunk = _recv_some(self.sock, deadline)
            if not chunk:
                raise EOFError("connection closed before the response head: %r" % self.raw)
            self.raw += chunk
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        self.status, self.headers = parse_head(head)
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        self._decode()
        return self.status

    def _decode(self):
        if not self.chunked:
            self.body += self.raw
            self.all_body += self.raw
            self.raw = b""
            return
        while not self.ended:
            if b"\r\n" not in self.raw:
                return
            size_line, rest = self.raw.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.ended = True
                self.raw = b""
                return
            if len(rest) < size + 2:
                return
            self.body += rest[:size]
            self.all_body += rest[:size]
            self.raw = rest[size + 2 :]

    def _fill(self, deadline):
        """Reads more bytes; returns False on timeout, raises EOFError when the stream is over."""
        if self.eof or self.ended:
            raise EOFError("stream ended")
        try:
            chunk = _recv_some(self.sock, deadline)
        except (socket.timeout, TimeoutError):
            return False
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            raise EOFError("connection closed")
        self.raw += chunk
        self._decode()
        return True

    def _parse_lines(self):
        while b"\n" in self.body:
            line, self.body = self.body.split(b"\n", 1)
            text = line.decode("utf-8")
            if text.endswith("\r"):
                text = text[:-1]
            f = self._frame
            if text == "":
                if f.lines:
                    f.kind = "event" if f.data is not None else ("retry" if f.retry is not None else "other")
                    f.t = time.monotonic()
                    self._pending.append(f)
                    self._frame = Frame()
                continue
            if text.startswith(":"):
                if not f.lines:
                    c = Frame()
                    c.kind = "comment"
                    c.comments.append(text)
                    c.lines.append(text)
                    c.t = time.monotonic()
                    self._pending.append(c)
                else:
                    f.comments.append(text)
                    f.lines.append(text)
                continue
            f.lines.append(text)
            name, _, value = text.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "id":
                f.id = value
            elif name == "event":
                f.event = value
            elif name == "data":
                f.data = value if f.data is None else f.data + "\n" + value
            elif name == "retry":
                f.retry = value

    def next_frame(self, timeout=5.0):
        """The next item (event, comment or retry frame), or None when nothing came in `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            self._parse_lines()
            if self._pending:
                return self._pending.pop(0)
            if time.monotonic() >= deadline:
                return None
            if not self._fill(deadline):
                return None

    def next_event(self, timeout=5.0, skip_heartbeat_data=True):
        """The next frame with data (skipping comments, retry frames and HITL heartbeat data)."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.next_frame(max(0.0, deadline - time.monotonic()))
            if f is None:
                return None
            if f.kind != "event":
                continue
            if skip_heartbeat_data and f.json().get("type") == "heartbeat":
                continue
            return f

    def collect(self, n, timeout=10.0, stop=None):
        """Event frames until `n` are collected (or `stop(frame)` is true) or `timeout` passes."""
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            f = self.next_event(max(0.0, deadline - time.monotonic()))
            if f is None:
                break
            out.append(f)
            if stop and stop(f):
                break
        return out

    def read_body(self, timeout=5.0):
        """For a non-stream answer (an error): the whole body."""
        deadline = time.monotonic() + timeout
        want = int(self.headers.get("content-length", "-1"))
        while True:
            if want >= 0 and len(self.body) >= want:
                return self.body[:want]
            if self.ended:
                return self.body
            try:
                if not self._fill(deadline):
                    return self.body
            except EOFError:
                return self.body

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def sse_events(frames):
    return [f.json() for f in frames]


# ---- WebSocket ---------------------------------------------------------------------------------


async def ws_connect(url, **kw):
    import websockets.client

    kw.setdefault("open_timeout", 5)
    kw.setdefault("close_timeout", 2)
    kw.setdefault("max_size", None)
    return await websockets.client.connect(url, **kw)


async def ws_next(ws, timeout=5.0):
    """The next text frame as a dict, or None on timeout."""
    try:
        msg = await asyncio.wait_for(ws.recv(), timeout)
    except asyncio.TimeoutError:
        return None
    assert isinstance(msg, str), "expected a text frame, got %r" % (msg,)
    return json.loads(msg)


async def ws_collect(ws, n, timeout=10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    out = []
    while len(out) < n:
        left = deadline - loop.time()
        if left <= 0:
            break
        m = await ws_next(ws, left)
        if m is None:
            break
        out.append(m)
    return out


def ws_handshake(port, path, headers=None):
    """A WebSocket handshake to path: (status, headers, body), body the refusal's when not 101."""
    ws = RawWS(port, path, headers=headers)
    try:
        body = b""
        if ws.status != 101:
            body = ws.buf
            while len(body) < int(ws.headers.get("content-length", "0")):
                chunk = ws.sock.recv(4096)
                if not chunk:
                    break
                body += chunk
        return ws.status, ws.headers, body
    finally:
        ws.close()


class RawWS:
    """A minimal WebSocket client over a raw socket, so a test can stop reading (tiny SO_RCVBUF)
    and later read again. Answers pings with pongs while it reads."""

    def __init__(self, port, path, rcvbuf=None, timeout=5.0, headers=None):
        import base64
        import os as _os

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(_os.urandom(16)).decode()
        req = (
            "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n" % (path, port, key)
        )
        for k, v in (headers or {}).items():
            req += "%s: %s\r\n" % (k, v)
        self.sock.sendall((req + "\r\n").encode())
        self.buf = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            chunk = _recv_some(self.sock, deadline)
            if not chunk:
                raise EOFError("closed during the handshake: %r" % self.buf)
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.status, self.headers = parse_head(head)
        self.close_code = None
        self.eof = False

    def _send_frame(self, opcode, payload):
        import os as _os

        mask = _os.urandom(4)
        n = len(payload)
        hdr = bytes([0x80 | opcode])
        if n < 126:
            hdr += bytes([0x80 | n])
        elif n < 65536:
            hdr += bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            hdr += bytes([0x80 | 127]) + n.to_bytes(8, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        try:
            self.sock.sendall(hdr + mask + masked)
        except OSError:
            pass

    def _parse(self):
        b = self.buf
        if len(b) < 2:
            return None
        fin_op, ln = b[0], b[1] & 0x7F
        off = 2
        if ln == 126:
            if len(b) < 4:
                return None
            ln, off = int.from_bytes(b[2:4], "big"), 4
        elif ln == 127:
            if len(b) < 10:
                return None
            ln, off = int.from_bytes(b[2:10], "big"), 10
        if b[1] & 0x80:
            raise AssertionError("server frames must not be masked")
        if len(b) < off + ln:
            return None
        self.buf = b[off + ln :]
        return fin_op & 0x0F, b[off : off + ln], bool(fin_op & 0x80)

    def next_message(self, timeout=5.0):
        """The next text message (str), None on timeout; raises EOFError at close/EOF."""
        deadline = time.monotonic() + timeout
        parts = []
        while True:
            fr = self._parse()
            if fr is not None:
                op, payload, fin = fr
                if op == 0x9:
                    self._send_frame(0xA, payload)
                    continue
                if op == 0xA:
                    continue
                if op == 0x8:
                    self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                    self.close_reason = payload[2:].decode("utf-8", "replace")
                    raise EOFError("close frame %r" % self.close_code)
                parts.append(payload)
                if fin:
                    return b"".join(parts).decode("utf-8")
                continue
            if self.eof:
                raise EOFError("connection closed")
            try:
                chunk = _recv_some(self.sock, deadline)
            except (socket.timeout, TimeoutError):
                return None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.eof = True
                continue
            self.buf += chunk

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def run(coro, timeout=60.0):
    """asyncio.run with an overall deadline."""

    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


# ---- long-poll ---------------------------------------------------------------------------------


def poll(base, path, params=None, headers=None, http_timeout=70.0):
    import requests

    return requests.get(base + path, params=params or {}, headers=headers or {}, timeout=http_timeout)


def rss_kib(pid):
    """The resident memory of process pid, in KiB (/proc/PID/status VmRSS)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/%d/status" % pid)


def wait_until(pred, timeout=5.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return pred()


def ws_status(d, path, headers=None):
    """The status of a WebSocket handshake to path: 101 when upgraded (and an event then arrived),
    else the HTTP status it was refused with."""
    import websockets.exceptions

    async def go():
        try:
            ws = await ws_connect(d.ws + path, extra_headers=headers or {})
        except websockets.exceptions.InvalidStatusCode as e:
            return e.status_code
        try:
            got = await ws_collect(ws, 1, timeout=5)
            assert got, "upgraded but nothing delivered"
            return 101
        finally:
            await ws.close()

    return run(go(), 20)


# ---- journal (SPEC §8) -------------------------------------------------------------------------

JOURNAL_MAGIC = b"CSJOURN\n"
JOURNAL_HEADER = 24  # magic, version u32, flags u32, first record number u64 (docs/architecture.md)


def journal_segments(path):
    """The journal's segment files (*.cjs) in write order (their names sort so)."""
    import os as _os

    try:
        names = _os.listdir(path)
    except FileNotFoundError:
        return []
    return [_os.path.join(path, n) for n in sorted(names) if n.endswith(".cjs")]


def journal_bytes(path, every_file=False):
    """The bytes of the journal's segments (or, with every_file, of every regular file in path)."""
    import os as _os

    total = 0
    try:
        names = _os.listdir(path)
    except FileNotFoundError:
        return 0
    for n in names:
        p = _os.path.join(path, n)
        if (every_file or n.endswith(".cjs")) and _os.path.isfile(p):
            try:
                total += _os.path.getsize(p)
            except FileNotFoundError:  # deleted while we looked
                pass
    return total


def journal_records(seg_path):
    """(offset, payload length) of every whole record in a segment, after its header."""
    import struct

    with open(seg_path, "rb") as f:
        data = f.read()
    assert data[:8] == JOURNAL_MAGIC, "%s: no journal magic: %r" % (seg_path, data[:8])
    out, off = [], JOURNAL_HEADER
    while off + 8 <= len(data):
        n, _crc = struct.unpack_from("<II", data, off)
        if off + 8 + n > len(data):
            break
        out.append((off, n))
        off += 8 + n
    return out


def history(d, x, headers=None, since_seq=None):
    """Every retained event of execution x, in seq order (a /v1 long-poll with timeout=0)."""
    params = {"timeout": "0"}
    if since_seq is not None:
        params["since_seq"] = str(since_seq)
    r = poll(d.base, "/v1/executions/%s/poll" % x, params, headers=headers, http_timeout=15)
    assert r.status_code == 200, "poll %s: %d %s" % (x, r.status_code, r.text[:300])
    return r.json()


def health(d, timeout=3.0):
    """(status, body dict or None) of GET /health."""
    status, _, body = http_get(d.port, "/health", timeout=timeout)
    try:
        return status, json.loads(body) if body else None
    except ValueError:
        return status, None


def log_has(d, pattern, all_runs=False):
    """The first stderr line of the daemon that matches the regular expression, or None."""
    rx = re.compile(pattern)
    for line in d.stderr_text(all_runs=all_runs).splitlines():
        if rx.search(line):
            return line
    return None


def metric_values(d, headers=None):
    """GET /metrics as {sample name with labels: float}."""
    status, _, body = http_get(d.port, "/metrics", headers=headers)
    assert status == 200, "/metrics: %d" % status
    out = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out


def journal_header(seg_path):
    """(format version, flags, first record number) of a segment (flags 1: it begins with a snapshot)."""
    import struct

    with open(seg_path, "rb") as f:
        head = f.read(JOURNAL_HEADER)
    assert head[:8] == JOURNAL_MAGIC, "%s: no journal magic" % seg_path
    return struct.unpack_from("<IIQ", head, 8)


def flip_byte(seg_path, rec_index=None):
    """Flips one byte in the middle of a record's payload (the middle record when rec_index is None);
    returns (record index, number of records)."""
    recs = journal_records(seg_path)
    i = len(recs) // 2 if rec_index is None else rec_index
    off, n = recs[i]
    with open(seg_path, "r+b") as f:
        f.seek(off + 8 + n // 2)
        b = f.read(1)
        f.seek(off + 8 + n // 2)
        f.write(bytes([b[0] ^ 0x5A]))
    return i, len(recs)
