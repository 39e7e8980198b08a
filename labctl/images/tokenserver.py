"""A token server for the registry's bearer-token authentication, as the distribution spec describes it.

How Docker Hub (and any registry configured with `auth: token:`) authenticates a pull:
  1. the client GETs /v2/... and the registry answers 401 with
        WWW-Authenticate: Bearer realm="http://token-server/token",service="lab-registry",
                          scope="repository:lab/busybox:pull"
  2. the client GETs realm?service=lab-registry&scope=repository:lab/busybox:pull, with HTTP Basic
     credentials if it has some; the token server answers {"token": "<JWT>", "expires_in": 300}
  3. the client repeats its request with `Authorization: Bearer <JWT>`. The registry checks the JWT's
     RS256 signature against the certificate in its `rootcertbundle`, then its claims: iss (issuer),
     aud (service), exp/nbf, and `access`: [{"type": "repository", "name": ..., "actions": ["pull"]}].

The registry never talks to the token server: trust is the certificate. Here the JWT carries the
certificate in its `x5c` header, and the certificate is the registry's root bundle.
The lab uses this server in the step 5 demo and in the tests; it listens on 127.0.0.1 only.
"""
from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ISSUER = "labctl-token-issuer"
SERVICE = "labctl-registry"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_key_id(public_key_der: bytes) -> str:
    """The `kid` docker's libtrust derives from a public key: base32 of 240 bits of sha256(SPKI DER),
    in twelve groups of four."""
    b32 = base64.b32encode(hashlib.sha256(public_key_der).digest()[:30]).decode()
    return ":".join(b32[i:i + 4] for i in range(0, 48, 4))


class SigningKey:
    """An RSA key and a self-signed certificate for it (what the registry's rootcertbundle holds)."""

    def __init__(self):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)
        self.cert_der = self.cert.public_bytes(serialization.Encoding.DER)
        spki = self.key.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
        self.kid = libtrust_key_id(spki)

    def sign_jwt(self, claims: dict) -> str:
        """An RS256 JWT: base64url(header).base64url(claims).base64url(RSASSA-PKCS1-v1_5 SHA-256 signature)."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid, "x5c": [base64.b64encode(self.cert_der).decode()]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"


class TokenServer:
    """Issues tokens on GET /token. `users` maps usernames to passwords; anonymous clients get
    pull access if `anonymous_pull`, and authenticated users get every action they ask for."""

    def __init__(self, users: dict[str, str] | None = None, anonymous_pull: bool = False,
                 issuer: str = ISSUER, service: str = SERVICE, lifetime: int = 300):
        self.users = users or {}
        self.anonymous_pull = anonymous_pull
        self.issuer, self.service, self.lifetime = issuer, service, lifetime
        self.signing = SigningKey()
        self.issued: list[dict] = []         # the claims of every token issued (tests read them)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                parsed = urllib.parse.urlsplit(self.path)
                if parsed.path != "/token":
                    return self._send(404, {"errors": [{"code": "NOT_FOUND"}]})
                query = urllib.parse.parse_qs(parsed.query)
                user = server._authenticate(self.headers.get("Authorization"))
                if user is False:
                    return self._send(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
                if user is None and not server.anonymous_pull:
                    return self._send(401, {"errors": [{"code": "UNAUTHORIZED", "message": "log in first"}]})
                access = []
                for scope in query.get("scope", []):
                    kind, _, rest = scope.partition(":")
                    name, _, actions = rest.rpartition(":")
                    wanted = [a for a in actions.split(",") if a]
                    granted = wanted if user else [a for a in wanted if a == "pull"]
                    access.append({"type": kind, "name": name, "actions": granted})
                token = server.issue(user or "", query.get("service", [server.service])[0], access)
                self._send(200, {"token": token, "access_token": token, "expires_in": server.lifetime,
                                 "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="labctl token server"')
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        # serve_forever accepts only when select() says a connection waits; a listener that is not
        # blocking makes a wake-up without one (the client gone first) an EAGAIN, not an accept(2) that
        # blocks forever and with it stop()'s shutdown(). (The accepted sockets are blocking as ever.)
        self.httpd.socket.setblocking(False)
        self.port = self.httpd.server_address[1]
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="token-server", daemon=True)

    def _authenticate(self, header: str | None):
        """None: anonymous; the username; or False for wrong credentials."""
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        user, _, password = base64.b64decode(value).decode(errors="replace").partition(":")
        return user if user in self.users and secrets.compare_digest(self.users[user], password) else False

    def issue(self, subject: str, audience: str, access: list[dict]) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": subject, "aud": audience, "exp": now + self.lifetime,
                  "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access}
        self.issued.append(claims)
        return self.signing.sign_jwt(claims)

    def registry_auth_config(self, directory: str | os.PathLike) -> dict:
        """The `auth:` section of the registry's config (writes the root certificate bundle)."""
        bundle = Path(directory) / "token-root.pem"
        bundle.write_bytes(self.signing.cert_pem)
        return {"token": {"realm": self.realm, "service": self.service, "issuer": self.issuer,
                          "rootcertbundle": str(bundle)}}

    def start(self) -> "TokenServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "TokenServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
