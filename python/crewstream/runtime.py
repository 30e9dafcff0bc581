"""The runtime side of the crew gateway (SPEC §9): serve a crew, take kickoffs, run them.

A client kicks a crew off over HTTP (``POST /kickoff``); the daemon pushes the job to a runtime
that serves that crew, over the Unix socket::

    ← {"op":"kickoff","execution_id":"…","crew":"research","inputs":{"topic":"…"}}
    → {"op":"kickoff_ack","execution_id":"…"}

:class:`Runtime` registers (``{"op":"serve","crew":…,"inputs":[…],"concurrency":N}``, made
again on every reconnection), acknowledges each kickoff, runs ``handler(kickoff)`` on a pool of
``concurrency`` threads, and, unless the run posted its own end, posts ``run.completed`` with the
handler's return value as ``result`` (or ``run.failed`` with the exception). Inside the handler,
``kickoff.post(type, **fields)`` posts an event of the execution and ``kickoff.ask(prompt)``
waits for a person; :data:`current_kickoff` names the kickoff being run (the crewAI listener
reads it to know the execution of the events it maps).
"""

import concurrent.futures
import contextvars
import json
import logging
import threading
import traceback
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from .errors import RefusedError
from .producer import Ack, Answer, Producer

__all__ = ["Runtime", "Kickoff", "current_kickoff", "FINAL_TYPES"]

log = logging.getLogger("crewstream")

#: The kickoff the current thread (or crewAI handler, which copies the context) runs, if any.
current_kickoff: "contextvars.ContextVar[Optional[Kickoff]]" = contextvars.ContextVar("crewstream_kickoff", default=None)

#: Types that end a run: after one of these, the runtime posts no end of its own.
FINAL_TYPES = frozenset(
    ["run.completed", "run.failed", "run.canceled", "crew_kickoff_completed", "crew_kickoff_failed", "flow_finished", "flow_completed", "flow_failed"]
)


def _jsonable(v: Any) -> Any:
    try:
        json.dumps(v)
        return v
    except (TypeError, ValueError):
        return str(v)


class Kickoff:
    """One kickoff pushed by the daemon: ``execution_id`` (the kickoff id), ``crew``, ``inputs``
    and the whole push as ``raw``."""

    def __init__(self, push: Mapping[str, Any], producer: Producer) -> None:
        self.raw: Dict[str, Any] = dict(push)
        self.execution_id: str = str(push.get("execution_id", ""))
        self.crew: str = str(push.get("crew", ""))
        inputs = push.get("inputs")
        self.inputs: Dict[str, Any] = dict(inputs) if isinstance(inputs, Mapping) else {}
        self.producer = producer
        self.finished = False  # an event of FINAL_TYPES was posted for it

    def post(self, type: str, **fields: Any) -> Ack:
        """Posts one event of this execution and waits for its ack."""
        ev: Dict[str, Any] = {"execution_id": self.execution_id, "type": type}
        ev.update(fields)
        ack = self.producer.post(ev)
        if type in FINAL_TYPES:
            self.finished = True
        return ack

    def ask(self, prompt: str, **kw: Any) -> Answer:
        """Asks a person (``human_input_required``) and blocks until the answer comes."""
        return self.producer.ask(self.execution_id, prompt, **kw)

    def __repr__(self) -> str:
        return "Kickoff(%r, crew=%r, inputs=%r)" % (self.execution_id, self.crew, self.inputs)


