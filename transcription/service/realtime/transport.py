"""The WebSocket protocol the service runs on: uvicorn's (websockets, sans-I/O) with two changes for clients
that break the rules.

- A message too large for a frame (`MAX_FRAME_BYTES`) cannot be skipped, so the connection ends, but with
  the documented `message_too_large` error event before the 1009 close frame, not the close frame alone.
- A close frame is written at once, even past events a client has left unread (uvicorn would wait for the
  client to read them first, which a client that never reads never does), and a connection whose client
  has not answered the close frame by the close timeout is dropped with whatever it left unread, rather
  than held open until it reads.
"""

from __future__ import annotations

import json
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import PayloadTooBig
from websockets.frames import Frame, Opcode

from .protocol import error_event

MAX_FRAME_BYTES = 16 << 20  # uvicorn's default: the largest message read before it is refused


class LiveWebSocketProtocol(WebSocketsSansIOProtocol):
    def handle_parser_exception(self) -> None:
        if isinstance(self.conn.parser_exc, PayloadTooBig) and self._open():
            event = error_event(
                "message_too_large",
                f"the message is larger than {self.config.ws_max_size} bytes, the most one WebSocket message "
                "may carry here: the connection is closed (send audio in smaller appends)",
            )
            frame = Frame(Opcode.TEXT, json.dumps(event, separators=(",", ":")).encode())
            # Ahead of the close frame that the parser has already queued.
            self.transport.write(frame.serialize(mask=False, extensions=self.conn.extensions))
        super().handle_parser_exception()

    async def send(self, message: Any) -> None:
        if message["type"] != "websocket.close" or not self._open():
            await super().send(message)
            return
        # uvicorn's close, without first waiting for the client to read what is queued before it.
        code = message.get("code", 1000)
        reason = message.get("reason", "") or ""
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(self.close_timeout, self._close_or_drop)

    def _open(self) -> bool:
        return (
            self.handshake_complete
            and self.initial_response is None
            and not self.close_sent
            and not self.disconnected
            and not self.transport.is_closing()
        )

    def _close_or_drop(self) -> None:
        """The close timeout: a client that has read everything is closed; one that has not is dropped, so
        what it left unread is freed now."""
        self.close_timer = None
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            self.transport.close()
