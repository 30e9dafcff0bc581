"""crewstream.crewai: the mapping of crewAI events (stand-ins carrying exactly the field names of
crewAI 1.15.17's event classes), the listener on a stand-in event bus posting to the real
daemon, and the human-input providers answered over HTTP. crewAI itself is not installed."""

import datetime
import sys
import threading
import types
import uuid

import pytest

from test_producer import answer, history, open_request

import crewstream
import crewstream.crewai as cc
from crewstream.runtime import Kickoff, current_kickoff

T0 = datetime.datetime(2026, 1, 15, 10, 30, 2, 123456, tzinfo=datetime.timezone.utc)


class Stand:
    """A stand-in for a crewAI object: the attributes given, nothing else."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def base(**kw):
    """BaseEvent's fields (crewai/events/base_events.py), as crewAI sets them by default."""
    d = dict(
        timestamp=T0, source_fingerprint=None, source_type=None, fingerprint_metadata=None, task_id=None,
        task_name=None, agent_id=None, agent_role=None, event_id=str(uuid.uuid4()), parent_event_id=None,
        previous_event_id=None, triggered_by_event_id=None, started_event_id=None, emission_sequence=7,
    )
    d.update(kw)
    return d


def make(cls_name, type_, **fields):
    cls = type(cls_name, (Stand,), {"type": type_})
    return cls(**base(type=type_, **fields))


CREW = Stand(id="crew-uuid-1", name="writers", fingerprint=None)
AGENT = Stand(id="agent-uuid-1", role="Writer")
TASK = Stand(id="task-uuid-1", name=None, description="Write the draft", agent=AGENT)


def samples():
    """One stand-in of each mapped crewAI class, with the fields its class declares."""
    task_out = Stand(description="Write the draft", name=None, expected_output=None, summary="Write...", raw="Draft v1", pydantic=None, json_dict=None, agent="Writer")
    return {
        "CrewKickoffStartedEvent": make("CrewKickoffStartedEvent", "crew_kickoff_started", crew_name="writers", crew=CREW, inputs={"topic": "AI"}),
        "CrewKickoffCompletedEvent": make("CrewKickoffCompletedEvent", "crew_kickoff_completed", crew_name="writers", crew=CREW, output=Stand(raw="Final text"), total_tokens=1234),
        "CrewKickoffFailedEvent": make("CrewKickoffFailedEvent", "crew_kickoff_failed", crew_name="writers", crew=None, error="boom"),
        "TaskStartedEvent": make("TaskStartedEvent", "task_started", context="ctx", task=TASK, task_id="task-uuid-1", task_name="Write the draft"),
        "TaskCompletedEvent": make("TaskCompletedEvent", "task_completed", output=task_out, task=TASK, task_id="task-uuid-1"),
        "TaskFailedEvent": make("TaskFailedEvent", "task_failed", error="bad", task=TASK, task_id="task-uuid-1"),
        "AgentExecutionStartedEvent": make("AgentExecutionStartedEvent", "agent_execution_started", agent=AGENT, task=TASK, tools=[Stand(name="search")], task_prompt="Write it"),
        "AgentExecutionCompletedEvent": make("AgentExecutionCompletedEvent", "agent_execution_completed", agent=AGENT, task=TASK, output="done"),
        "AgentExecutionErrorEvent": make("AgentExecutionErrorEvent", "agent_execution_error", agent=AGENT, task=TASK, error="oops"),
        "ToolUsageStartedEvent": make("ToolUsageStartedEvent", "tool_usage_started", agent_key="k", agent_role="Writer", agent_id="agent-uuid-1", tool_name="search", tool_args={"q": "x"}, tool_class="SearchTool", run_attempts=1, delegations=0, agent=None, task_name="Write the draft", task_id="task-uuid-1", plan_step_number=None, plan_step_description=None, from_task=None, from_agent=None),
        "ToolUsageFinishedEvent": make("ToolUsageFinishedEvent", "tool_usage_finished", agent_key="k", agent_role="Writer", agent_id="agent-uuid-1", tool_name="search", tool_args='{"q": "x"}', tool_class="SearchTool", run_attempts=1, delegations=0, agent=None, task_name=None, task_id="task-uuid-1", started_at=T0, finished_at=T0, from_cache=False, output=["r1", "r2"], failure=None),
        "ToolUsageErrorEvent": make("ToolUsageErrorEvent", "tool_usage_error", tool_name="search", tool_args={}, tool_class=None, run_attempts=2, agent_key=None, error=ValueError("no net")),
        "LLMCallStartedEvent": make("LLMCallStartedEvent", "llm_call_started", call_id="c1", model="gpt-x", messages=[{"role": "user", "content": "hi"}], tools=None, callbacks=None, available_functions=None, temperature=0.2, stream=True, max_tokens=None),
        "LLMCallCompletedEvent": make("LLMCallCompletedEvent", "llm_call_completed", call_id="c1", model="gpt-x", messages=None, response="Hello", call_type=LLMCallType.LLM_CALL, usage={"total_tokens": 3}, finish_reason="stop", response_id="r1"),
        "LLMStreamChunkEvent": make("LLMStreamChunkEvent", "llm_stream_chunk", call_id="c1", model="gpt-x", chunk="Hel", tool_call=None, call_type=LLMCallType.LLM_CALL, response_id="r1"),
        "FlowStartedEvent": make("FlowStartedEvent", "flow_started", flow_name="ReviewFlow", inputs={"a": 1}),
        "MethodExecutionStartedEvent": make("MethodExecutionStartedEvent", "method_execution_started", flow_name="ReviewFlow", method_name="draft", state={"big": "x"}, params=None),
        "MethodExecutionFailedEvent": make("MethodExecutionFailedEvent", "method_execution_failed", flow_name="ReviewFlow", method_name="draft", error=RuntimeError("m failed")),
        "HumanFeedbackRequestedEvent": make("HumanFeedbackRequestedEvent", "human_feedback_requested", flow_name="ReviewFlow", method_name="review", output="Draft", message="OK?", emit=["approved", "rejected"], request_id=None),
        "FlowFinishedEvent": make("FlowFinishedEvent", "flow_finished", flow_name="ReviewFlow", result=Stand(raw="flow result"), state={}),
        "FlowFailedEvent": make("FlowFailedEvent", "flow_failed", flow_name="ReviewFlow", error=RuntimeError("flow broke")),
    }


