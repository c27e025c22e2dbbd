"""Ed25519 keys, key files and the signed envelope (edge.rules._signing)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import nacl.signing
import pytest

from edge.errors import ConfigError, RuleTableError
from edge.rules import RuleSet
from edge.rules._signing import (
    key_id,
    load_public_key,
    load_signing_key,
    load_trusted_keys,
    open_signed_table,
    sign_table,
    write_key_pair,
)
from edge.rules._table_codec import encode_rule_table
from edge.wire import MessageType, fb, message_type, verify


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_key_pair_files(tmp_path: Path) -> None:
    secret, public = write_key_pair(tmp_path / "fleet")
    assert (secret.name, public.name) == ("fleet.key", "fleet.pub")
    assert mode(secret) == 0o600 and mode(public) == 0o644
    sk, vk = load_signing_key(secret), load_public_key(public)
    assert sk.verify_key == vk
    kid = hashlib.sha256(bytes(vk)).digest()[:8]
    assert key_id(vk) == kid
    lines = secret.read_text().splitlines()
    assert lines[0].startswith("#") and kid.hex() in lines[0]
    assert lines[-1] == f"ed25519-secret {bytes(sk).hex()}"
    assert public.read_text().splitlines()[-1] == f"ed25519-public {bytes(vk).hex()}"


def test_the_mode_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        secret, _ = write_key_pair(tmp_path / "k")
    finally:
        os.umask(old)
    assert mode(secret) == 0o600


def test_a_given_key_is_written_and_nothing_is_overwritten(tmp_path: Path) -> None:
    key = nacl.signing.SigningKey.generate()
    secret, public = write_key_pair(tmp_path / "k", key)
    assert load_signing_key(secret) == key
    before = secret.read_bytes()
    with pytest.raises(ConfigError, match="k.key and .*k.pub already exist:"):
        write_key_pair(tmp_path / "k")
    assert secret.read_bytes() == before
    public.unlink()
    with pytest.raises(ConfigError, match="k.key already exists:"):
        write_key_pair(tmp_path / "k")
    assert not public.exists()


def test_signing_key_refusals(tmp_path: Path) -> None:
    secret, public = write_key_pair(tmp_path / "k")
    with pytest.raises(ConfigError, match="this is a public key"):
        load_signing_key(public)
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match=f"mode 644.*chmod 600 {secret}"):
        load_signing_key(secret)
    with pytest.raises(ConfigError, match="no such key file.*edgectl keys gen"):
        load_signing_key(tmp_path / "absent.key")
    junk = tmp_path / "junk.key"
    junk.write_text("# comment\nhello\n")
    junk.chmod(0o600)
    with pytest.raises(ConfigError, match="junk.key: not an edge key"):
        load_signing_key(junk)
    binary = tmp_path / "bin.key"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="cannot read key file"):
        load_signing_key(binary)


def test_public_keys_from_files_and_strings(tmp_path: Path) -> None:
    secret, public = write_key_pair(tmp_path / "k")
    vk = load_public_key(public)
    hexkey = bytes(vk).hex()
    assert load_public_key(str(public)) == vk
    assert load_public_key(hexkey) == vk
    assert load_public_key(hexkey.upper()) == vk
    assert load_public_key(f"ed25519-public {hexkey}") == vk
    with pytest.raises(ConfigError, match="this is a secret key"):
        load_public_key(secret)
    with pytest.raises(ConfigError, match="a secret key was given"):
        load_public_key(secret.read_text().splitlines()[-1])
    with pytest.raises(ConfigError, match="no such key file"):
        load_public_key("not-a-key")


def test_trusted_keys_are_indexed_by_key_id(tmp_path: Path) -> None:
    _, a = write_key_pair(tmp_path / "a")
    _, b = write_key_pair(tmp_path / "b")
    b_hex = load_public_key(b).encode().hex()
    keys = load_trusted_keys([a, b_hex, str(a)])
    assert set(keys) == {key_id(load_public_key(a)), key_id(load_public_key(b))}
    assert load_trusted_keys([]) == {}


def test_sign_and_open() -> None:
    key = nacl.signing.SigningKey.generate()
    table = encode_rule_table(RuleSet((), version=4))
    signed = sign_table(table, key)
    assert message_type(signed) is MessageType.SIGNED_RULE_TABLE
    assert verify(signed) is MessageType.SIGNED_RULE_TABLE
    env = fb.SignedRuleTable.SignedRuleTable.GetRootAs(signed, 0)
    at = signed.index(table)
    assert at % 8 == 0  # the nested table may be read in place
    assert env.TableLength() == len(table)
    # the signature is plain Ed25519 over the exact table bytes: any Ed25519 library checks it
    sig = bytes(env.Signature(j) for j in range(env.SignatureLength()))
    key.verify_key.verify(table, sig)
    kid = key_id(key.verify_key)
    assert open_signed_table(signed, {kid: key.verify_key}) == (table, kid)


def test_only_rule_tables_are_signed() -> None:
    key = nacl.signing.SigningKey.generate()
    signed = sign_table(encode_rule_table(RuleSet(())), key)
    with pytest.raises(RuleTableError, match="cannot sign a SIGNED_RULE_TABLE"):
        sign_table(signed, key)
    with pytest.raises(RuleTableError, match="not a valid RuleTable"):
        sign_table(b"rules: []", key)


def test_open_refuses_other_buffers() -> None:
    table = encode_rule_table(RuleSet(()))
    with pytest.raises(RuleTableError, match="not a signed rule table"):
        open_signed_table(table, {})
    with pytest.raises(RuleTableError, match="failed verification"):
        open_signed_table(b"\x00" * 4 + b"ESRT", {})
