"""Loopback ports for the local site's components."""

from __future__ import annotations

import socket

from aios.stack.process import free_port


def test_no_port_is_handed_out_twice() -> None:
    """The kernel reuses released ports; among a thousand picks it repeats some, and Kafka
    refused to start when its broker and controller got the same one."""
    ports = [free_port() for _ in range(1000)]
    assert len(set(ports)) == len(ports)


def test_a_handed_out_port_can_be_bound() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))
