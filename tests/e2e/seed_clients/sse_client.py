# The seed's SSE client (seeds/000, "Server-Sent Events (SSE) Client"), verbatim except: the host
# and port come from CREWSTREAM_HOSTPORT, the usage line takes the execution id and the api key
# (or none) from argv, and `import asyncio` is added -- the seed's snippet calls asyncio.run
# without importing asyncio (it relies on the page's other snippets), so it cannot run alone.
import os, sys  # added for the test: host/port and the usage line's arguments
import asyncio  # added: missing from the seed's snippet
import httpx
import json

async def sse_client(execution_id: str, api_key: str = None):
    url = f"http://{os.environ['CREWSTREAM_HOSTPORT']}/events/human-input/{execution_id}"
    headers = {}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    
    async with httpx.AsyncClient() as client:
        async with client.stream("GET", url, headers=headers) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    if event.get('type') != 'heartbeat':
                        print(f"Received: {event}")

# Usage
asyncio.run(sse_client(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
