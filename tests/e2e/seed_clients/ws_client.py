# The seed's WebSocket client (seeds/000, "WebSocket Client"), verbatim except: the host and port
# come from CREWSTREAM_HOSTPORT (the import of os below is the only added line), and the usage
# line takes the execution id and the api key (or none) from argv.
import os, sys  # added for the test: host/port and the usage line's arguments
import asyncio
import json
import websockets

async def websocket_client(execution_id: str, api_key: str = None):
    uri = f"ws://{os.environ['CREWSTREAM_HOSTPORT']}/ws/human-input/{execution_id}"
    if api_key:
        uri += f"?token={api_key}"
    
    async with websockets.connect(uri) as websocket:
        async for message in websocket:
            event = json.loads(message)
            
            if event['type'] == 'human_input_required':
                print(f"Human input needed: {event['prompt']}")
                print(f"Context: {event['context']}")
            elif event['type'] == 'human_input_completed':
                print(f"Input completed: {event['human_feedback']}")

# Usage
asyncio.run(websocket_client(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
