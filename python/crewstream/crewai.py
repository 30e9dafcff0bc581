"""The crewAI bridge: crewAI's event bus to crewstream events, and human input through the daemon.

Read against crewAI 1.15.17 (``lib/crewai/src/crewai/events/``, ``core/providers/human_input.py``,
``flow/async_feedback/``, ``flow/input_provider.py``). crewAI is imported lazily: this module
imports without it, and :func:`map_event` works on any object that carries crewAI's field names.

* :func:`map_event` — a pure function: one crewAI event object to one crewstream event dict
  (or ``None`` for an event that is not streamed).
* :class:`CrewstreamListener` — a ``crewai.events.BaseEventListener`` that registers a handler
  for each crewAI event type this module maps and posts the mapped events (needs crewai).
* :class:`CrewstreamHumanInput` — crewAI's ``HumanInputProvider`` (``Task(human_input=True)``):
  the agent's answer is shown to a person on the dashboard and the run waits for the answer
  (``crewai.core.providers.human_input.set_provider(...)``).
* :class:`CrewstreamFeedbackProvider` — for Flows: ``@human_feedback(provider=...)``
  (``request_feedback``) and ``Flow.input_provider`` (``request_input`` for ``Flow.ask()``).
"""

import asyncio
import dataclasses
import datetime
import enum
import logging
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

from .producer import Answer, Producer
from .runtime import FINAL_TYPES, current_kickoff

__all__ = [
    "map_event",
    "EVENT_CLASSES",
    "CrewstreamHumanInput",
    "CrewstreamFeedbackProvider",
    "CREWAI_VERSION_READ",
]

log = logging.getLogger("crewstream")

#: The crewAI release whose source this bridge was written against.
CREWAI_VERSION_READ = "1.15.17"

#: The crewAI event classes the listener subscribes to (names in ``crewai.events``). Classes a
#: crewAI release does not have are skipped (and logged) when the listener registers.
EVENT_CLASSES = (
    # crew
    "CrewKickoffStartedEvent", "CrewKickoffCompletedEvent", "CrewKickoffFailedEvent",
    # task
    "TaskStartedEvent", "TaskCompletedEvent", "TaskFailedEvent",
    # agent
    "AgentExecutionStartedEvent", "AgentExecutionCompletedEvent", "AgentExecutionErrorEvent",
    "LiteAgentExecutionStartedEvent", "LiteAgentExecutionCompletedEvent", "LiteAgentExecutionErrorEvent",
    # tool
    "ToolUsageStartedEvent", "ToolUsageFinishedEvent", "ToolUsageErrorEvent",
    "ToolValidateInputErrorEvent", "ToolSelectionErrorEvent", "ToolExecutionErrorEvent",
    # LLM
    "LLMCallStartedEvent", "LLMCallCompletedEvent", "LLMCallFailedEvent", "LLMStreamChunkEvent",
    # flow
    "FlowCreatedEvent", "FlowStartedEvent", "FlowFinishedEvent", "FlowFailedEvent", "FlowPausedEvent",
    "MethodExecutionStartedEvent", "MethodExecutionFinishedEvent", "MethodExecutionFailedEvent",
    "MethodExecutionPausedEvent", "FlowInputRequestedEvent", "FlowInputReceivedEvent",
    "HumanFeedbackRequestedEvent", "HumanFeedbackReceivedEvent",
)

# Fields of every crewAI event (BaseEvent) that are copied when set.
_BASE_FIELDS = (
    "task_id", "task_name", "agent_id", "agent_role", "parent_event_id", "previous_event_id",
    "triggered_by_event_id", "started_event_id", "emission_sequence", "source_type", "source_fingerprint",
)

