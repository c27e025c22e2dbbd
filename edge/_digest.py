"""SHA-256 and BLAKE2b without loading OpenSSL.

``import hashlib`` loads ``_hashlib``, and with it OpenSSL's libcrypto: ~3.5 MB of edged's RSS
(``edgectl bench --scenarios footprint`` lists it), for two digests that CPython also builds
in. This takes those built-in modules when they exist and hashlib otherwise; the digests are
the same bytes either way. CPython's own ``random`` module does the same for SHA-512 ("hashlib
is pretty heavy to load").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the same callables, typed as hashlib's
    from hashlib import blake2b, sha256
else:
    try:
        from _sha2 import sha256  # CPython 3.12+
    except ImportError:
        try:
            from _sha256 import sha256  # CPython 3.11
        except ImportError:  # another implementation
            from hashlib import sha256
    try:
        from _blake2 import blake2b
    except ImportError:
        from hashlib import blake2b

__all__ = ["blake2b", "sha256"]
