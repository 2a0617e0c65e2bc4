"""Send ready-made OTLP logs requests (bytes) over gRPC or HTTP, configured like the OTLP exporters.

The buffer holds requests' bytes already encoded, so shipping is one call: ``send(body)``.
:func:`sender_from_env` reads the standard variables the OpenTelemetry Python OTLP log
exporters read, with the same defaults and precedence (the ``_LOGS_`` variable first):
``OTEL_EXPORTER_OTLP_[LOGS_]PROTOCOL`` (``grpc`` default, ``http/protobuf``),
``..._ENDPOINT`` (gRPC: ``http://localhost:4317``; HTTP: ``http://localhost:4318`` plus
``/v1/logs`` unless the ``_LOGS_`` endpoint is given), ``..._HEADERS``, ``..._TIMEOUT``
(seconds, default 10), ``..._COMPRESSION`` (``gzip``), ``..._INSECURE``, ``..._CERTIFICATE``,
``..._CLIENT_KEY`` and ``..._CLIENT_CERTIFICATE``.

A send succeeds when the receiver answers OK (gRPC) or 2xx (HTTP); anything else (refused,
timed out, ``UNAVAILABLE``, 503, ...) is a failure and the caller keeps the records to retry.
:class:`ExporterSender` hands the records to an OpenTelemetry SDK ``LogRecordExporter``
instead (it decodes them: for custom exporters only, never on the default path).

Example::

    from otel_ml.senders import sender_from_env

    sender = sender_from_env()               # grpc to localhost:4317 unless OTEL_* says otherwise
    ok = sender.send(request_bytes)
    sender.shutdown()
"""

from __future__ import annotations

import gzip
import http.client
import logging
import os
import ssl
import threading
from typing import Any, Optional, Protocol, Sequence, Tuple
from urllib.parse import urlparse

from otel_ml.forks import call_in_child
from otel_ml.version import __version__

_log = logging.getLogger(__name__)

LOGS_EXPORT_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
USER_AGENT = f"otel-ml/{__version__}"


class Sender(Protocol):
    """What ships a request: ``send`` returns True once the receiver acknowledged it."""

    def send(self, body: bytes, timeout: Optional[float] = None) -> bool: ...

    def shutdown(self) -> None: ...


def _env(name: str, default: Optional[str] = None) -> Optional[str]:
    """``OTEL_EXPORTER_OTLP_LOGS_<name>``, else ``OTEL_EXPORTER_OTLP_<name>``."""
    value = os.environ.get(f"OTEL_EXPORTER_OTLP_LOGS_{name}")
    if value is None:
        value = os.environ.get(f"OTEL_EXPORTER_OTLP_{name}")
    return default if value is None else value


def _headers(raw: Optional[str]) -> Tuple[Tuple[str, str], ...]:
    if not raw:
        return ()
    from opentelemetry.util.re import parse_env_headers  # the exporters' own parser

    return tuple(parse_env_headers(raw, liberal=True).items())


def _read(path: Optional[str]) -> Optional[bytes]:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


