"""`/v1/realtime`: live transcription over a WebSocket (route.py), in OpenAI's Realtime protocol."""
