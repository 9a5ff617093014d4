"""Running uvicorn inside a service's own event loop, next to its gRPC server.

uvicorn normally owns the process's signals; here the service does (it stops
HTTP and gRPC together, in order), so signal capture is turned off.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import uvicorn


class EmbeddedUvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        yield


async def start_http(app, host: str, port: int, **config) -> tuple[EmbeddedUvicorn, asyncio.Task, int]:
    """Serve ``app`` on host:port (0: any free port); return the server, its task and the bound port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    server = EmbeddedUvicorn(uvicorn.Config(app, loop="none", log_level="warning", access_log=False, **config))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if task.done():
        task.result()  # raises what stopped it
        raise OSError(f"HTTP server on {host}:{port} stopped at start")
    return server, task, bound