class GrpcSender:
    """OTLP/gRPC ``LogsService/Export`` with the request already serialized.

    The channel is made at the first send (not at start: a process that forks after
    instrumenting must not inherit a gRPC channel) and again after a fork.
    """

    def __init__(self, target: str, *, insecure: bool = True, headers: Sequence[Tuple[str, str]] = (),
                 timeout: float = 10.0, compression: Optional[str] = None,
                 root_certificates: Optional[bytes] = None, private_key: Optional[bytes] = None,
                 certificate_chain: Optional[bytes] = None) -> None:
        self.target = target
        self.insecure = insecure
        self.headers = tuple((k.lower(), v) for k, v in headers)
        self.timeout = timeout
        self.compression = compression
        self._creds = (root_certificates, private_key, certificate_chain)
        self._channel: Any = None
        self._export: Any = None
        self._lock = threading.Lock()
        call_in_child(self, "_forget")

    def _forget(self) -> None:
        self._channel = self._export = None      # the parent's channel is not ours to close
        self._lock = threading.Lock()

    def _connect(self) -> Any:
        import grpc

        with self._lock:
            if self._export is None:
                options = [("grpc.primary_user_agent", USER_AGENT)]
                compression = grpc.Compression.Gzip if self.compression == "gzip" else None
                if self.insecure:
                    channel = grpc.insecure_channel(self.target, options=options, compression=compression)
                else:
                    creds = grpc.ssl_channel_credentials(*self._creds)
                    channel = grpc.secure_channel(self.target, creds, options=options, compression=compression)
                # No serializers: the request is bytes already, and the answer is not needed.
                self._channel, self._export = channel, channel.unary_unary(LOGS_EXPORT_METHOD)
            return self._export

    def send(self, body: bytes, timeout: Optional[float] = None) -> bool:
        import grpc

        export = self._export or self._connect()
        try:
            export(body, timeout=self.timeout if timeout is None else timeout, metadata=self.headers or None)
            return True
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            _log.debug("otel-ml: OTLP/gRPC export to %s failed: %s", self.target, code)
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                # A channel that failed to connect waits out its reconnect back-off (up to 2 min)
                # and fails every call meanwhile, even once the receiver is back: the next try
                # gets a fresh channel, which connects at once.
                self.shutdown()
            return False

    def shutdown(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
            self._channel = self._export = None


class HttpSender:
    """OTLP/HTTP (``application/x-protobuf``) POST of the request, on one kept-alive connection."""

    def __init__(self, url: str, *, headers: Sequence[Tuple[str, str]] = (), timeout: float = 10.0,
                 compression: Optional[str] = None, ca_file: Optional[str] = None,
                 client_cert: Optional[str] = None, client_key: Optional[str] = None) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"OTLP/HTTP endpoint {url!r} must be an http:// or https:// URL")
        self.url = url
        self._https = parsed.scheme == "https"
        self._host = parsed.hostname
        self._port = parsed.port
        self._path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
        self.headers = {"Content-Type": "application/x-protobuf", "User-Agent": USER_AGENT, **dict(headers)}
        self.compression = compression
        if compression == "gzip":
            self.headers["Content-Encoding"] = "gzip"
        self.timeout = timeout
        self._context: Optional[ssl.SSLContext] = None
        if self._https:
            self._context = ssl.create_default_context(cafile=ca_file)
            if client_cert:
                self._context.load_cert_chain(client_cert, client_key)
        self._conn: Optional[http.client.HTTPConnection] = None
        call_in_child(self, "_forget")

    def _forget(self) -> None:
        self._conn = None

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                                         context=self._context)
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        else:
            self._conn.timeout = timeout
            if self._conn.sock is not None:
                self._conn.sock.settimeout(timeout)
        return self._conn

    def send(self, body: bytes, timeout: Optional[float] = None) -> bool:
        data = gzip.compress(body, compresslevel=6) if self.compression == "gzip" else body
        for attempt in (0, 1):               # a kept-alive connection the server closed: reconnect once
            conn = self._connection(self.timeout if timeout is None else timeout)
            try:
                conn.request("POST", self._path, body=data, headers=self.headers)
                resp = conn.getresponse()
                resp.read()
                if resp.will_close:
                    self.shutdown()
                if 200 <= resp.status < 300:
                    return True
                _log.debug("otel-ml: OTLP/HTTP export to %s answered %s", self.url, resp.status)
                return False
            except (OSError, http.client.HTTPException) as exc:
                self.shutdown()
                if attempt or not isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError,
                                                   ConnectionResetError)):
                    _log.debug("otel-ml: OTLP/HTTP export to %s failed: %s", self.url, exc)
                    return False
        return False

    def shutdown(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def sender_from_env(protocol: Optional[str] = None) -> Sender:
    """The sender the ``OTEL_EXPORTER_OTLP_*`` variables describe (see the module docstring)."""
    protocol = (protocol or _env("PROTOCOL", "grpc") or "grpc").strip().lower()
    headers = _headers(_env("HEADERS"))
    timeout = float(_env("TIMEOUT", "10") or 10)
    compression = (_env("COMPRESSION", "") or "").strip().lower() or None
    if compression not in (None, "gzip", "none"):
        raise ValueError(f"unsupported OTLP compression {compression!r}: use gzip or none")
    compression = None if compression == "none" else compression
    certificate, client_key, client_cert = _env("CERTIFICATE"), _env("CLIENT_KEY"), _env("CLIENT_CERTIFICATE")
    if protocol == "grpc":
        endpoint = _env("ENDPOINT") or "http://localhost:4317"
        parsed = urlparse(endpoint)
        insecure_env = _env("INSECURE")
        if parsed.scheme == "https":
            insecure = False
        elif insecure_env is not None:
            insecure = insecure_env.strip().lower() == "true"
        else:
            insecure = parsed.scheme == "http"
        target = parsed.netloc or endpoint
        return GrpcSender(target, insecure=insecure, headers=headers, timeout=timeout, compression=compression,
                          root_certificates=_read(certificate), private_key=_read(client_key),
                          certificate_chain=_read(client_cert))
    if protocol.startswith("http"):
        if protocol == "http/json":
            raise ValueError("otel-ml ships OTLP as protobuf: use OTEL_EXPORTER_OTLP_PROTOCOL=grpc or http/protobuf")
        url = os.environ.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
        if not url:
            base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4318"
            url = base.rstrip("/") + "/v1/logs"
        return HttpSender(url, headers=headers, timeout=timeout, compression=compression, ca_file=certificate,
                          client_cert=client_cert, client_key=client_key)
    raise ValueError(f"unsupported OTLP protocol {protocol!r}: use grpc or http/protobuf")


class ExporterSender:
    """Hands each request to an OpenTelemetry SDK ``LogRecordExporter`` (decoded into SDK records)."""

    def __init__(self, exporter: Any) -> None:
        self.exporter = exporter

    def send(self, body: bytes, timeout: Optional[float] = None) -> bool:
        from opentelemetry.sdk._logs.export import LogRecordExportResult

        from otel_ml.decode import readable_log_records

        return self.exporter.export(readable_log_records(body)) == LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        self.exporter.shutdown()

