# The seed's long-polling client (seeds/000, "Long Polling Client"), verbatim except: the host and
# port come from CREWSTREAM_HOSTPORT, and the usage line takes the execution id and the api key
# (or none) from argv.
import os, sys  # added for the test: host/port and the usage line's arguments
import httpx
import asyncio

async def polling_client(execution_id: str, api_key: str = None):
    url = f"http://{os.environ['CREWSTREAM_HOSTPORT']}/poll/human-input/{execution_id}"
    headers = {}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    
    last_event_id = None
    
    async with httpx.AsyncClient() as client:
        while True:
            params = {}
            if last_event_id:
                params["last_event_id"] = last_event_id
            
            response = await client.get(url, headers=headers, params=params)
            data = response.json()
            
            for event in data.get("events", []):
                print(f"Received: {event}")
                last_event_id = event.get('event_id')
            
            await asyncio.sleep(2)  # Poll every 2 seconds

# Usage
asyncio.run(polling_client(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
