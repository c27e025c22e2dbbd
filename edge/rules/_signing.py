"""Ed25519 signatures on rule tables (PyNaCl): keys, key files and the signed envelope.

A signed table is a SignedRuleTable buffer (schemas/signed_rule_table.fbs) around the exact
bytes of a RuleTable buffer; nothing is re-encoded, so what was signed is what is verified::

    SignedRuleTable (file identifier "ESRT")
      table      [ubyte]  a whole RuleTable buffer ("ERTB"), 8-byte aligned:  the signed bytes
      key_id     [ubyte]  8 bytes: the first 8 bytes of SHA-256(32-byte public key)
      signature  [ubyte]  64 bytes: Ed25519 over ``table``

Key files are UTF-8 text; blank lines and lines starting with ``#`` are ignored, and exactly
one line holds the key, tagged so that one file cannot be mistaken for the other::

    PREFIX.key  (mode 0600)   ed25519-secret <64 hex digits: the 32-byte Ed25519 seed>
    PREFIX.pub                ed25519-public <64 hex digits: the 32-byte public key>

A trusted public key may also be given as its 64 hex digits alone (for config values).
Problems with key material raise ConfigError (it names the file and what to do); a table that
fails its signature check raises RuleTableError.

PyNaCl (libsodium through cffi, ~1.4 MB of RSS) is imported only when a key is made, read or
used: edged without trusted keys, which still opens signed-or-not tables, never loads it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import flatbuffers

from .._digest import sha256
from ..errors import ConfigError, EdgeError, RuleTableError
from ..wire import MessageType, fb, verify

KEY_ID_BYTES = 8
SIGNATURE_BYTES = 64
SECRET_TAG = "ed25519-secret"
PUBLIC_TAG = "ed25519-public"
MAX_SIGNED_BYTES = (64 << 20) + 4096  # a 64 MiB table plus the envelope
_TABLE, _KEY_ID, _SIGNATURE = 0, 1, 2  # SignedRuleTable field ids

if TYPE_CHECKING:
    from nacl.signing import SigningKey, VerifyKey

TrustedKeys = Mapping[bytes, "VerifyKey"]
"""key_id -> public key, as load_trusted_keys() returns it."""

_HEX64 = re.compile(r"[0-9a-fA-F]{64}\Z")
_GEN_HINT = "create a key pair with `edgectl keys gen --out PREFIX`"


def key_id(public_key: VerifyKey) -> bytes:
    """The 8-byte id of a public key: the first 8 bytes of SHA-256 of its 32 raw bytes."""
    return sha256(bytes(public_key)).digest()[:KEY_ID_BYTES]


# --- key files ---------------------------------------------------------------------------------


def write_key_pair(prefix: Path | str, key: SigningKey | None = None) -> tuple[Path, Path]:
    """Write ``PREFIX.key`` (mode 0600) and ``PREFIX.pub`` (0644); return their paths.

    key: the key to write; None generates a new one. Existing files are never overwritten:
    ConfigError names them. Raises ConfigError when a file cannot be written.
    """
    if key is None:
        from nacl.signing import SigningKey

        key = SigningKey.generate()
    secret, public = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    existing = [str(p) for p in (secret, public) if p.exists()]
    if existing:
        raise ConfigError(
            f"{' and '.join(existing)} already {'exist' if len(existing) > 1 else 'exists'}: "
            "choose another --out prefix, or delete the old files if you mean to replace that "
            "key (tables signed with it stop verifying)"
        )
    kid = key_id(key.verify_key).hex()
    try:
        _write(
            secret,
            0o600,
            f"# edge-runtime Ed25519 signing key for rule tables (key_id {kid}).\n"
            f"# Keep it secret; its public half is {public.name}.\n"
            f"{SECRET_TAG} {bytes(key).hex()}\n",
        )
        _write(
            public,
            0o644,
            f"# edge-runtime Ed25519 public key for rule tables (key_id {kid}).\n"
            "# Give it to every edged / edge-sync that should accept tables signed with it.\n"
            f"{PUBLIC_TAG} {bytes(key.verify_key).hex()}\n",
        )
    except OSError as exc:
        raise ConfigError(f"cannot write key file {exc.filename}: {exc.strerror}") from None
    return secret, public


def _write(path: Path, mode: int, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may only have removed bits; make the mode exact
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _key_line(text: str, where: str) -> tuple[str, str]:
    """(tag, hex) of the one key line in a key file; tag is "" for bare hex."""
    lines = [s.strip() for s in text.splitlines()]
    lines = [s for s in lines if s and not s.startswith("#")]
    if len(lines) == 1:
        parts = lines[0].split()
        if len(parts) == 2 and parts[0] in (SECRET_TAG, PUBLIC_TAG) and _HEX64.match(parts[1]):
            return parts[0], parts[1]
        if len(parts) == 1 and _HEX64.match(parts[0]):
            return "", parts[0]
    raise ConfigError(
        f"{where}: not an edge key (expected one line `{SECRET_TAG} <64 hex digits>` or "
        f"`{PUBLIC_TAG} <64 hex digits>`); {_GEN_HINT}"
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such key file; {_GEN_HINT}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read key file: {exc}") from None


def load_signing_key(path: Path | str) -> SigningKey:
    """Read a ``PREFIX.key`` file. Raises ConfigError when it is missing, malformed, a public
    key, or readable by group or others (as ssh does: fix with ``chmod 600``)."""
    path = Path(path)
    text = _read(path)
    mode = path.stat().st_mode & 0o777
    tag, hexkey = _key_line(text, str(path))
    if tag != SECRET_TAG:
        raise ConfigError(f"{path}: this is a public key; signing needs the secret PREFIX.key file")
    if mode & 0o077:
        raise ConfigError(
            f"{path}: a signing key must be readable by its owner only (mode {mode:03o}); "
            f"run `chmod 600 {path}`"
        )
    from nacl.signing import SigningKey

    return SigningKey(bytes.fromhex(hexkey))


def load_public_key(source: Path | str) -> VerifyKey:
    """A public key from a ``PREFIX.pub`` file path, or from a string holding its key line
    (``ed25519-public <hex>``) or the 64 hex digits alone. Raises ConfigError."""
    if isinstance(source, str):
        text = source.strip()
        if _HEX64.match(text) or text.startswith(PUBLIC_TAG + " "):
            return _public(text, "public key string")
        if text.startswith(SECRET_TAG):
            raise ConfigError("a secret key was given where a public key belongs; never share it")
    path = Path(source)
    return _public(_read(path), str(path))


def _public(text: str, where: str) -> VerifyKey:
    tag, hexkey = _key_line(text, where)
    if tag == SECRET_TAG:
        raise ConfigError(f"{where}: this is a secret key; give the PREFIX.pub file instead")
    import nacl.exceptions
    from nacl.signing import VerifyKey

    try:
        return VerifyKey(bytes.fromhex(hexkey))
    except (nacl.exceptions.CryptoError, ValueError) as exc:  # pragma: no cover - 32 bytes
        raise ConfigError(f"{where}: not a valid Ed25519 public key ({exc})") from None


def load_trusted_keys(sources: Iterable[Path | str]) -> dict[bytes, VerifyKey]:
    """key_id -> public key for every source (see load_public_key). Raises ConfigError."""
    keys: dict[bytes, VerifyKey] = {}
    for source in sources:
        vk = load_public_key(source)
        keys[key_id(vk)] = vk
    return keys


# --- the envelope ------------------------------------------------------------------------------


def sign_table(table_bytes: bytes, signing_key: SigningKey) -> bytes:
    """Wrap a RuleTable buffer in a SignedRuleTable signed with ``signing_key``.

    Raises RuleTableError when ``table_bytes`` is not a well-formed RuleTable (signing
    something else, a signed table included, would only produce a table every edged refuses).
    """
    try:
        kind = verify(table_bytes)
    except EdgeError as exc:
        raise RuleTableError(f"cannot sign: not a valid RuleTable ({exc})") from None
    if kind is not MessageType.RULE_TABLE:
        raise RuleTableError(f"cannot sign a {kind.name} buffer: give an unsigned RuleTable")
    signature = signing_key.sign(table_bytes).signature
    b = flatbuffers.Builder(len(table_bytes) + 256)
    sig = b.CreateByteVector(signature)
    kid = b.CreateByteVector(key_id(signing_key.verify_key))
    # The nested table starts 8-byte aligned, as its Node structs and longs are, so a reader
    # may use it in place (flatc's C++ does) as well as copied out.
    b.Prep(8, len(table_bytes))
    inner = b.CreateByteVector(table_bytes)
    fb.SignedRuleTable.Start(b)
    fb.SignedRuleTable.AddTable(b, inner)
    fb.SignedRuleTable.AddKeyId(b, kid)
    fb.SignedRuleTable.AddSignature(b, sig)
    b.Finish(fb.SignedRuleTable.End(b), file_identifier=MessageType.SIGNED_RULE_TABLE.value)
    return bytes(b.Output())


def open_signed_table(buf: bytes, trusted_keys: TrustedKeys | None) -> tuple[bytes, bytes]:
    """Check a SignedRuleTable's structure and signature; return (table bytes, key_id).

    trusted_keys: key_id -> public key; None or empty trusts no key, so every signed table is
    refused (a signature nobody can check proves nothing). The returned bytes are the signed
    RuleTable, not yet verified as one. Raises RuleTableError.
    """
    try:
        kind = verify(buf, max_bytes=MAX_SIGNED_BYTES)
    except EdgeError as exc:
        raise RuleTableError(f"signed rule table failed verification: {exc}") from None
    if kind is not MessageType.SIGNED_RULE_TABLE:
        raise RuleTableError(f"not a signed rule table (a {kind.name} buffer)")
    env = fb.SignedRuleTable.SignedRuleTable.GetRootAs(buf, 0)
    kid, signature = _ubytes(env, _KEY_ID), _ubytes(env, _SIGNATURE)
    if len(kid) != KEY_ID_BYTES or len(signature) != SIGNATURE_BYTES:
        raise RuleTableError(
            f"signed rule table has a {len(kid)}-byte key_id and a {len(signature)}-byte "
            f"signature; expected {KEY_ID_BYTES} and {SIGNATURE_BYTES}"
        )
    public = (trusted_keys or {}).get(kid)
    if public is None:
        configured = ", ".join(k.hex() for k in (trusted_keys or {})) or "none"
        raise RuleTableError(
            f"rule table is signed by key {kid.hex()}, which is not trusted here (trusted: "
            f"{configured}); add its PREFIX.pub to the trusted keys, or sign with a trusted key"
        )
    table = _ubytes(env, _TABLE)
    import nacl.exceptions  # loaded already: ``public`` is a nacl VerifyKey

    try:
        public.verify(table, signature)
    except nacl.exceptions.BadSignatureError:
        raise RuleTableError(
            f"rule table signature does not verify with key {kid.hex()}: the table or its "
            "signature was altered after signing; do not use this copy, sign the original again "
            "(`edgectl rules compile FILE -o TABLE.bin --sign KEY`)"
        ) from None
    return table, kid


def _ubytes(obj: object, field_id: int) -> bytes:
    """A verified ``[ubyte]`` field of a generated table object, copied out as bytes.

    field_id: the field's id in the schema (its vtable entry is at byte 4 + 2 * id).
    flatc's Python accessors read one element per call; this slices the vector once.
    """
    tab = obj._tab  # type: ignore[attr-defined]
    o = tab.Offset(4 + 2 * field_id)
    if not o:
        return b""
    start = tab.Vector(o)
    return bytes(tab.Bytes[start : start + tab.VectorLen(o)])
