"""The exceptions of the crewstream package.

Every failure is one of these (or a built-in ``TimeoutError``/``ValueError``/``OSError`` where
that is what happened): nothing is dropped silently.
"""

from typing import Optional

__all__ = [
    "CrewstreamError",
    "RefusedError",
    "UnavailableError",
    "RequestNotFoundError",
    "WindowFullError",
    "ClosedError",
    "ProtocolError",
    "HTTPError",
]


class CrewstreamError(Exception):
    """The base class of every exception this package raises on its own."""


class RefusedError(CrewstreamError):
    """The daemon refused a line: ``{"ok":false,"error":code,"detail":detail}``.

    ``code`` is the daemon's error code (``invalid_field``, ``missing_field``, ``invalid_json``,
    ``too_large``, ``not_found``, ``forbidden``, ``bad_op``, ``unavailable``); ``detail`` says why,
    in words. A refused event was not stored; re-posting the same event will be refused again
    (except ``unavailable``, see :class:`UnavailableError`).
    """

    def __init__(self, code: str, detail: str = "", event_id: Optional[str] = None) -> None:
        self.code = code
        self.detail = detail
        self.event_id = event_id
        msg = "%s: %s" % (code, detail) if detail else code
        if event_id:
            msg += " (event_id %s)" % event_id
        super().__init__(msg)


class UnavailableError(RefusedError):
    """The daemon answered ``unavailable`` (the event could not be made durable now) every time,
    for the producer's whole retry budget (``unavailable_retries``). Nothing was stored."""


class RequestNotFoundError(RefusedError):
    """An ``await`` named a human-input request the daemon does not hold (``not_found``): for
    instance a daemon restarted without a journal. Post the request again to ask again."""


class WindowFullError(CrewstreamError):
    """``window`` events were posted and not yet acknowledged for longer than the post timeout;
    the new event was not queued."""


class ClosedError(CrewstreamError):
    """The producer was closed: the operation cannot complete (a line not acknowledged before
    :meth:`Producer.close` may or may not have been stored)."""


class ProtocolError(CrewstreamError):
    """The daemon sent something this client cannot read (the connection is dropped and made
    again)."""


class HTTPError(CrewstreamError):
    """An HTTP route answered with an error status (``status``, the JSON ``error`` code and
    ``detail`` when the body had them)."""

    def __init__(self, status: int, error: str = "", detail: str = "", url: str = "") -> None:
        self.status = status
        self.error = error
        self.detail = detail
        self.url = url
        super().__init__("HTTP %d %s%s%s" % (status, error, ": " + detail if detail else "", " (" + url + ")" if url else ""))
