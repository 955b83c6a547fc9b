"""A minimal HTTP/1.1 server for the benchmarks' fake upstreams: parses requests, leaves the answer to a subclass.

Cheaper per request than any web framework, so the proxy under test, not its upstream, is what gets measured.
"""

from __future__ import annotations

import asyncio
from typing import Any


class HttpUpstream(asyncio.Protocol):
    """Reads each request (head and ``content-length`` body) and schedules ``respond(request_line, body)``."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buffer = bytearray()
        self.head: list[str] | None = None
        self.body = bytearray()
        self.length = 0

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.head is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                self.head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
                self.length = next((int(line.split(":", 1)[1]) for line in self.head[1:]
                                    if line.lower().startswith("content-length:")), 0)
                del self.buffer[:end + 4]
            take = min(len(self.buffer), self.length - len(self.body))
            self.body += self.buffer[:take]
            del self.buffer[:take]
            if len(self.body) < self.length:
                return
            head, body = self.head, self.body
            self.head, self.body = None, bytearray()
            asyncio.get_running_loop().create_task(self.respond(head[0], body))

    async def respond(self, request_line: str, body: bytearray) -> None:
        raise NotImplementedError

    def reply(self, payload: bytes) -> None:
        """A 200 response with a JSON ``payload``."""
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                             + str(len(payload)).encode() + b"\r\n\r\n" + payload)


def serve(protocol: type[HttpUpstream], port: int) -> None:
    """Run ``protocol`` on 127.0.0.1:``port`` until the process ends (call it in a child process)."""
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", port, backlog=256)
        async with server:
            await server.serve_forever()

    asyncio.run(main())