# Per crewAI type: the event's own fields copied (made JSON-safe). Objects (crew, agent, task,
# state, messages, tools) are not copied whole: what a dashboard needs is taken from them below.
_FIELDS: Dict[str, tuple] = {
    "crew_kickoff_started": ("crew_name", "inputs"),
    "crew_kickoff_completed": ("crew_name", "total_tokens"),
    "crew_kickoff_failed": ("crew_name", "error"),
    "task_started": ("context",),
    "task_completed": (),
    "task_failed": ("error",),
    "agent_execution_started": ("task_prompt",),
    "agent_execution_completed": ("output",),
    "agent_execution_error": ("error",),
    "lite_agent_execution_started": ("agent_info",),
    "lite_agent_execution_completed": ("agent_info", "output"),
    "lite_agent_execution_error": ("agent_info", "error"),
    "tool_usage_started": ("tool_name", "tool_args", "tool_class", "run_attempts", "delegations", "agent_key"),
    "tool_usage_finished": ("tool_name", "tool_args", "tool_class", "run_attempts", "agent_key", "from_cache", "output", "started_at", "finished_at", "failure"),
    "tool_usage_error": ("tool_name", "tool_args", "tool_class", "run_attempts", "agent_key", "error"),
    "tool_validate_input_error": ("tool_name", "tool_args", "error"),
    "tool_selection_error": ("tool_name", "tool_args", "error"),
    "tool_execution_error": ("tool_name", "tool_args", "error"),
    "llm_call_started": ("call_id", "model", "stream", "temperature", "max_tokens"),
    "llm_call_completed": ("call_id", "model", "call_type", "response", "usage", "finish_reason", "response_id"),
    "llm_call_failed": ("call_id", "model", "error"),
    "llm_stream_chunk": ("call_id", "model", "chunk", "call_type", "response_id", "tool_call"),
    "flow_created": ("flow_name",),
    "flow_started": ("flow_name", "inputs"),
    "flow_finished": ("flow_name", "result"),
    "flow_failed": ("flow_name", "error"),
    "flow_paused": ("flow_name", "flow_id", "method_name", "message", "emit"),
    "method_execution_started": ("flow_name", "method_name", "params"),
    "method_execution_finished": ("flow_name", "method_name", "result"),
    "method_execution_failed": ("flow_name", "method_name", "error"),
    "method_execution_paused": ("flow_name", "method_name", "flow_id", "message", "emit"),
    "flow_input_requested": ("flow_name", "method_name", "message", "metadata"),
    "flow_input_received": ("flow_name", "method_name", "message", "response", "metadata", "response_metadata"),
    "human_feedback_requested": ("flow_name", "method_name", "output", "message", "emit", "request_id"),
    "human_feedback_received": ("flow_name", "method_name", "feedback", "outcome", "request_id"),
}

# crewAI's flow events whose names do not start with "flow_" get the prefix, so the daemon files
# them with the flow family (SPEC §1: flow_*): method_execution_started -> flow_method_execution_started.
_FLOW_TYPES = frozenset(
    t for t in _FIELDS if t.startswith(("method_execution_", "human_feedback_"))
)

DEFAULT_MAX_FIELD_CHARS = 65536


def _ts(v: Any) -> Optional[str]:
    """crewAI's timestamp (an aware or naive UTC datetime) in the daemon's format."""
    if not isinstance(v, datetime.datetime):
        return None
    if v.tzinfo is not None:
        v = v.astimezone(datetime.timezone.utc)
    return v.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (v.microsecond // 1000)


def _safe(v: Any, max_chars: int, depth: int = 0) -> Any:
    """A JSON-safe copy of v: pydantic models dumped, enums by value, exceptions and other
    objects as text; strings longer than max_chars cut (with a marker)."""
    if v is None or isinstance(v, (bool, int, float)):
        return v
    if isinstance(v, str):
        return v if len(v) <= max_chars else v[:max_chars] + "…[%d chars cut]" % (len(v) - max_chars)
    if depth > 8:
        return _safe(str(v), max_chars, depth)
    if isinstance(v, enum.Enum):
        return _safe(v.value, max_chars, depth + 1)
    if isinstance(v, datetime.datetime):
        return _ts(v) or v.isoformat()
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, BaseException):
        return _safe(str(v) or type(v).__name__, max_chars, depth)
    if isinstance(v, Mapping):
        return {str(k): _safe(x, max_chars, depth + 1) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_safe(x, max_chars, depth + 1) for x in v]
    dump = getattr(v, "model_dump", None)
    if callable(dump):
        try:
            return _safe(dump(mode="json"), max_chars, depth + 1)
        except Exception:  # noqa: BLE001 - fall back to text
            pass
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return _safe(dataclasses.asdict(v), max_chars, depth + 1)
    return _safe(str(v), max_chars, depth)


def _text(v: Any) -> Any:
    """The text of a crewAI output object (CrewOutput/TaskOutput ``raw``), else v itself."""
    raw = getattr(v, "raw", None)
    if isinstance(raw, str):
        return raw
    return v


def crewstream_type(crewai_type: str) -> str:
    """The crewstream type of a crewAI event type (flow method and feedback events get the
    ``flow_`` prefix; every other name is kept: the daemon understands crewAI's names)."""
    return "flow_" + crewai_type if crewai_type in _FLOW_TYPES else crewai_type


