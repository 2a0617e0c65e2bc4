"""``prometheus.web_config_file``: TLS and basic auth of the processor's web port, in the format
of Prometheus exporters' ``--web.config.file`` (the Prometheus exporter toolkit's).

Supported keys (anything else is an error naming it; keys of the toolkit that otel-ml does not
implement are named as such, so a security setting is never silently ignored)::

    tls_server_config:
      cert_file: server.crt            # both, or neither (then plain HTTP)
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # or NoClientCert (default), VerifyClientCertIfGiven
      client_ca_file: ca.crt           # needed by the two client-certificate types
      min_version: TLS12               # TLS10 … TLS13 (default TLS12)
      max_version: TLS13
    http_server_config:
      headers: {X-Frame-Options: deny} # the toolkit's five headers and values
      http2: true                      # accepted; otel-ml serves HTTP/1.1
    basic_auth_users:
      prometheus: $2y$10$...           # bcrypt hashes (htpasswd -nBC 10 "" | tr -d ':\\n')

Relative paths are taken from the web config file's folder. As in the toolkit, the file is read
again when it changes: new users and passwords apply to the next request; a changed certificate,
key or client CA file is loaded into the listening TLS context, for the connections opened after
that request; a file that became invalid answers 500 (never open) until fixed.

``/-/healthy`` and ``/-/ready`` need no password (TLS still applies): they say only whether the
process serves, and probes (Kubernetes, load balancers) can then use them without a secret.

Example::

    web = WebConfig.load("web.yml")             # raises ConfigError naming the key
    ssl_ctx = web.ssl_context()                 # None without TLS
    ok = await web.check_basic_auth(request.headers.get("Authorization"))
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import re
import ssl
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Optional

from otel_ml_processor.config import ConfigError, read_yaml

log = logging.getLogger(__name__)

__all__ = ["WebConfig", "WebConfigState", "TLS_VERSIONS", "CLIENT_AUTH_TYPES"]

TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
CLIENT_AUTH_TYPES = {"NoClientCert": ssl.CERT_NONE, "": ssl.CERT_NONE,
                     "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL, "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
#: the toolkit's client auth types that Python's ssl cannot express (a certificate asked for but not verified)
_UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")
#: headers the toolkit lets a web config set, with their allowed values (None: any)
EXTRA_HEADERS = {"Strict-Transport-Security": None, "X-Content-Type-Options": ("nosniff",),
                 "X-Frame-Options": ("deny", "sameorigin"), "X-XSS-Protection": None, "Content-Security-Policy": None}
_TLS_KEYS = ("cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version")
_TLS_UNSUPPORTED = ("cert", "key", "client_ca", "cipher_suites", "curve_preferences", "prefer_server_cipher_suites",
                    "client_allowed_sans")
#: A bcrypt hash of a random password: unknown users are checked against it too, so that the
#: answer takes as long as for a known user (no user enumeration by timing).
_DECOY_HASH = b"$2b$10$Uycmenp.006kC2./Vx9uhOLULzBqbcn862d1gLkc/EfukSP29giPa"


@dataclass(frozen=True)
class WebConfig:
    path: Optional[str] = None
    cert_file: Optional[str] = None
    key_file: Optional[str] = None
    client_auth_type: str = "NoClientCert"
    client_ca_file: Optional[str] = None
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    headers: dict = field(default_factory=dict)
    users: dict[str, bytes] = field(default_factory=dict)        # user -> bcrypt hash

    @property
    def tls(self) -> bool:
        return self.cert_file is not None

    @property
    def basic_auth(self) -> bool:
        return bool(self.users)

    @classmethod
    def load(cls, path: Optional[str]) -> "WebConfig":
        """Read and check the file (None: no TLS, no auth). Raises ConfigError naming the key."""
        if path is None:
            return cls()
        return cls.parse(read_yaml(path, "prometheus.web_config_file"), path)

    @classmethod
    def parse(cls, data: Any, path: str) -> "WebConfig":
        def fail(key: str, message: str):
            raise ConfigError(key, message, path)

        def mapping(value: Any, key: str) -> dict:
            if value is None:
                return {}
            if not isinstance(value, dict):
                fail(key, f"expected a mapping, got {type(value).__name__}")
            return value

        def string(value: Any, key: str) -> str:
            if not isinstance(value, str) or not value:
                fail(key, f"expected a non-empty string, got {value!r}")
            return value

        base = os.path.dirname(os.path.abspath(path))

        def file(value: Any, key: str) -> str:
            p = string(value, key)
            p = p if os.path.isabs(p) else os.path.join(base, p)
            if not os.path.isfile(p):
                fail(key, f"file {p!r} does not exist")
            return p

        data = mapping(data, "(top level)")
        for k in data:
            if k == "rate_limit":
                fail(k, "not supported by otel-ml (rate-limit in front of it, e.g. in a reverse proxy)")
            if k not in ("tls_server_config", "http_server_config", "basic_auth_users"):
                fail(k, "unknown key (known keys: tls_server_config, http_server_config, basic_auth_users)")
        tls = mapping(data.get("tls_server_config"), "tls_server_config")
        kw: dict = {}
        for k, v in tls.items():
            key = f"tls_server_config.{k}"
            if k in _TLS_UNSUPPORTED:
                fail(key, "not supported by otel-ml (supported: " + ", ".join(_TLS_KEYS) + ")")
            if k not in _TLS_KEYS:
                fail(key, "unknown key (known keys: " + ", ".join(_TLS_KEYS) + ")")
            if v is None:
                continue
            if k in ("cert_file", "key_file", "client_ca_file"):
                kw[k] = file(v, key)
            elif k == "client_auth_type":
                if v in _UNVERIFIED_CLIENT_AUTH:
                    fail(key, f"{v} (a client certificate that is not verified) is not supported: use "
                              "RequireAndVerifyClientCert with client_ca_file")
                if v not in CLIENT_AUTH_TYPES:
                    fail(key, f"unknown client_auth_type {v!r} (known: NoClientCert, VerifyClientCertIfGiven, "
                              "RequireAndVerifyClientCert)")
                kw[k] = v or "NoClientCert"
            else:
                if v not in TLS_VERSIONS:
                    fail(key, f"unknown TLS version {v!r} (known: {', '.join(TLS_VERSIONS)})")
                kw[k] = v
        if ("cert_file" in kw) != ("key_file" in kw):
            fail("tls_server_config", "cert_file and key_file go together")
        if "cert_file" not in kw and kw:
            fail("tls_server_config", "TLS settings without cert_file and key_file")
        auth = kw.get("client_auth_type", "NoClientCert")
        if "client_ca_file" in kw and CLIENT_AUTH_TYPES[auth] == ssl.CERT_NONE:
            fail("tls_server_config.client_ca_file", "a client CA without client_auth_type "
                 "(VerifyClientCertIfGiven or RequireAndVerifyClientCert)")
        if CLIENT_AUTH_TYPES[auth] != ssl.CERT_NONE and "client_ca_file" not in kw:
            fail("tls_server_config.client_auth_type", f"{auth} needs client_ca_file")
        if "min_version" in kw and "max_version" in kw and \
                TLS_VERSIONS[kw["min_version"]] > TLS_VERSIONS[kw["max_version"]]:
            fail("tls_server_config.min_version", "is above max_version")

        http = mapping(data.get("http_server_config"), "http_server_config")
        headers: dict = {}
        for k, v in http.items():
            key = f"http_server_config.{k}"
            if k == "http2":
                if not isinstance(v, bool):
                    fail(key, f"expected true or false, got {v!r}")
            elif k == "headers":
                for name, value in mapping(v, key).items():
                    if name not in EXTRA_HEADERS:
                        fail(f"{key}.{name}", f"this header cannot be set (allowed: {', '.join(EXTRA_HEADERS)})")
                    allowed = EXTRA_HEADERS[name]
                    if not isinstance(value, str) or (allowed is not None and value not in allowed):
                        fail(f"{key}.{name}", f"invalid value {value!r}" + (f" (allowed: {', '.join(allowed)})"
                                                                            if allowed else ""))
                    if value:
                        headers[name] = value
            else:
                fail(key, "unknown key (known keys: http2, headers)")

        users: dict[str, bytes] = {}
        for user, hashed in mapping(data.get("basic_auth_users"), "basic_auth_users").items():
            key = f"basic_auth_users.{user}"
            if not isinstance(user, str) or not user or ":" in user:
                fail(key, "a user name is a non-empty string without ':'")
            if not isinstance(hashed, str) or not _is_bcrypt(hashed):
                fail(key, "expected a bcrypt hash ($2a$, $2b$ or $2y$), e.g. from htpasswd -nBC 10 \"\" | tr -d ':\\n'")
            users[user] = hashed.encode()
        return cls(path=path, headers=headers, users=users, **kw)

    def ssl_context(self) -> Optional[ssl.SSLContext]:
        """The server's TLS context (None without TLS)."""
        if self.cert_file is None:             # = not self.tls
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = TLS_VERSIONS[self.min_version]
        ctx.maximum_version = TLS_VERSIONS[self.max_version]
        try:
            ctx.load_cert_chain(self.cert_file, self.key_file)
            if self.client_ca_file:
                ctx.load_verify_locations(cafile=self.client_ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError("tls_server_config", f"cannot load the certificate, key or client CA: {exc}",
                              self.path or "<web config>") from exc
        ctx.verify_mode = CLIENT_AUTH_TYPES[self.client_auth_type]
        return ctx


_BCRYPT = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")


def _is_bcrypt(h: str) -> bool:
    """A well-formed bcrypt hash (checked without paying its cost)."""
    m = _BCRYPT.match(h)
    return m is not None and 4 <= int(m.group(1)) <= 31


def _parse_basic(header: Optional[str]) -> Optional[tuple]:
    if not header or not header[:6].lower() == "basic ":
        return None
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = raw.partition(":")
    return (user, password) if sep else None


class WebConfigState:
    """The web config in force: re-read when its file changes; checks basic auth off the event loop.

    bcrypt is slow on purpose (~70 ms at cost 10): results are cached by a digest of (user, hash,
    password) — never the password itself — and one check runs at a time, as in the toolkit.
    """

    CACHE_SIZE = 1024

    def __init__(self, config: WebConfig):
        self.config = config
        self.error: Optional[str] = None
        self._mtime = self._stat()
        self._lock = threading.Lock()
        self._cache: OrderedDict = OrderedDict()
        self._bcrypt_lock = threading.Lock()
        self._ssl: Optional[ssl.SSLContext] = None
        self._ssl_mtimes: tuple = ()

    def _stat(self) -> Optional[float]:
        try:
            return os.stat(self.config.path).st_mtime_ns if self.config.path else None
        except OSError:
            return None

    def current(self) -> Optional[WebConfig]:
        """The config in force, re-read if the file changed; None while the file is invalid."""
        if self.config.path is None:
            return self.config
        mtime = self._stat()
        if mtime != self._mtime:
            with self._lock:
                if mtime != self._mtime:
                    self._mtime = mtime
                    try:
                        self.config = WebConfig.load(self.config.path)
                        self.error = None
                        log.info("web config %s reloaded", self.config.path)
                    except ConfigError as exc:
                        self.error = str(exc)
                        log.error("web config became invalid, answering 500 until it is fixed: %s", exc)
        if self.error:
            return None
        if self._ssl is not None:
            self._reload_tls(self.config)
        return self.config

    # --- TLS: the listening context reloads its certificate when the files change ------------------

    def server_ssl_context(self) -> Optional[ssl.SSLContext]:
        """The listening socket's TLS context (None without TLS). :meth:`current` loads a changed
        certificate, key or client CA into it in place: connections opened after the next request
        get them (certificate rotation without a restart); open ones keep theirs."""
        self._ssl = self.config.ssl_context()
        self._ssl_mtimes = self._file_mtimes(self.config) if self._ssl is not None else ()
        return self._ssl

    def _reload_tls(self, cfg: WebConfig) -> None:
        if self._ssl is None or cfg.cert_file is None:   # cert_file None = not cfg.tls
            return   # TLS on or off needs a restart (the socket is listening already)
        mtimes = self._file_mtimes(cfg)
        if mtimes == self._ssl_mtimes:
            return
        try:
            self._ssl.load_cert_chain(cfg.cert_file, cfg.key_file)
            if cfg.client_ca_file:
                self._ssl.load_verify_locations(cafile=cfg.client_ca_file)
        except (ssl.SSLError, OSError) as exc:
            log.error("cannot reload the TLS certificate, keeping the previous one: %s", exc)
            return
        self._ssl_mtimes = mtimes
        log.info("TLS certificate reloaded from %s", cfg.cert_file)

    @staticmethod
    def _file_mtimes(cfg: WebConfig) -> tuple:
        out = []
        for p in (cfg.path, cfg.cert_file, cfg.key_file, cfg.client_ca_file):
            try:
                out.append(os.stat(p).st_mtime_ns if p else None)
            except OSError:
                out.append(None)
        return tuple(out)

    # --- basic auth ------------------------------------------------------------------------------

    def _check(self, cfg: WebConfig, user: str, password: str) -> bool:
        import bcrypt

        stored = cfg.users.get(user)
        known = stored is not None
        hashed = stored if stored is not None else _DECOY_HASH
        key = hashlib.sha256(b"\0".join((user.encode(), hashed, password.encode()))).digest()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        with self._bcrypt_lock:
            try:
                ok = bcrypt.checkpw(password.encode(), hashed)
            except ValueError:
                ok = False
        ok = ok and known
        with self._lock:
            self._cache[key] = ok
            while len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        return ok

    async def check_basic_auth(self, cfg: WebConfig, authorization: Optional[str]) -> bool:
        """True when ``cfg`` needs no password or the ``Authorization`` header carries a valid one."""
        if not cfg.users:
            return True
        creds = _parse_basic(authorization)
        if creds is None:
            return False
        # constant-time compare is bcrypt's job; run it off the event loop
        return await asyncio.get_running_loop().run_in_executor(None, self._check, cfg, *creds)
