"""example_crew.py - a crew runtime on the crewstream Python package: it posts the events of one
run, asks a person to approve the draft, blocks until the answer comes, and ends the run with it.

    pip install --no-build-isolation ./python
    CREWSTREAM_SOCKET=/tmp/cs-doc.sock python3 example_crew.py crew-run-1

Exit status: 0 approved, 2 rejected, 1 an error.
"""

import sys

import crewstream


def main() -> int:
    x = sys.argv[1] if len(sys.argv) > 1 else "crew-run-1"
    try:
        # The socket: $CREWSTREAM_SOCKET, else the daemon's default; the daemon may still be starting.
        p = crewstream.Producer(connect_timeout=5)
    except OSError as e:
        print("connect: %s" % e, file=sys.stderr)
        return 1
    with p:
        try:
            # The run so far: pipelined, no round trip per event.
            p.post_many([
                {"execution_id": x, "type": "crew_kickoff_started", "crew_id": "writers"},
                {"execution_id": x, "type": "task_started", "task_id": "draft", "agent_id": "writer"},
                {"execution_id": x, "type": "tool_usage_finished", "task_id": "draft", "tool_name": "search"},
                {"execution_id": x, "type": "task_completed", "task_id": "draft", "output": "Draft v1"},
            ])
            print("asking; waiting for a person", flush=True)
            # Blocks until someone answers (the dashboard, curl, a WebSocket), at most 30 minutes.
            # A broken connection or a daemon restart meanwhile is handled inside.
            answer = p.ask(x, "Publish draft v1?", task_id="review", agent_id="editor", timeout=30 * 60)
            print("%s: %s" % ("approved" if answer.approved else "rejected", answer.human_feedback or "(no feedback)"))
            if answer.approved:
                p.post({"execution_id": x, "type": "crew_kickoff_completed", "result": "Draft v1 published"})
            else:
                p.post({"execution_id": x, "type": "crew_kickoff_failed", "error": "rejected by the reviewer"})
        except (crewstream.CrewstreamError, TimeoutError) as e:
            print("the daemon did not take the run: %s" % e, file=sys.stderr)
            return 1
    return 0 if answer.approved else 2


if __name__ == "__main__":
    sys.exit(main())
