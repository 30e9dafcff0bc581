"""crewstream: the Python client of crewstreamd (standard library only, Python >= 3.9).

* :class:`Producer` posts events to the daemon's Unix socket (acks, pipelining, idempotent
  resends by ``event_id`` across reconnections) and asks people (:meth:`Producer.ask`);
  :mod:`crewstream.aio` has the asyncio flavour.
* :class:`Subscriber` reads an execution's (or every execution's) Server-Sent Events, resumes by
  ``Last-Event-ID`` and yields ``stream.gap`` when the daemon cannot resume exactly.
* :mod:`crewstream.runtime` serves crews: kickoffs from ``POST /kickoff`` (SPEC §9).
* :mod:`crewstream.crewai` bridges crewAI's event bus and human input.

See docs/python.md.
"""

from .errors import (
    ClosedError,
    CrewstreamError,
    HTTPError,
    ProtocolError,
    RefusedError,
    RequestNotFoundError,
    UnavailableError,
    WindowFullError,
)
from .producer import Ack, Answer, Producer, default_socket_path
from .subscriber import StreamEvent, Subscriber

__version__ = "0.1.0"

__all__ = [
    "Ack",
    "Answer",
    "ClosedError",
    "CrewstreamError",
    "HTTPError",
    "Producer",
    "ProtocolError",
    "RefusedError",
    "RequestNotFoundError",
    "StreamEvent",
    "Subscriber",
    "UnavailableError",
    "WindowFullError",
    "default_socket_path",
    "__version__",
]