import enum  # noqa: E402


class LLMCallType(enum.Enum):  # crewai.events.types.llm_events.LLMCallType
    TOOL_CALL = "tool_call"
    LLM_CALL = "llm_call"


def test_mapping_names_and_fields():
    s = samples()
    m = {k: cc.map_event(v, "x-1") for k, v in s.items()}
    for k, ev in m.items():
        assert ev is not None, k
        assert ev["execution_id"] == "x-1" and ev["event_id"] == s[k].event_id
        assert ev["timestamp"] == "2026-01-15T10:30:02.123Z"
        assert ev["emission_sequence"] == 7 and ev["crewai_type"] == s[k].type
    # Names the daemon understands (SPEC §1) are kept; flow method/feedback events get flow_.
    assert m["CrewKickoffStartedEvent"]["type"] == "crew_kickoff_started"
    assert m["MethodExecutionStartedEvent"]["type"] == "flow_method_execution_started"
    assert m["HumanFeedbackRequestedEvent"]["type"] == "flow_human_feedback_requested"
    assert m["LLMStreamChunkEvent"]["type"] == "llm_stream_chunk" and m["LLMStreamChunkEvent"]["chunk"] == "Hel"
    assert m["LLMStreamChunkEvent"]["call_type"] == "llm_call"
    # What the daemon's status reads: result, error.
    assert m["CrewKickoffCompletedEvent"]["result"] == "Final text" and m["CrewKickoffCompletedEvent"]["crew_id"] == "crew-uuid-1"
    assert m["CrewKickoffStartedEvent"]["inputs"] == {"topic": "AI"}
    assert m["CrewKickoffFailedEvent"]["error"] == "boom"
    assert m["FlowFinishedEvent"]["result"] == "flow result"
    assert m["FlowFailedEvent"]["error"] == "flow broke"
    assert m["MethodExecutionFailedEvent"]["error"] == "m failed"
    # Objects give their ids; big or internal objects are not copied.
    a = m["AgentExecutionStartedEvent"]
    assert (a["agent_id"], a["agent_role"], a["task_id"], a["task_name"]) == ("agent-uuid-1", "Writer", "task-uuid-1", "Write the draft")
    assert "tools" not in a and "agent" not in a and "task" not in a
    assert "state" not in m["MethodExecutionStartedEvent"]
    t = m["TaskCompletedEvent"]
    assert t["output"] == "Draft v1" and t["output_summary"] == "Write..." and t["output_agent"] == "Writer"
    assert m["ToolUsageFinishedEvent"]["output"] == ["r1", "r2"] and m["ToolUsageFinishedEvent"]["started_at"] == "2026-01-15T10:30:02.123Z"
    assert m["ToolUsageErrorEvent"]["error"] == "no net"
    assert m["LLMCallStartedEvent"]["message_count"] == 1 and "messages" not in m["LLMCallStartedEvent"]
    import json

    for ev in m.values():
        json.dumps(ev)  # every value JSON-safe


