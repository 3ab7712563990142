"""A small local OpenID Connect provider for the sign-in tests.

It speaks what the console uses: discovery, a JWKS, an authorization endpoint that
consents at once (302 back with a code), and a token endpoint that checks the client
secret, the one-use code and the PKCE verifier, and returns an RS256 ID token. Tests set
``claims`` (merged into the next token), ``sign_with`` (another key: a forged token) or
``alg`` to make it misbehave.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

CLIENT_ID = "lorebot-console"
CLIENT_SECRET = "s3cret-of-the-console"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class FakeOidc:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "key-1"
        self.codes: dict[str, dict] = {}
        self.claims: dict = {"sub": "U0ADMIN1", "email": "ada@example.com"}
        self.sign_with = None
        self.alg = "RS256"
        self.token_requests = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _json(self, status: int, data: dict) -> None:
                body = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                q = dict(parse_qsl(url.query))
                if url.path == "/.well-known/openid-configuration":
                    self._json(
                        200,
                        {
                            "issuer": fake.url,
                            "authorization_endpoint": fake.url + "/authorize",
                            "token_endpoint": fake.url + "/token",
                            "jwks_uri": fake.url + "/jwks",
                        },
                    )
                elif url.path == "/jwks":
                    n = fake.key.public_key().public_numbers()
                    self._json(
                        200,
                        {
                            "keys": [
                                {
                                    "kty": "RSA",
                                    "kid": fake.kid,
                                    "alg": "RS256",
                                    "use": "sig",
                                    "n": b64url(n.n.to_bytes((n.n.bit_length() + 7) // 8, "big")),
                                    "e": b64url(n.e.to_bytes(3, "big")),
                                }
                            ]
                        },
                    )
                elif url.path == "/authorize":
                    if q.get("client_id") != CLIENT_ID or q.get("code_challenge_method") != "S256":
                        self._json(400, {"error": "invalid_request"})
                        return
                    code = secrets.token_urlsafe(16)
                    fake.codes[code] = q
                    self.send_response(302)
                    sep = "&" if "?" in q["redirect_uri"] else "?"
                    loc = q["redirect_uri"] + sep + urlencode({"code": code, "state": q["state"]})
                    self.send_header("Location", loc)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self._json(404, {})

            def do_POST(self) -> None:
                fake.token_requests += 1
                form = dict(
                    parse_qsl(self.rfile.read(int(self.headers["Content-Length"])).decode())
                )
                basic = (
                    "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
                )
                grant = fake.codes.pop(form.get("code", ""), None)  # one use
                if self.headers.get("Authorization") != basic or grant is None:
                    self._json(400, {"error": "invalid_grant"})
                    return
                challenge = b64url(hashlib.sha256(form.get("code_verifier", "").encode()).digest())
                if (
                    challenge != grant["code_challenge"]
                    or form.get("redirect_uri") != grant["redirect_uri"]
                ):
                    self._json(400, {"error": "invalid_grant"})
                    return
                now = int(time.time())
                claims = {
                    "iss": fake.url,
                    "aud": CLIENT_ID,
                    "iat": now,
                    "exp": now + 300,
                    "nonce": grant["nonce"],
                    **fake.claims,
                }
                self._json(200, {"id_token": fake.token(claims), "token_type": "Bearer"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def token(self, claims: dict) -> str:
        header = b64url(json.dumps({"alg": self.alg, "kid": self.kid, "typ": "JWT"}).encode())
        body = b64url(json.dumps(claims).encode())
        signing = f"{header}.{body}".encode()
        if self.alg == "none":
            return f"{header}.{body}."
        key = self.sign_with or self.key
        return f"{header}.{body}.{b64url(key.sign(signing, padding.PKCS1v15(), hashes.SHA256()))}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
