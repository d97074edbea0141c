"""The bus: ZeroMQ sockets between the stages of the system (sensors, SLAM, inference server).

Messages are a JSON header plus raw array buffers, zero-copy on receive, never pickled
(``codec``); streams go over PUB/SUB (``pubsub``), requests to the inference server over
ROUTER/DEALER (``rpc``). Endpoints (``inproc://``, ``ipc://``, ``tcp://``) come from the
launch file; tcp binds to loopback unless the socket has CURVE keys (``keys``, ``slam-keys``).
"""

from slam.bus.codec import BusMessageError, Message, decode, encode
from slam.bus.endpoints import (
    EndpointError,
    InsecureBindError,
    check_bind,
    parse_endpoint,
)
from slam.bus.keys import (
    CurveClient,
    CurveKeyPair,
    CurveServer,
    curve_client,
    curve_server,
    generate_keypair,
)
from slam.bus.pubsub import Publisher, Subscriber
from slam.bus.rpc import RpcClient, RpcResult, RpcServer
from slam.bus.stats import BusStats

__all__ = [
    "BusMessageError",
    "BusStats",
    "CurveClient",
    "CurveKeyPair",
    "CurveServer",
    "EndpointError",
    "InsecureBindError",
    "Message",
    "Publisher",
    "RpcClient",
    "RpcResult",
    "RpcServer",
    "Subscriber",
    "check_bind",
    "curve_client",
    "curve_server",
    "decode",
    "encode",
    "generate_keypair",
    "parse_endpoint",
]