def test_mapping_unmapped_and_limits():
    assert cc.map_event(make("CrewTrainStartedEvent", "crew_train_started")) is None
    assert cc.map_event(object()) is None
    ev = cc.map_event(make("AgentExecutionCompletedEvent", "agent_execution_completed", agent=AGENT, task=TASK, output="y" * 100), "x", max_field_chars=10)
    assert ev["output"].startswith("y" * 10) and "90 chars cut" in ev["output"]
    assert "execution_id" not in cc.map_event(samples()["TaskStartedEvent"])
    assert len(cc.EVENT_CLASSES) == len(set(cc.EVENT_CLASSES))


class FakeBus:
    """The stand-in of crewai_event_bus: on(cls) registers a (source, event) handler."""

    def __init__(self):
        self.handlers = {}

    def on(self, cls):
        def deco(fn):
            self.handlers.setdefault(cls, []).append(fn)
            return fn

        return deco

    def emit(self, source, event):
        for fn in self.handlers.get(type(event), []):
            fn(source, event)

    def validate_dependencies(self):
        pass


@pytest.fixture
def fake_crewai(monkeypatch):
    """A stand-in `crewai.events` module: the event classes (by name) and BaseEventListener,
    which, as crewAI's, calls setup_listeners(bus) in __init__."""
    bus = FakeBus()
    mod = types.ModuleType("crewai.events")
    classes = {name: type(name, (Stand,), {}) for name in cc.EVENT_CLASSES if name != "LiteAgentExecutionStartedEvent"}
    for name, cls in classes.items():
        setattr(mod, name, cls)

    class BaseEventListener:
        verbose = False

        def __init__(self):
            self.setup_listeners(bus)
            bus.validate_dependencies()

    mod.BaseEventListener = BaseEventListener
    pkg = types.ModuleType("crewai")
    pkg.events = mod
    monkeypatch.setitem(sys.modules, "crewai", pkg)
    monkeypatch.setitem(sys.modules, "crewai.events", mod)
    monkeypatch.setattr(cc, "_listener_class", None)
    return bus, classes


def test_listener_posts_a_run(daemon, fake_crewai):
    bus, classes = fake_crewai
    s = samples()

    def emit(name, **over):
        src = s[name]
        ev = classes[name](**dict(src.__dict__, **over))
        ev.type = src.type
        bus.emit(None, ev)
        return ev

    with crewstream.Producer(daemon.sock) as p:
        listener = cc.CrewstreamListener(p, execution_id="crewai-run-1", skip={"llm_call_started"})
        assert "LiteAgentExecutionStartedEvent" not in listener.registered and "CrewKickoffStartedEvent" in listener.registered
        order = ["CrewKickoffStartedEvent", "TaskStartedEvent", "AgentExecutionStartedEvent", "ToolUsageStartedEvent",
                 "ToolUsageFinishedEvent", "LLMCallStartedEvent", "LLMStreamChunkEvent", "AgentExecutionCompletedEvent",
                 "TaskCompletedEvent", "CrewKickoffCompletedEvent"]
        sent = [emit(n) for n in order]
        p.flush(10)
        # Emitted again (crewAI's event_ids): acknowledged as duplicates, not stored twice.
        emit("TaskCompletedEvent")
        p.flush(10)
        assert listener.stats == {"posted": 10, "refused": 0, "dropped": 0, "unmapped": 0}
    h = history(daemon, "crewai-run-1")
    assert [e["type"] for e in h] == [s[n].type for n in order if n != "LLMCallStartedEvent"]
    assert [e["event_id"] for e in h] == [e.event_id for e in sent if e.type != "llm_call_started"]
    from csutil import http_json

    _, _, st = http_json(daemon.port, "/v1/executions/crewai-run-1")
    assert st["status"] == "completed" and st["result"] == "Final text"
    pr = st["progress"]
    assert pr["tasks"] == {"seen": 1, "done": 1, "failed": 0} and pr["agents"]["done"] == 1 and pr["tools"]["calls"] == 1