def map_event(
    event: Any,
    execution_id: Optional[str] = None,
    *,
    max_field_chars: int = DEFAULT_MAX_FIELD_CHARS,
) -> Optional[Dict[str, Any]]:
    """Maps one crewAI event to a crewstream event dict, or returns ``None`` when its type is not
    one this bridge streams (see :data:`EVENT_CLASSES`).

    Pure: reads only the event's attributes (crewAI's field names), so it is tested with
    stand-in objects. The crewstream ``event_id`` is crewAI's own ``event_id`` (a UUID): a resend
    is idempotent, and ``parent_event_id``/``started_event_id`` keep pointing at events of the
    stream. The ``timestamp`` is crewAI's, in the daemon's format. ``execution_id`` is required
    in the result; when it is ``None`` the result has none and the caller must set it.
    """
    ctype = getattr(event, "type", None)
    if not isinstance(ctype, str) or ctype not in _FIELDS:
        return None
    out: Dict[str, Any] = {}
    if execution_id is not None:
        out["execution_id"] = execution_id
    out["type"] = crewstream_type(ctype)
    eid = getattr(event, "event_id", None)
    if isinstance(eid, str) and eid:
        out["event_id"] = eid
    ts = _ts(getattr(event, "timestamp", None))
    if ts:
        out["timestamp"] = ts
    out["crewai_type"] = ctype
    for name in _BASE_FIELDS:
        v = getattr(event, name, None)
        if v is not None:
            out[name] = _safe(v, max_field_chars)
    for name in _FIELDS[ctype]:
        v = getattr(event, name, None)
        if v is not None:
            out[name] = _safe(v, max_field_chars)

    # What the objects carry, where crewAI does not copy it into the event's own fields.
    crew = getattr(event, "crew", None)
    if crew is not None and getattr(crew, "id", None) is not None:
        out.setdefault("crew_id", str(crew.id))
    agent = getattr(event, "agent", None)
    if agent is not None:
        if "agent_id" not in out and getattr(agent, "id", None) is not None:
            out["agent_id"] = str(agent.id)
        if "agent_role" not in out and getattr(agent, "role", None) is not None:
            out["agent_role"] = _safe(agent.role, max_field_chars)
    task = getattr(event, "task", None)
    if task is not None:
        if "task_id" not in out and getattr(task, "id", None) is not None:
            out["task_id"] = str(task.id)
        if "task_name" not in out:
            name = getattr(task, "name", None) or getattr(task, "description", None)
            if name:
                out["task_name"] = _safe(name, max_field_chars)

    if ctype == "crew_kickoff_completed":
        out["result"] = _safe(_text(getattr(event, "output", None)), max_field_chars)
    elif ctype == "task_completed":
        o = getattr(event, "output", None)
        out["output"] = _safe(_text(o), max_field_chars)
        for k in ("summary", "agent"):
            v = getattr(o, k, None)
            if isinstance(v, str):
                out.setdefault("output_" + k, _safe(v, max_field_chars))
    elif ctype in ("tool_usage_finished", "agent_execution_completed", "lite_agent_execution_completed"):
        if "output" in out:
            out["output"] = _safe(_text(getattr(event, "output", None)), max_field_chars)
    elif ctype == "llm_call_started":
        msgs = getattr(event, "messages", None)
        if isinstance(msgs, (list, tuple)):
            out["message_count"] = len(msgs)
    elif ctype in ("flow_finished", "method_execution_finished"):
        if "result" in out:
            out["result"] = _safe(_text(getattr(event, "result", None)), max_field_chars)
    if ctype in ("crew_kickoff_failed", "flow_failed") and "error" not in out:
        out["error"] = "failed"
    return out


ExecutionIdSource = Union[None, str, Callable[[Any], Optional[str]]]


def _resolve_execution_id(source: ExecutionIdSource, event: Any) -> Optional[str]:
    k = current_kickoff.get()
    if k is not None:
        return k.execution_id
    if callable(source):
        return source(event)
    return source


_listener_class: Optional[type] = None
_listener_lock = threading.Lock()


