"""A free TCP port on the loopback address, for a server a test starts or a client it points
at a port nobody serves."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now (the kernel's pick, then released;
    a server that must not lose it to another process binds the socket itself instead)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
