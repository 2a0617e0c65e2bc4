"""A small DNS server on loopback that answers one name with a list of addresses, as a
Kubernetes headless Service does for its ready pods (``dnslib`` from PyPI).

gRPC's DNS resolver (grpc-go, in otelcol) asks it when the target names it as the authority:
``dns://127.0.0.1:<port>/<name>:<grpc port>``. A and AAAA questions for the name get the
addresses (AAAA: none); anything else (gRPC's ``_grpc_config`` TXT lookup) gets an empty answer.

Example::

    with DnsServer("replicas.otel-ml.test", ["127.0.0.2", "127.0.0.3"]) as dns:
        target = dns.target(4317)      # dns://127.0.0.1:PORT/replicas.otel-ml.test:4317
        dns.addresses = ["127.0.0.2"]  # what later answers say
"""

from __future__ import annotations

from dnslib import QTYPE, RR, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from tests.support import free_port

#: Seconds a resolver may keep an answer: short, so that a changed list is seen soon.
TTL = 1


class _Resolver(BaseResolver):
    def __init__(self, owner: "DnsServer"):
        self.owner = owner

    def resolve(self, request, handler):
        reply = request.reply()
        qname = request.q.qname
        if str(qname).rstrip(".") == self.owner.name and request.q.qtype == QTYPE.A:
            for address in self.owner.addresses:
                reply.add_answer(RR(qname, QTYPE.A, rdata=A(address), ttl=TTL))
        self.owner.questions += 1
        return reply


class DnsServer:
    """UDP (and TCP) DNS on 127.0.0.1 at a free port, answering ``name`` with ``addresses``."""

    def __init__(self, name: str, addresses: list):
        self.name, self.addresses = name.rstrip("."), list(addresses)
        self.port = free_port()
        self.questions = 0
        quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
        resolver = _Resolver(self)
        self._servers = [DNSServer(resolver, port=self.port, address="127.0.0.1", tcp=tcp, logger=quiet)
                         for tcp in (False, True)]

    def target(self, port: int) -> str:
        """The gRPC target that resolves ``name`` with this server."""
        return f"dns://127.0.0.1:{self.port}/{self.name}:{port}"

    def start(self) -> "DnsServer":
        for server in self._servers:
            server.start_thread()
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.stop()

    def __enter__(self) -> "DnsServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
