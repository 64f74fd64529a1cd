"""Test signing keys and access-token builders, as auth would mint them."""
from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

ISSUER = "bagtrack-auth"
AUDIENCE = "bagtrack"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: Ed25519PrivateKey

    @classmethod
    def generate(cls, kid: str) -> "SigningKey":
        return cls(kid, Ed25519PrivateKey.generate())

    def jwk(self) -> dict:
        public = json.loads(OKPAlgorithm.to_jwk(self.private.public_key()))
        return {**public, "kid": self.kid, "alg": "EdDSA", "use": "sig"}

    def mint(self, *, kid: str | None = None, headers: dict | None = None, **claims) -> str:
        """An access token for user 7 (a dispatcher) unless `claims` override any of its claims."""
        now = int(time.time())
        body = {"sub": "7", "username": "dina", "role": "dispatcher", "area": "lucknow", "typ": "access",
                "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 900, **claims}
        return jwt.encode(body, self.private, algorithm="EdDSA", headers={"kid": kid or self.kid, **(headers or {})})


def unsigned(token: str) -> str:
    """The same claims with header alg=none and no signature."""
    header = json.loads(_b64decode(token.split(".")[0]))
    header["alg"] = "none"
    return f"{_b64encode(json.dumps(header).encode())}.{token.split('.')[1]}."


def tampered(token: str) -> str:
    """The token with one byte of its signature changed."""
    head, payload, signature = token.split(".")
    raw = bytearray(_b64decode(signature))
    raw[10] ^= 0x01
    return f"{head}.{payload}.{_b64encode(bytes(raw))}"


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
