"""A crew runtime for the gateway tests, speaking the Unix-socket protocol directly (SPEC §3, §9):
serve a crew, take kickoff pushes, acknowledge, run (post run.started, a log line, run.completed with a
result), all on one connection. Importable (Runtime, in a thread) or run as a process (so a test can
kill it): `python3 gw_runtime.py SOCKET CREW CONCURRENCY LOGFILE [--run-s S] [--ack-limit N] [--no-ack]`.
The log file gets one line per thing done, flushed at once: "serve", "kickoff ID", "ack ID", "refused ID",
"done ID", "holding ID" (a kickoff it will not acknowledge)."""

import argparse
import json
import socket
import sys
import threading
import time
from collections import deque


class Runtime:
    def __init__(self, path, crew, concurrency, inputs=("topic",), run_s=0.2, ack_limit=None, ack=True,
                 log=None):
        self.crew = crew
        self.concurrency = concurrency
        self.inputs = list(inputs)
        self.run_s = run_s
        self.ack_limit = ack_limit  # acknowledge this many kickoffs, then hold every later one
        self.ack = ack
        self.log_file = log
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.lock = threading.Lock()
        self.waiting = deque()  # reply callbacks, in line order
        self.kickoffs = []
        self.acked = []
        self.refused = []
        self.done = []
        self.held = []
        self.acks_sent = 0  # decided at once (the replies come later): ack_limit counts these
        self.replies = []
        self.errors = []
        self.served = threading.Event()
        self.closed = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.send({"op": "serve", "crew": crew, "inputs": self.inputs, "concurrency": concurrency},
                  self._on_serve)

    def log(self, what, xid=""):
        if self.log_file:
            self.log_file.write(("%s %s" % (what, xid)).strip() + "\n")
            self.log_file.flush()

    def send(self, obj, on_reply=None):
        data = (json.dumps(obj) + "\n").encode()
        with self.lock:
            self.waiting.append(on_reply)
            self.sock.sendall(data)

    def _on_serve(self, reply):
        if not reply.get("ok"):
            self.errors.append(reply)
            return
        self.log("serve")
        self.served.set()

    def _read(self):
        buf = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    msg = json.loads(line)
                    if "ok" in msg:
                        with self.lock:
                            cb = self.waiting.popleft()
                        self.replies.append(msg)
                        if cb:
                            cb(msg)
                    elif msg.get("op") == "kickoff":
                        self._on_kickoff(msg)
                    else:
                        self.errors.append(msg)
        except OSError:
            pass
        self.closed.set()

    def _on_kickoff(self, msg):
        xid = msg["execution_id"]
        self.kickoffs.append(msg)
        self.log("kickoff", xid)
        if not self.ack or (self.ack_limit is not None and self.acks_sent >= self.ack_limit):
            self.held.append(xid)
            self.log("holding", xid)
            return
        self.acks_sent += 1
        self.send({"op": "kickoff_ack", "execution_id": xid}, lambda r: self._on_ack(msg, r))

    def _on_ack(self, msg, reply):
        xid = msg["execution_id"]
        if not reply.get("ok"):
            # Given to another runtime: not ours to run.
            self.refused.append(xid)
            self.log("refused", xid)
            return
        self.acked.append(xid)
        self.log("ack", xid)
        threading.Thread(target=self._run, args=(msg,), daemon=True).start()

    def _run(self, msg):
        xid = msg["execution_id"]
        topic = msg["inputs"].get("topic", "")
        self.send({"execution_id": xid, "type": "run.started", "crew": msg["crew"]})
        time.sleep(self.run_s / 2)
        self.send({"execution_id": xid, "type": "log", "level": "info", "message": "researching %s" % topic})
        time.sleep(self.run_s / 2)
        done = threading.Event()
        self.send({"execution_id": xid, "type": "run.completed", "result": {"output": "report on %s" % topic}},
                  lambda r: done.set())
        done.wait(10)
        self.done.append(xid)
        self.log("done", xid)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("socket")
    ap.add_argument("crew")
    ap.add_argument("concurrency", type=int)
    ap.add_argument("logfile")
    ap.add_argument("--run-s", type=float, default=0.2)
    ap.add_argument("--ack-limit", type=int, default=None)
    ap.add_argument("--no-ack", action="store_true")
    a = ap.parse_args()
    with open(a.logfile, "a") as log:
        rt = Runtime(a.socket, a.crew, a.concurrency, run_s=a.run_s, ack_limit=a.ack_limit, ack=not a.no_ack,
                     log=log)
        # Bounded: a test kills it or closes the daemon well before this.
        rt.closed.wait(300)
    return 0


if __name__ == "__main__":
    sys.exit(main())
