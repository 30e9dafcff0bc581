# Seed 003's Python example ("Streaming via API"), as written but for the URL (the daemon under test,
# CREWSTREAM_HOSTPORT, and the run id from argv), the key (argv) and the `import json` the snippet uses
# without showing.
import json
import os
import sys

BASE = "http://%s" % os.environ.get("CREWSTREAM_HOSTPORT", "127.0.0.1:8000")
RUN_ID = sys.argv[1]
YOUR_API_KEY = sys.argv[2]

import requests

response = requests.get(
    f"{BASE}/v1/runs/{RUN_ID}/events",
    headers={
        "Authorization": f"Bearer {YOUR_API_KEY}",
        "Accept": "text/event-stream"
    },
    stream=True
)

for line in response.iter_lines():
    if line:
        # Parse SSE format
        if line.startswith(b"data: "):
            data = json.loads(line[6:])
            print(data["type"], data["payload"])