def _make_listener_class() -> type:
    try:
        import crewai.events as cev  # noqa: F401 - the lazy import
        from crewai.events import BaseEventListener
    except ImportError as e:
        raise ImportError("crewstream.crewai.CrewstreamListener needs crewai (pip install crewai): %s" % e) from e

    class CrewstreamListener(BaseEventListener):  # type: ignore[misc, valid-type]
        """Posts crewAI's events to crewstream. Create it once, before the crew runs (crewAI
        listeners register on the global event bus when constructed).

        :param producer: the :class:`~crewstream.Producer` to post with (default: one on the
            default socket).
        :param execution_id: the execution of the events when no kickoff of
            :mod:`crewstream.runtime` is running: a string, or a function of the crewAI event.
            Events with no execution id are dropped, logged and counted (``stats["dropped"]``).
        :param skip: crewstream types not to post (``{"llm_stream_chunk"}`` to stream no
            tokens).
        """

        def __init__(
            self,
            producer: Optional[Producer] = None,
            execution_id: ExecutionIdSource = None,
            skip: Optional[set] = None,
            max_field_chars: int = DEFAULT_MAX_FIELD_CHARS,
        ) -> None:
            self.producer = producer or Producer()
            self.execution_id = execution_id
            self.skip = set(skip or ())
            self.max_field_chars = max_field_chars
            self.stats = {"posted": 0, "refused": 0, "dropped": 0, "unmapped": 0}
            self.registered: List[str] = []
            super().__init__()

        def setup_listeners(self, crewai_event_bus: Any) -> None:
            missing = []
            for name in EVENT_CLASSES:
                cls = getattr(cev, name, None)
                if cls is None:
                    missing.append(name)
                    continue
                crewai_event_bus.on(cls)(self._handle)
                self.registered.append(name)
            if missing:
                log.info("crewAI has no %s: not streamed", ", ".join(missing))

        def _handle(self, source: Any, event: Any, *state: Any) -> None:
            post_event(self, event)

    return CrewstreamListener


def post_event(listener: Any, event: Any) -> None:
    """Maps and posts one crewAI event (the listener's handler; without blocking on the ack)."""
    x = _resolve_execution_id(listener.execution_id, event)
    ev = map_event(event, x, max_field_chars=listener.max_field_chars)
    if ev is None:
        listener.stats["unmapped"] += 1
        return
    if ev["type"] in listener.skip:
        return
    if not x:
        listener.stats["dropped"] += 1
        log.warning("crewAI event %s dropped: no execution id (run it under crewstream.runtime, or give execution_id)", ev["type"])
        return
    k = current_kickoff.get()
    if k is not None and ev["type"] in FINAL_TYPES:
        k.finished = True
    try:
        fut = listener.producer.submit(ev)
    except Exception as e:  # noqa: BLE001 - counted and logged, never raised into crewAI
        listener.stats["refused"] += 1
        log.error("crewAI event %s not posted: %s", ev["type"], e)
        return
    listener.stats["posted"] += 1

    def done(f: Any) -> None:
        e = f.exception()
        if e is not None:
            listener.stats["refused"] += 1
            log.error("crewAI event %s (%s) refused: %s", ev["type"], ev.get("event_id"), e)

    fut.add_done_callback(done)


def __getattr__(name: str) -> Any:
    """``CrewstreamListener`` is built on first use, when crewai is importable."""
    global _listener_class
    if name == "CrewstreamListener":
        with _listener_lock:
            if _listener_class is None:
                _listener_class = _make_listener_class()
        return _listener_class
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


class _Asker:
    def __init__(self, producer: Optional[Producer], execution_id: ExecutionIdSource, timeout: Optional[float]) -> None:
        self._producer = producer
        self.execution_id = execution_id
        self.timeout = timeout

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            k = current_kickoff.get()
            self._producer = k.producer if k is not None else Producer()
        return self._producer

    def _ask(self, prompt: str, hint: Any, **fields: Any) -> Answer:
        x = _resolve_execution_id(self.execution_id, hint)
        if not x:
            raise RuntimeError("no execution id to ask in: run under crewstream.runtime or pass execution_id")
        fields = {k: v for k, v in fields.items() if v is not None}
        return self.producer.ask(x, prompt, timeout=self.timeout, **fields)


