"""RSA keys, a JWKS file and RS256 JWTs: callers for the authenticated gateway (tests, attacks)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = ["Signer"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class Signer:
    """One RSA key pair that signs tokens and publishes itself as a JWKS."""

    def __init__(self, kid: str = "test-key") -> None:
        self.kid = kid
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def write_jwks(self, path: Path) -> Path:
        numbers = self._key.public_key().public_numbers()
        jwk = {"kty": "RSA", "kid": self.kid, "alg": "RS256", "use": "sig"}
        jwk |= {"n": _int(numbers.n), "e": _int(numbers.e)}
        path.write_text(json.dumps({"keys": [jwk]}))
        return path

    def token(self, issuer: str, audience: str, lifetime: float = 300, **claims: object) -> str:
        now = int(time.time())
        payload = {"iss": issuer, "aud": audience, "sub": "tester", "iat": now}
        payload |= {"exp": now + int(lifetime), **claims}
        # a claim given as None is left out (a token without "exp", say)
        payload = {k: v for k, v in payload.items() if v is not None}
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(signature)}"
