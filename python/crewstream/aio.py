"""The asyncio flavour: the same producer and subscriber, awaited instead of blocking.

:class:`Producer` here drives the same I/O thread as :class:`crewstream.Producer` (one per
connection; it owns the socket, reconnects and resends) and hands its futures to the event loop
with :func:`asyncio.wrap_future`, so nothing here blocks the loop: ``await producer.post(ev)``,
``await producer.ask(...)``. Open it with ``await Producer.connect(...)`` or ``async with``.
"""

import asyncio
import concurrent.futures
import functools
import time
from typing import Any, AsyncIterator, Dict, List, Mapping, Optional

from . import producer as _p
from . import subscriber as _s
from .errors import WindowFullError

__all__ = ["Producer", "Subscriber"]


class Producer:
    """An asyncio producer; the arguments are those of :class:`crewstream.Producer`."""

    def __init__(self, sync: _p.Producer) -> None:
        self.sync = sync  # the thread-backed producer underneath

    @classmethod
    async def connect(cls, socket_path: Optional[str] = None, **kw: Any) -> "Producer":
        """Connects (in an executor thread: ``connect_timeout`` may retry for a while)."""
        loop = asyncio.get_running_loop()
        sync = await loop.run_in_executor(None, functools.partial(_p.Producer, socket_path, **kw))
        return cls(sync)

    async def submit(self, event: Mapping[str, Any], timeout: Optional[float] = None) -> "asyncio.Future[_p.Ack]":
        """Queues an event; returns an asyncio future of its ack (pipelining). A full window is
        waited for without blocking the loop (``WindowFullError`` after ``timeout``)."""
        wait = self.sync.post_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        delay = 0.001
        while True:
            try:
                fut = self.sync.submit(event, 0)
                return asyncio.wrap_future(fut)
            except WindowFullError:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)

    async def post(self, event: Mapping[str, Any], timeout: Optional[float] = None) -> _p.Ack:
        """Posts an event and awaits its ack (``RefusedError`` on refusal, ``TimeoutError``)."""
        wait = self.sync.post_timeout if timeout is None else timeout
        fut = await self.submit(event, wait)
        try:
            return await asyncio.wait_for(fut, wait)
        except asyncio.TimeoutError:
            raise TimeoutError("no ack within %.1fs" % wait) from None

    async def post_many(self, events: List[Mapping[str, Any]], timeout: Optional[float] = None) -> List[_p.Ack]:
        """Posts events pipelined and awaits their acks, in order."""
        futs = [await self.submit(e, timeout) for e in events]
        return list(await asyncio.gather(*futs))

    async def flush(self, timeout: Optional[float] = None) -> None:
        """Awaits the acks of everything posted so far."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.sync.flush, timeout)

    async def ask(self, execution_id: str, prompt: str, *, timeout: Optional[float] = None, **kw: Any) -> _p.Answer:
        """:meth:`crewstream.Producer.ask`, awaited (the wait runs on an executor thread)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(self.sync.ask, execution_id, prompt, timeout=timeout, **kw))

    async def wait_answer(self, execution_id: str, request_event_id: str, timeout: Optional[float] = None) -> _p.Answer:
        """:meth:`crewstream.Producer.wait_answer`, awaited."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.sync.wait_answer, execution_id, request_event_id, timeout)

    async def command(self, cmd: Mapping[str, Any]) -> Dict[str, Any]:
        """:meth:`crewstream.Producer.command`, awaited."""
        fut: concurrent.futures.Future = self.sync.command(cmd)
        return await asyncio.wrap_future(fut)

    async def close(self, flush_timeout: Optional[float] = 5.0) -> None:
        """Flushes and closes."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.sync.close, flush_timeout)

    async def __aenter__(self) -> "Producer":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class Subscriber:
    """``async for ev in Subscriber(...)``: :class:`crewstream.Subscriber` read on an executor
    thread, one event at a time; the arguments are the same."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        self.sync = _s.Subscriber(*args, **kw)

    async def __aiter__(self) -> AsyncIterator[_s.StreamEvent]:
        loop = asyncio.get_running_loop()
        it = self.sync.events()
        done = object()
        try:
            while True:
                ev = await loop.run_in_executor(None, next, it, done)
                if ev is done:
                    return
                yield ev  # type: ignore[misc]
        finally:
            self.sync.close()

    def close(self) -> None:
        """Ends the iteration."""
        self.sync.close()