class CrewstreamHumanInput(_Asker):
    """crewAI's ``HumanInputProvider`` (``crewai.core.providers.human_input``) that asks a person
    through the daemon instead of the terminal: when a task with ``human_input=True`` has an
    answer, a ``human_input_required`` event carries it (``prompt``: the agent's output,
    ``task_id``, ``agent_id``, ``crew_id``) and the run waits. An approval ends the loop; a
    rejection sends ``human_feedback`` back to the agent, which tries again, and the person is
    asked again — crewAI's own loop, with the dashboard as the terminal.

    Plug it in (a context variable: set it in the thread that runs the crew)::

        from crewai.core.providers.human_input import set_provider
        set_provider(CrewstreamHumanInput(producer))
    """

    def __init__(self, producer: Optional[Producer] = None, execution_id: ExecutionIdSource = None, timeout: Optional[float] = None) -> None:
        super().__init__(producer, execution_id, timeout)

    def setup_messages(self, context: Any) -> bool:
        """crewAI's standard message setup is kept."""
        return False

    def post_setup_messages(self, context: Any) -> None:
        """Nothing to add."""

    @staticmethod
    def _output(answer: Any) -> str:
        out = getattr(answer, "output", answer)
        if isinstance(out, str):
            return out
        dump = getattr(out, "model_dump_json", None)
        return dump() if callable(dump) else str(out)

    def _ask_feedback(self, answer: Any, context: Any) -> str:
        """Asks about the answer; returns crewAI's feedback string ("" accepts)."""
        task = getattr(context, "task", None)
        agent = getattr(context, "agent", None)
        crew = getattr(context, "crew", None)
        ans = self._ask(
            self._output(answer),
            context,
            task_id=str(task.id) if getattr(task, "id", None) is not None else None,
            agent_id=str(agent.id) if getattr(agent, "id", None) is not None else None,
            agent_role=getattr(agent, "role", None),
            crew_id=str(crew.id) if getattr(crew, "id", None) is not None else None,
            context=getattr(task, "description", None),
        )
        if ans.is_approve:
            return ""
        return ans.human_feedback or "Rejected by the reviewer: try again."

    def handle_feedback(self, formatted_answer: Any, context: Any) -> Any:
        """crewAI's synchronous feedback loop, with the question asked through the daemon."""
        feedback = self._ask_feedback(formatted_answer, context)
        answer = formatted_answer
        if context._is_training_mode():
            context._handle_crew_training_output(answer, feedback)
            context.messages.append(context._format_feedback_message(feedback))
            improved = context._invoke_loop()
            context._handle_crew_training_output(improved)
            context.ask_for_human_input = False
            return improved
        while context.ask_for_human_input:
            if feedback.strip() == "":
                context.ask_for_human_input = False
            else:
                context.messages.append(context._format_feedback_message(feedback))
                answer = context._invoke_loop()
                feedback = self._ask_feedback(answer, context)
        return answer

    async def handle_feedback_async(self, formatted_answer: Any, context: Any) -> Any:
        """The same loop for crewAI's async executor; the wait runs on a thread."""
        feedback = await asyncio.get_running_loop().run_in_executor(None, self._ask_feedback, formatted_answer, context)
        answer = formatted_answer
        while context.ask_for_human_input:
            if feedback.strip() == "":
                context.ask_for_human_input = False
            else:
                context.messages.append(context._format_feedback_message(feedback))
                answer = await context._ainvoke_loop()
                feedback = await asyncio.get_running_loop().run_in_executor(None, self._ask_feedback, answer, context)
        return answer


class CrewstreamFeedbackProvider(_Asker):
    """Human feedback for crewAI Flows through the daemon.

    * ``@human_feedback(message=..., provider=CrewstreamFeedbackProvider(p))``: crewAI calls
      :meth:`request_feedback`, which asks (``prompt``: the message, ``context``: the method's
      output, ``task_id``: the method name, ``emit``: the outcomes) and returns the person's
      text — ``""`` for an approval without text, so crewAI's ``default_outcome`` applies.
    * ``class MyFlow(Flow): input_provider = CrewstreamFeedbackProvider(p)``: ``Flow.ask()``
      calls :meth:`request_input`, which returns the person's text (``None`` when they rejected
      without text).
    """

    def __init__(self, producer: Optional[Producer] = None, execution_id: ExecutionIdSource = None, timeout: Optional[float] = None) -> None:
        super().__init__(producer, execution_id, timeout)

    def request_feedback(self, context: Any, flow: Any) -> str:
        """crewAI's ``HumanFeedbackProvider.request_feedback``: blocks for the answer."""
        out = getattr(context, "method_output", None)
        ans = self._ask(
            str(getattr(context, "message", "") or "Review the output"),
            context,
            task_id=getattr(context, "method_name", None),
            flow_id=getattr(context, "flow_id", None),
            flow_name=getattr(flow, "name", None) or type(flow).__name__,
            context=_safe(_text(out), DEFAULT_MAX_FIELD_CHARS) if out is not None else None,
            emit=getattr(context, "emit", None),
        )
        if ans.human_feedback:
            return ans.human_feedback
        return "" if ans.is_approve else "rejected"

    def request_input(self, message: str, flow: Any, metadata: Optional[Dict[str, Any]] = None) -> Optional[str]:
        """crewAI's ``InputProvider.request_input`` (``Flow.ask()``): blocks for the answer."""
        ans = self._ask(
            message,
            flow,
            flow_name=getattr(flow, "name", None) or type(flow).__name__,
            metadata=_safe(metadata, DEFAULT_MAX_FIELD_CHARS) if metadata else None,
        )
        if ans.human_feedback is not None:
            return ans.human_feedback
        return "" if ans.is_approve else None
