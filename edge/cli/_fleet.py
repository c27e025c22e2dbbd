"""``edgectl fleet ...``: the central side of the upstream contract, from an operator's shell.

``push`` publishes a signed rule table to ``EDGE_RULES`` (``device.<id>`` or ``group.<g>``),
``status`` reads every board's document from ``EDGE_DEVICES``, ``aggregates`` reads
``EDGE_AGG``. Loaded lazily (edge.cli._main.LazyGroup): nats-py is imported only here and in
edge.sync.

Connection options sit on the ``fleet`` group and fall back, like every setting, to
``EDGE_UPSTREAM_*`` and the TOML file (edge.config): ``--url`` is ``upstream_url``, ``--creds``
``upstream_creds`` and so on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.table import Column, Table

from ..config import EdgeConfig, load_config
from ..errors import EdgeError, RuleTableError
from ..rules import (
    TableInfo,
    decode_table_with_info,
    key_id,
    load_rule_file,
    load_signing_key,
    sign_table,
)
from ..rules import encode_rule_table as _encode
from ..wire import MessageType, decode_aggregate, fb, message_type
from ._main import HelpGroup, _emit_json, _fail, console, handles_errors, json_option
from ._rules_cmds import lifetime_ms, scope_names

_T = TypeVar("_T")
_existing_file = click.Path(exists=True, dir_okay=False, path_type=Path)
_file = click.Path(dir_okay=False, path_type=Path)


@dataclasses.dataclass
class FleetCtx:
    cfg: EdgeConfig
    timeout: float


@click.group(cls=HelpGroup)
@click.option("--url", "upstream_url", help="NATS server URL(s), comma-separated (upstream_url).")
@click.option("--creds", "upstream_creds", type=_file, help="NATS credentials file (.creds).")
@click.option("--nkey", "upstream_nkey", type=_file, help="NKey seed file.")
@click.option("--tls-ca", "upstream_tls_ca", type=_file, help="CA bundle for the server.")
@click.option("--tls-cert", "upstream_tls_cert", type=_file, help="Client certificate (mTLS).")
@click.option("--tls-key", "upstream_tls_key", type=_file, help="Client key (mTLS).")
@click.pass_context
@handles_errors
def fleet(ctx: click.Context, **flags: Any) -> None:
    """The fleet over NATS JetStream: push signed rule tables, read device status and
    aggregates. Options default to EDGE_UPSTREAM_* and the config file."""
    root = ctx.find_root()
    cfg = load_config(flags, file=root.params.get("config_file"))
    if not cfg.upstream_url.strip():
        _fail("no upstream: give --url nats://HOST:4222 (or upstream_url, EDGE_UPSTREAM_URL)", 2)
    ctx.obj = FleetCtx(cfg, float(root.params.get("timeout") or 5.0))


def _run(obj: FleetCtx, work: Callable[[Any], Awaitable[_T]]) -> _T:
    """Connect, run ``work(js)``, close. Exit 3 with the reason when the server is not there."""
    import nats
    from nats.errors import Error as NatsError

    from ..sync import LinkOptions, connect_options

    async def main() -> _T:
        kw = connect_options(obj.cfg, LinkOptions(connect_timeout_s=obj.timeout))
        kw["name"] = "edgectl fleet"
        try:
            nc = await nats.connect(**kw)
        except Exception as exc:  # noqa: BLE001 - any failure to connect gets one clear line
            _fail(
                f"upstream not reachable at {obj.cfg.upstream_url}: {_describe(exc)} (set "
                "--url or EDGE_UPSTREAM_URL; credentials: --creds/--nkey; TLS: --tls-*)",
                3,
            )
        try:
            return await work(nc.jetstream(timeout=obj.timeout))
        except NatsError as exc:
            _fail(f"upstream: {_describe(exc)}")
            raise  # unreachable: _fail exits
        finally:
            await nc.close()

    return asyncio.run(main())


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _bucket(obj: FleetCtx, js: Any, name: str, *, create: bool) -> Any:
    from nats.js.errors import BucketNotFoundError

    try:
        return await js.key_value(name)
    except BucketNotFoundError:
        if not create:
            return None
        if not obj.cfg.upstream_create_streams:
            _fail(f"bucket {name} does not exist (and upstream_create_streams is off)")
        from ..sync import ensure_streams

        await ensure_streams(js)
        return await js.key_value(name)


# --- push --------------------------------------------------------------------------------------


def _inner_table(signed: bytes) -> bytes:
    """The RuleTable bytes inside a SignedRuleTable (structure verified, signature not)."""
    from ..wire import verify

    verify(signed)
    env = fb.SignedRuleTable.SignedRuleTable.GetRootAs(signed, 0)
    return _ubytes(env, 0)


def _ubytes(obj: Any, field_id: int) -> bytes:
    tab = obj._tab
    o = tab.Offset(4 + 2 * field_id)
    if not o:
        return b""
    start = tab.Vector(o)
    return bytes(tab.Bytes[start : start + tab.VectorLen(o)])


def _signer(signed: bytes) -> bytes:
    env = fb.SignedRuleTable.SignedRuleTable.GetRootAs(signed, 0)
    return _ubytes(env, 1)


def describe_value(value: bytes) -> TableInfo | None:
    """What a published value says about itself (version, hash, scope, signer), without
    checking its signature: for choosing the next version. None when it is not a table."""
    try:
        kind = message_type(value) if len(value) >= 8 else None
        if kind is MessageType.SIGNED_RULE_TABLE:
            info = decode_table_with_info(_inner_table(value))[1]
            return dataclasses.replace(info, key_id=_signer(value))
        if kind is MessageType.RULE_TABLE:
            return decode_table_with_info(value)[1]
    except EdgeError:
        return None
    return None


@fleet.command("push")
@click.argument("source", metavar="FILE|TABLE.bin", type=_existing_file)
@click.option("--device", help="Publish to key device.<DEVICE> (wins over its groups).")
@click.option("--group", help="Publish to key group.<GROUP>.")
@click.option(
    "--key",
    "key_file",
    type=_file,
    help="Secret key (PREFIX.key) to sign with; needed unless TABLE.bin is signed already.",
)
@click.option(
    "--version",
    "version",
    type=click.IntRange(1, (1 << 64) - 1),
    help="Table version (default: now in Unix ms, and above what the key holds).",
)
@click.option(
    "--expires-in",
    metavar="DURATION",
    help="Boards refuse the table this long after the push, e.g. 30d or 720h (default: never).",
)
@click.option(
    "--scope",
    multiple=True,
    callback=scope_names,
    metavar="ID[,ID...]",
    help="Device ids / groups the table is for (repeatable; default: the target device or "
    "group, so the table cannot be replayed under another key).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Publish a table signed by a key other than --key, or not newer than the key's.",
)
@json_option
@click.pass_obj
@handles_errors
def fleet_push(
    obj: FleetCtx,
    source: Path,
    device: str | None,
    group: str | None,
    key_file: Path | None,
    version: int | None,
    expires_in: str | None,
    scope: tuple[str, ...],
    force: bool,
    as_json: bool,
) -> None:
    """Sign and publish a rule table for one device or a group of devices.

    FILE (rule YAML/JSON) is compiled and signed with --key. A compiled TABLE.bin is signed
    with --key when unsigned; a signed one is published as it is (refused when signed by
    another key than --key, unless --force). Boards accept only signed tables, by a key they
    trust, for them, unexpired, and newer than the one they run.
    """
    if (device is None) == (group is None):
        raise click.UsageError("give exactly one of --device D or --group G")
    target = device if device is not None else group
    assert target is not None
    kv_key = f"device.{device}" if device is not None else f"group.{group}"
    _check_key_name(kv_key)
    raw = source.read_bytes()
    kind = message_type(raw) if len(raw) >= 8 else None
    key = load_signing_key(key_file) if key_file is not None else None
    if kind is not MessageType.SIGNED_RULE_TABLE and key is None:
        raise click.UsageError("--key KEY is required to sign (keys: `edgectl keys gen`)")
    if kind is MessageType.SIGNED_RULE_TABLE and (version or expires_in or scope):
        raise click.UsageError(
            f"{source} is signed: its version, expiry and scope cannot change; compile the "
            "rule file again instead"
        )
    expires_ms = _expires_ms(expires_in)

    async def work(js: Any) -> dict[str, Any]:
        kv = await _bucket(obj, js, "EDGE_RULES", create=True)
        current, revision = await _current(kv, kv_key)
        floor = current.version if current is not None else 0
        if kind is MessageType.SIGNED_RULE_TABLE:
            blob, info = _signed_as_is(raw, key, force)
        else:
            blob, info = _sign_new(
                raw, kind, source, key, version or max(floor + 1, int(time.time() * 1000)),
                expires_ms, scope or (target,),
            )  # fmt: skip
        if info.version <= floor and not force:
            raise RuleTableError(
                f"version {info.version} is not newer than version {floor} already at "
                f"{kv_key}: every board would refuse it as a rollback (--force to publish "
                "anyway)"
            )
        new_revision = await _publish(kv, kv_key, blob, revision)
        return {
            "key": kv_key,
            "revision": new_revision,
            "bytes": len(blob),
            **info.to_json(),
        }

    r = _run(obj, work)
    if as_json:
        return _emit_json(r)
    console.print(
        f"published {r['key']} revision {r['revision']}: version {r['version']}, hash "
        f"{r['hash'][:12]}, signed by {r['key_id']}, scope {', '.join(r['scope']) or 'any'}, "
        f"expires {_fmt_wall(r['expires_at_unix_ms'])} ({r['bytes']} bytes)",
        highlight=False,
    )


def _check_key_name(kv_key: str) -> None:
    import re

    if not re.fullmatch(r"[-/_=.a-zA-Z0-9]+", kv_key) or ".." in kv_key or kv_key.endswith("."):
        raise click.UsageError(
            f"{kv_key!r} is not a valid key: device ids and groups may use letters, digits "
            "and - _ = /"
        )


def _expires_ms(expires_in: str | None) -> int:
    lifetime = lifetime_ms(expires_in)
    return int(time.time() * 1000) + lifetime if lifetime else 0


async def _current(kv: Any, kv_key: str) -> tuple[TableInfo | None, int | None]:
    """The table now at ``kv_key`` and its revision (None, None when the key is empty)."""
    from nats.js.errors import KeyNotFoundError

    try:
        entry = await kv.get(kv_key)
    except KeyNotFoundError:  # absent, deleted or purged
        return None, None
    return describe_value(entry.value or b""), entry.revision


async def _publish(kv: Any, kv_key: str, blob: bytes, revision: int | None) -> int:
    """Put ``blob`` only if nobody wrote ``kv_key`` since we read it (revision check)."""
    from nats.js.errors import KeyWrongLastSequenceError

    try:
        if revision is None:
            return int(await kv.put(kv_key, blob))
        return int(await kv.update(kv_key, blob, last=revision))
    except KeyWrongLastSequenceError:
        raise EdgeError(
            f"{kv_key} changed while this push was being prepared (another operator?); "
            "nothing was published, run it again"
        ) from None


def _signed_as_is(raw: bytes, key: Any, force: bool) -> tuple[bytes, TableInfo]:
    info = describe_value(raw)
    if info is None:
        raise RuleTableError("the signed table does not decode; compile it again")
    if key is not None:
        mine = key_id(key.verify_key)
        if info.key_id != mine:
            if not force:
                raise RuleTableError(
                    f"the table is signed by key {info.key_id.hex() if info.key_id else '?'}, "
                    f"not by --key ({mine.hex()}); boards that do not trust that key refuse "
                    "it (--force to publish it anyway)"
                )
        else:  # we hold the key: catch a damaged file here rather than on every board
            decode_table_with_info(raw, trusted_keys={mine: key.verify_key})
    return raw, info


def _sign_new(
    raw: bytes,
    kind: MessageType | None,
    source: Path,
    key: Any,
    version: int,
    expires_ms: int,
    scope: tuple[str, ...],
) -> tuple[bytes, TableInfo]:
    if kind is MessageType.RULE_TABLE:
        rs, compiled = decode_table_with_info(raw)
        expires_ms = expires_ms or compiled.expires_at_unix_ms
        scope = compiled.scope or scope
    else:
        rs = load_rule_file(source)
    rs = dataclasses.replace(rs, version=version)
    table = _encode(rs, expires_at_unix_ms=expires_ms, scope=scope)
    blob = sign_table(table, key)
    info = decode_table_with_info(blob, trusted_keys={key_id(key.verify_key): key.verify_key})[1]
    return blob, info


def _fmt_wall(unix_ms: int) -> str:
    if not unix_ms:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix_ms / 1000))


# --- status ------------------------------------------------------------------------------------


@fleet.command("status")
@click.option("--json", "as_json", is_flag=True, help="The devices' documents, as stored.")
@click.pass_obj
@handles_errors
def fleet_status(obj: FleetCtx, as_json: bool) -> None:
    """Every device that reported to EDGE_DEVICES: link, rule table, lag, outbox."""

    async def work(js: Any) -> list[dict[str, Any]]:
        from nats.js.errors import KeyNotFoundError, NoKeysError

        kv = await _bucket(obj, js, "EDGE_DEVICES", create=False)
        if kv is None:
            return []
        try:
            keys = await kv.keys()
        except NoKeysError:
            return []
        docs = []
        for k in sorted(keys):
            try:
                entry = await kv.get(k)
            except KeyNotFoundError:
                continue
            try:
                doc = json.loads(entry.value or b"")
            except ValueError:
                doc = {"device_id": k, "error": "not a JSON status document"}
            docs.append(doc if isinstance(doc, dict) else {"device_id": k, "error": "not a dict"})
        return docs

    docs = _run(obj, work)
    now_ms = int(time.time() * 1000)
    for d in docs:
        seen = d.get("last_seen_unix_ms")
        d["lag_s"] = round((now_ms - seen) / 1000, 1) if isinstance(seen, int) else None
    if as_json:
        return _emit_json(docs)
    if not docs:
        console.print("no device has reported yet (bucket EDGE_DEVICES is empty)")
        return
    # the ids never fold (a script or an eye looks for them whole); the refusal's text does
    t = Table(
        Column("device", no_wrap=True, min_width=6),
        Column("link", no_wrap=True),
        Column("table", no_wrap=True),
        "lag", "outbox", "oldest", "drops",
        Column("last refused", overflow="fold"),
    )  # fmt: skip
    for d in docs:
        edged = d.get("edged") or {}
        outbox = d.get("outbox") or {}
        refused = (d.get("rules") or {}).get("last_refused") or {}
        t.add_row(
            str(d.get("device_id", "?")),
            str((d.get("link") or {}).get("state", "?")),
            str(edged.get("rules_version", "-")) if edged.get("running") else "edged down",
            f"{d['lag_s']:g} s" if d.get("lag_s") is not None else "?",
            str(outbox.get("depth", "-")),
            f"{outbox['oldest_age_s']:.0f} s" if outbox.get("oldest_age_s") is not None else "-",
            str(outbox.get("dropped", "-")),
            f"{refused.get('key')} v{refused.get('version')}: {refused.get('reason', '')[:60]}"
            if refused
            else "",
        )
    console.print(t)


# --- aggregates --------------------------------------------------------------------------------


@fleet.command("aggregates")
@click.option("--device", help="Only this device's aggregates (subject edge.agg.<DEVICE>).")
@click.option("--follow", is_flag=True, help="Keep printing new aggregates (Ctrl-C stops).")
@click.pass_obj
@handles_errors
def fleet_aggregates(obj: FleetCtx, device: str | None, follow: bool) -> None:
    """Print the aggregates in EDGE_AGG, oldest first, one JSON object a line: the stream
    sequence, the device, its Edge-Seq, and the decoded Aggregate (or its size when it does
    not decode). An ephemeral ordered consumer: nothing is acknowledged or removed."""
    if device is not None:
        _check_key_name(f"device.{device}")
    subject = f"edge.agg.{device}" if device else "edge.agg.>"

    async def work(js: Any) -> int:
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.errors import NotFoundError

        try:
            info = await js.stream_info("EDGE_AGG", subjects_filter=subject)
        except NotFoundError:
            if not follow:
                return 0
        else:
            if not follow and info.state.messages == 0:
                return 0
        sub = await js.subscribe(subject, ordered_consumer=True)
        printed = 0
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=None if follow else obj.timeout)
                except NatsTimeout:
                    return printed
                click.echo(json.dumps(_aggregate_line(msg), sort_keys=True, default=str))
                printed += 1
                if not follow and msg.metadata.num_pending == 0:
                    return printed
        finally:
            await sub.unsubscribe()

    try:
        _run(obj, work)
    except KeyboardInterrupt:
        pass


def _aggregate_line(msg: Any) -> dict[str, Any]:
    headers = msg.headers or {}
    line: dict[str, Any] = {
        "stream_seq": msg.metadata.sequence.stream,
        "subject": msg.subject,
        "device": headers.get("Edge-Device", msg.subject.rsplit(".", 1)[-1]),
        "seq": int(headers["Edge-Seq"]) if str(headers.get("Edge-Seq", "")).isdigit() else None,
        "bytes": len(msg.data),
    }
    try:
        line["aggregate"] = decode_aggregate(msg.data)
    except EdgeError as exc:
        line["error"] = f"not an Aggregate: {exc}"
    return line
