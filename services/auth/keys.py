"""The Ed25519 key that signs access tokens, and the JWKS that publishes its public half."""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from services.auth.config import Settings

log = logging.getLogger("bagtrack.auth.keys")


class SigningKey:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self.private_key = private_key
        jwk = OKPAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
        self.kid = _thumbprint(jwk)
        self.public_jwk = {**jwk, "kid": self.kid, "alg": "EdDSA", "use": "sig"}

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk]}

    @classmethod
    def from_pem(cls, pem: bytes) -> "SigningKey":
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the signing key must be an Ed25519 private key (PEM, PKCS#8)")
        return cls(key)

    @classmethod
    def load(cls, settings: Settings) -> "SigningKey":
        """From AUTH_JWT_PRIVATE_KEY(_FILE); in development, a key generated once under var/ and reused."""
        if settings.jwt_private_key:
            return cls.from_pem(settings.jwt_private_key.get_secret_value().encode())
        if settings.jwt_private_key_file:
            return cls.from_pem(Path(settings.jwt_private_key_file).read_bytes())
        if settings.environment == "production":
            raise RuntimeError("no signing key configured")
        return cls.from_pem(dev_key_pem(Path(settings.var_dir) / "auth-signing-key.pem"))


def generate_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def dev_key_pem(path: Path) -> bytes:
    """Read the development key, creating it first if absent. Replicas may race here: the key is written
    to a private temporary file and linked into place, so nobody ever reads a half-written key."""
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(generate_pem())
    try:
        os.link(tmp, path)
        log.info("generated a development signing key at %s", path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint: a stable key id derived from the public key itself."""
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x")}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).decode().rstrip("=")
