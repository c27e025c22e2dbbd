"""edge._digest: the same digests as hashlib, without importing it (OpenSSL)."""

from __future__ import annotations

import hashlib
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from edge._digest import blake2b, sha256


@given(st.binary(max_size=4096))
def test_same_bytes_as_hashlib(data: bytes) -> None:
    assert sha256(data).digest() == hashlib.sha256(data).digest()
    assert blake2b(data, digest_size=16).digest() == hashlib.blake2b(data, digest_size=16).digest()


def test_does_not_load_openssl() -> None:
    code = "import sys, edge._digest; print('_hashlib' in sys.modules, 'hashlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.split() == ["False", "False"]
