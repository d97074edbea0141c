"""A stand-in inference server for the bus tests, run in a child process (multiprocessing, spawn)."""

from __future__ import annotations

import threading

from slam.bus import Message, RpcServer


def echo(req: Message) -> Message:
    """Answers with the request's arrays, doubled, and its meta."""
    return Message(req.topic, "echo", meta=dict(req.meta), arrays={k: v * 2 for k, v in req.arrays.items()})


def serve(endpoint: str, ready: object | None = None) -> None:
    """Serve ``echo`` on ``endpoint`` until killed; set ``ready`` (an Event) once bound."""
    with RpcServer(None, endpoint, name="echo", version="1.0", models=["echo"]) as server:
        if ready is not None:
            ready.set()
        server.serve_forever(echo, threading.Event())