def test_listener_drops_without_execution(daemon, fake_crewai):
    bus, classes = fake_crewai
    with crewstream.Producer(daemon.sock) as p:
        listener = cc.CrewstreamListener(p)
        ev = classes["TaskStartedEvent"](**samples()["TaskStartedEvent"].__dict__)
        ev.type = "task_started"
        bus.emit(None, ev)
        assert listener.stats["dropped"] == 1 and listener.stats["posted"] == 0
        # Under a kickoff of crewstream.runtime the execution is the kickoff's.
        tok = current_kickoff.set(Kickoff({"op": "kickoff", "execution_id": "crewai-k1", "crew": "c"}, p))
        try:
            bus.emit(None, ev)
        finally:
            current_kickoff.reset(tok)
        p.flush(10)
    assert [e["type"] for e in history(daemon, "crewai-k1")] == ["task_started"]


def test_listener_needs_crewai(monkeypatch):
    monkeypatch.setitem(sys.modules, "crewai", None)
    monkeypatch.setattr(cc, "_listener_class", None)
    with pytest.raises(ImportError, match="needs crewai"):
        cc.CrewstreamListener  # noqa: B018


class Ctx:
    """crewAI's ExecutorContext (core/providers/human_input.py), recording what the provider does."""

    def __init__(self):
        self.task = TASK
        self.crew = CREW
        self.agent = AGENT
        self.messages = []
        self.ask_for_human_input = True
        self.invocations = 0

    def _invoke_loop(self):
        self.invocations += 1
        return Stand(thought="", output="Draft v%d" % (self.invocations + 1), text="")

    def _is_training_mode(self):
        return False

    def _handle_crew_training_output(self, result, human_feedback=None):
        raise AssertionError("not training")

    def _format_feedback_message(self, feedback):
        return {"role": "user", "content": feedback}


def test_human_input_provider_loop(daemon):
    """Task(human_input=True): the first answer is rejected with feedback (the agent runs again
    with it), the second approved: crewAI's loop, with the person on the daemon."""
    with crewstream.Producer(daemon.sock) as p:
        prov = cc.CrewstreamHumanInput(p, execution_id="crewai-hi")
        ctx = Ctx()
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("r", prov.handle_feedback(Stand(thought="", output="Draft v1", text=""), ctx)), daemon=True)
        t.start()
        rid = open_request(daemon, "crewai-hi")
        st, _ = answer(daemon, "crewai-hi", rid, "More detail please", approve=False)
        assert st == 200
        rid2 = open_request(daemon, "crewai-hi")
        assert rid2 != rid
        st, _ = answer(daemon, "crewai-hi", rid2, None, approve=True)
        assert st == 200
        t.join(15)
        assert out["r"].output == "Draft v2"
        assert ctx.invocations == 1 and ctx.messages == [{"role": "user", "content": "More detail please"}]
        assert ctx.ask_for_human_input is False
    reqs = [e for e in history(daemon, "crewai-hi") if e["type"] == "human_input_required"]
    assert [r["prompt"] for r in reqs] == ["Draft v1", "Draft v2"]
    assert reqs[0]["task_id"] == "task-uuid-1" and reqs[0]["agent_id"] == "agent-uuid-1" and reqs[0]["crew_id"] == "crew-uuid-1"


def test_flow_feedback_provider(daemon):
    with crewstream.Producer(daemon.sock) as p:
        prov = cc.CrewstreamFeedbackProvider(p, execution_id="crewai-flow")
        flow = Stand(name="ReviewFlow")
        pctx = Stand(flow_id="f1", flow_class="app.ReviewFlow", method_name="review", method_output={"title": "Draft"}, message="Approve?", emit=["approved", "rejected"])
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("r", prov.request_feedback(pctx, flow)), daemon=True)
        t.start()
        rid = open_request(daemon, "crewai-flow")
        assert answer(daemon, "crewai-flow", rid, "approved, ship it")[0] == 200
        t.join(15)
        assert out["r"] == "approved, ship it"
        t = threading.Thread(target=lambda: out.setdefault("i", prov.request_input("Which topic?", flow)), daemon=True)
        t.start()
        rid = open_request(daemon, "crewai-flow")
        assert answer(daemon, "crewai-flow", rid, "Rust")[0] == 200
        t.join(15)
        assert out["i"] == "Rust"
    reqs = [e for e in history(daemon, "crewai-flow") if e["type"] == "human_input_required"]
    assert reqs[0]["task_id"] == "review" and reqs[0]["emit"] == ["approved", "rejected"] and reqs[0]["context"] == {"title": "Draft"}
    assert reqs[1]["prompt"] == "Which topic?"