class Runtime:
    """Serves one crew: takes its kickoffs from the daemon and runs ``handler`` for each.

    :param crew: the crew's name, as clients name it in ``POST /kickoff``.
    :param handler: ``handler(kickoff) -> result``, run on a worker thread per kickoff.
    :param inputs: the input names the crew takes (``GET /inputs`` shows them).
    :param concurrency: how many kickoffs run at once (the daemon sends no more).
    :param producer: a :class:`~crewstream.Producer` to use (its ``on_push`` is taken over);
        by default one is opened on ``socket_path`` with ``producer_options``.
    :param finish: post ``run.completed``/``run.failed`` when the handler returns/raises and
        the run posted no end of its own.
    :param ack_timeout: how long to wait for the daemon's reply to ``kickoff_ack``.
    """

    def __init__(
        self,
        crew: str,
        handler: Callable[[Kickoff], Any],
        *,
        inputs: Sequence[str] = (),
        concurrency: int = 1,
        socket_path: Optional[str] = None,
        producer: Optional[Producer] = None,
        finish: bool = True,
        ack_timeout: float = 10.0,
        **producer_options: Any,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.crew = crew
        self.handler = handler
        self.inputs: List[str] = list(inputs)
        self.concurrency = concurrency
        self.finish = finish
        self.ack_timeout = ack_timeout
        self._own_producer = producer is None
        self.producer = producer or Producer(socket_path, **producer_options)
        self.producer.on_push = self._on_push
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="crewstream-run")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.running: Dict[str, Kickoff] = {}
        self.runs: List[Dict[str, Any]] = []  # what happened to each kickoff (outcome, error)
        self._served = False

    def start(self) -> "Runtime":
        """Registers with the daemon (``op":"serve"``); raises
        :class:`~crewstream.errors.RefusedError` when it refuses."""
        self.producer.serve(self.crew, self.inputs, self.concurrency)
        self._served = True
        log.info("serving crew %r (concurrency %d)", self.crew, self.concurrency)
        return self

    def run_forever(self, stop: Optional[threading.Event] = None) -> None:
        """Serves until :meth:`stop` (or ``stop`` is set), then closes."""
        if not self._served:
            self.start()
        ev = stop or self._stop
        try:
            while not ev.wait(0.5) and not self._stop.is_set():
                pass
        finally:
            self.close()

    def stop(self) -> None:
        """Makes :meth:`run_forever` return."""
        self._stop.set()

    def close(self, wait: bool = True) -> None:
        """Waits for the runs in progress (``wait``), then closes the producer it opened."""
        self._stop.set()
        self._pool.shutdown(wait=wait)
        if self._own_producer:
            self.producer.close()

    def __enter__(self) -> "Runtime":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- internals -----------------------------------------------------------------------

    def _on_push(self, push: Dict[str, Any]) -> None:
        """On the producer's I/O thread: must not block."""
        if push.get("op") != "kickoff":
            log.warning("push ignored (not a kickoff): %r", push)
            return
        k = Kickoff(push, self.producer)
        if not k.execution_id:
            log.error("kickoff without execution_id ignored: %r", push)
            return
        try:
            self._pool.submit(self._run, k)
        except RuntimeError:  # the pool is shut down: the daemon re-routes the kickoff (no ack)
            log.warning("kickoff %s not taken: the runtime is closing", k.execution_id)

    def _run(self, k: Kickoff) -> None:
        record: Dict[str, Any] = {"execution_id": k.execution_id, "crew": k.crew, "inputs": k.inputs}
        try:
            self.producer.command({"op": "kickoff_ack", "execution_id": k.execution_id}).result(self.ack_timeout)
        except (RefusedError, concurrent.futures.TimeoutError, Exception) as e:  # noqa: BLE001
            # Not acked: the daemon gives the kickoff to another runtime; running it here too
            # would run it twice.
            log.error("kickoff_ack for %s failed (%s); not running it", k.execution_id, e)
            record["outcome"] = "not_acked"
            record["error"] = str(e)
            self.runs.append(record)
            return
        with self._lock:
            self.running[k.execution_id] = k
        token = current_kickoff.set(k)
        try:
            result = self.handler(k)
            record["outcome"] = "completed"
            if self.finish and not k.finished:
                k.post("run.completed", result=_jsonable(result))
        except Exception as e:  # noqa: BLE001 - the run failed; the daemon is told
            record["outcome"] = "failed"
            record["error"] = str(e)
            log.exception("run %s failed", k.execution_id)
            if self.finish and not k.finished:
                try:
                    k.post("run.failed", error=str(e) or type(e).__name__, stack_trace=traceback.format_exc())
                except Exception:  # noqa: BLE001
                    log.exception("could not post run.failed for %s", k.execution_id)
        finally:
            current_kickoff.reset(token)
            with self._lock:
                self.running.pop(k.execution_id, None)
            self.runs.append(record)
