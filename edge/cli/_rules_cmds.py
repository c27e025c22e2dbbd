"""``edgectl rules ...`` and ``edgectl keys ...``: check, compile, sign, push, inspect, compare
and roll back rule tables, and make the keys that sign them.

Loaded lazily by the top-level group (edge.cli._main.LazyGroup): PyNaCl and the compiler are
imported only when one of these commands runs.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ..errors import EdgeError, RuleTableError
from ..rules import (
    MAX_TARGETS,
    RuleFileError,
    RuleSet,
    TableInfo,
    decode_table_with_info,
    encode_rule_table,
    key_id,
    load_rule_file,
    load_signing_key,
    parse_condition,
    parse_duration,
    read_trace,
    replay,
    rule_json,
    sign_table,
    unmatched_series,
    write_key_pair,
)
from ..wire import CtlOp, MessageType, message_type
from ._main import (
    Ctx,
    HelpGroup,
    _emit_json,
    _fail,
    compact_table,
    console,
    handles_errors,
    json_option,
)

# RulesList fields compared by `diff`, in display order (rule_id is the key, not a field).
DIFF_FIELDS = (
    "condition",
    "board",
    "target",
    "rearm",
    "action",
    "priority",
    "sla_threshold",
    "agents",
    "params",
    "cooldown_ns",
    "escalate",
    "rule_name",
    "rule_content",
)
_existing_file = click.Path(exists=True, dir_okay=False, path_type=Path)


def _compiled(
    rs: RuleSet, *, expires_at_unix_ms: int = 0, scope: tuple[str, ...] = ()
) -> tuple[bytes, RuleSet, TableInfo]:
    """The unsigned table for ``rs``, and what edged will decode from it (the hash it reports)."""
    blob = encode_rule_table(
        rs,
        created_at_unix_ms=int(time.time() * 1000),
        expires_at_unix_ms=expires_at_unix_ms,
        scope=scope,
    )
    decoded, info = decode_table_with_info(blob)
    return blob, decoded, info


def _with_condition(rule: dict[str, Any]) -> dict[str, Any]:
    """A RulesList rule with its canonical ``condition``. An edged that does not report one is
    given the canonical text of its ``rule_content``, compiled here: the text that rule was
    compiled from, so the same as the board's as long as the language has not changed."""
    if "condition" in rule:
        return rule
    try:
        condition = parse_condition(rule.get("rule_content", "")).text()
    except (ValueError, EdgeError):
        condition = None
    return {**rule, "condition": condition}


def diff_rules(local: list[dict[str, Any]], active: list[dict[str, Any]]) -> dict[str, Any]:
    """Compare rules by rule_id: ``added`` (in ``local`` only), ``removed`` (in ``active`` only),
    ``changed`` (``{"rule_id", "condition", "fields": {name: [active, local]}}``). Fields one
    side does not carry (an older edged's RulesList) are not compared."""
    mine = {r["rule_id"]: _with_condition(r) for r in local}
    theirs = {r["rule_id"]: _with_condition(r) for r in active}
    added = [_brief(r) for rid, r in mine.items() if rid not in theirs]
    removed = [_brief(r) for rid, r in theirs.items() if rid not in mine]
    changed = []
    for rid, r in mine.items():
        other = theirs.get(rid)
        if other is None:
            continue
        fields = {
            f: [other[f], r[f]]
            for f in DIFF_FIELDS
            if f in r and f in other and other[f] is not None and other[f] != r[f]
        }
        if fields:
            changed.append({"rule_id": rid, "condition": r["condition"], "fields": fields})
    return {"added": added, "removed": removed, "changed": changed}


def _brief(rule: dict[str, Any]) -> dict[str, Any]:
    return {"rule_id": rule["rule_id"], "condition": rule["condition"]}


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        _fail(f"cannot write {path}: {exc.strerror}")


def _fmt_ns(ns: int) -> str:
    if not ns:
        return "0"
    for unit, size in (("h", 3_600_000_000_000), ("m", 60_000_000_000), ("s", 1_000_000_000)):
        if ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns / 1_000_000:g}ms"


def _fmt_wall(unix_ms: int) -> str:
    if not unix_ms:
        return "never"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix_ms / 1000))
    except (OverflowError, OSError, ValueError):
        return f"{unix_ms} ms after the epoch"


_DAY_MS = 86_400_000


def lifetime_ms(value: str | None, param_hint: str = "--expires-in") -> int:
    """A table's lifetime (``30d``, ``2w``, or a rule duration: ``720h``, ``90m``) in ms;
    0 for none. Raises click.BadParameter."""
    if not value:
        return 0
    text = value.strip()
    for unit, ms in (("d", _DAY_MS), ("w", 7 * _DAY_MS)):
        number = text.removesuffix(unit)
        if number != text and number.replace(".", "", 1).isdigit():
            return round(float(number) * ms)
    try:
        return parse_duration(text) // 1_000_000
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a duration: use a number with ms, s, m, h, d or w (e.g. 30d)",
            param_hint=param_hint,
        ) from None


def _expires_in(ctx: click.Context, param: click.Parameter, value: str | None) -> int:
    return lifetime_ms(value)


def scope_names(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    """``--scope a,b --scope c`` -> ("a", "b", "c"): a comma separates scopes (a device id or
    group never holds one). Raises click.BadParameter for an empty name."""
    names = tuple(part.strip() for item in value for part in item.split(","))
    if any(not n or any(c.isspace() for c in n) for n in names):
        raise click.BadParameter(
            f"{', '.join(map(repr, value))}: a scope is a device id or group name, without "
            "spaces; separate several with commas or repeat --scope"
        )
    return names


# --- edgectl rules -----------------------------------------------------------------------------


@click.group(cls=HelpGroup)
def rules() -> None:
    """Check, compile, sign, push, inspect, compare and roll back rule tables."""


@rules.command("check")
@click.argument("file", type=_existing_file)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handles_errors
def rules_check(file: Path, as_json: bool) -> None:
    """Check a rule file; print every problem (exit 1 if any)."""
    try:
        rs = load_rule_file(file)
    except RuleFileError as exc:
        if not as_json:
            raise
        _emit_json(
            {
                "ok": False,
                "file": str(file),
                "problems": [dataclasses.asdict(p) for p in exc.problems],
            }
        )
        sys.exit(1)
    try:
        _, decoded, info = _compiled(rs)  # what the encoder refuses is a problem too
    except RuleTableError as exc:
        if not as_json:
            raise
        _emit_json({"ok": False, "file": str(file), "problems": [{"message": str(exc)}]})
        sys.exit(1)
    if as_json:
        return _emit_json(
            {
                "ok": True,
                "file": str(file),
                "rules": len(decoded.rules),
                "version": rs.version,
                "hash": info.content_hash.hex(),
            }
        )
    console.print(f"{file}: {len(decoded.rules)} rules OK (hash {info.content_hash.hex()[:12]})")


@rules.command("compile")
@click.argument("file", type=_existing_file)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the table (e.g. TABLE.bin).",
)
@click.option(
    "--sign",
    "key_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Sign with this secret key file (PREFIX.key from `edgectl keys gen`).",
)
@click.option(
    "--version",
    "version",
    type=click.IntRange(0, (1 << 64) - 1),
    help="Table version (default: the file's version:, else 0; edged then assigns active + 1).",
)
@click.option(
    "--expires-in",
    callback=_expires_in,
    metavar="DURATION",
    help="Refuse activation this long after compiling, e.g. 30d or 720h (default: never).",
)
@click.option(
    "--scope",
    multiple=True,
    callback=scope_names,
    metavar="ID[,ID...]",
    help="Device ids or group names the table is for (comma-separated or repeated; "
    "default: any device).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
@handles_errors
def rules_compile(
    file: Path,
    output: Path,
    key_file: Path | None,
    version: int | None,
    expires_in: int,
    scope: tuple[str, ...],
    as_json: bool,
) -> None:
    """Compile FILE into a RuleTable binary, optionally signed (for a fleet or a board that
    requires signatures)."""
    rs = load_rule_file(file)
    if version is not None:
        rs = dataclasses.replace(rs, version=version)
    key = load_signing_key(key_file) if key_file is not None else None  # fail before writing
    now_ms = int(time.time() * 1000)
    expires = now_ms + expires_in if expires_in else 0
    blob, decoded, info = _compiled(rs, expires_at_unix_ms=expires, scope=scope)
    kid = None
    if key is not None:
        blob = sign_table(blob, key)
        kid = key_id(key.verify_key).hex()
    _write_atomically(output, blob)
    summary = {
        "output": str(output),
        "bytes": len(blob),
        "rules": len(decoded.rules),
        "version": decoded.version,
        "hash": info.content_hash.hex(),
        "key_id": kid,
        "expires_at_unix_ms": info.expires_at_unix_ms,
        "scope": list(info.scope),
    }
    if as_json:
        return _emit_json(summary)
    console.print(
        f"wrote {output}: {len(decoded.rules)} rules, version {decoded.version}, hash "
        f"{info.content_hash.hex()[:12]}, {f'signed by key {kid}' if kid else 'unsigned'}, "
        f"expires {_fmt_wall(info.expires_at_unix_ms)}, "
        f"scope {', '.join(info.scope) or 'any device'} ({len(blob)} bytes)",
        highlight=False,
    )


@rules.command("push")
@click.argument("source", metavar="FILE|TABLE.bin", type=_existing_file)
@click.option(
    "--sign",
    "key_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Sign with this secret key file before sending (a rule file or an unsigned table).",
)
@json_option
@click.pass_obj
@handles_errors
def rules_push(obj: Ctx, source: Path, key_file: Path | None, as_json: bool) -> None:
    """Activate a rule table on edged: compile a rule file (YAML/JSON), or send a table from
    `rules compile` as it is."""
    raw = source.read_bytes()
    kind = message_type(raw) if len(raw) >= 8 else None
    if kind is MessageType.SIGNED_RULE_TABLE:
        if key_file is not None:
            raise click.UsageError(f"{source} is signed already; push it without --sign")
        blob = raw
    else:
        blob = raw if kind is MessageType.RULE_TABLE else _compiled(load_rule_file(source))[0]
        if key_file is not None:
            blob = sign_table(blob, load_signing_key(key_file))
    r = obj.request(CtlOp.RULES_PUSH, blob=blob)
    if as_json:
        return _emit_json(r)
    console.print(
        f"rule table version {r['version']} active ({r['rules']} rules, previous "
        f"{r['previous']}, loop pause {r['pause_us']:.0f} µs)"
    )


@rules.command("list")
@json_option
@click.pass_obj
@handles_errors
def rules_list(obj: Ctx, as_json: bool) -> None:
    """The active rule table."""
    r = obj.request(CtlOp.RULES_LIST)
    if as_json:
        return _emit_json(r)
    lkg = "none" if r["lkg"] is None else f"version {r['lkg']}"
    t = compact_table(f"rule table version {r['active']} (last-known-good: {lkg})")
    for col in ("prio", "rule", "condition", "action", "SLA ms", "agents"):
        t.add_column(col)
    for rule in sorted(r["rules"], key=lambda x: -x["priority"]):
        t.add_row(
            str(rule["priority"]),
            rule["rule_id"],
            rule.get("condition") or rule["rule_content"],
            rule["action"],
            f"{rule['sla_threshold']:g}",
            ",".join(rule["agents"]) or "*",
        )
    console.print(t)


@rules.command("show")
@click.argument("rule_id")
@json_option
@click.pass_obj
@handles_errors
def rules_show(obj: Ctx, rule_id: str, as_json: bool) -> None:
    """Everything about one rule of the active table, with its canonical condition."""
    r = obj.request(CtlOp.RULES_LIST)
    found = next((x for x in r["rules"] if x["rule_id"] == rule_id), None)
    if found is None:
        known = ", ".join(x["rule_id"] for x in r["rules"][:10]) or "none"
        _fail(
            f"no rule {rule_id!r} in the active table (version {r['active']}; rules: {known}"
            f"{', ...' if len(r['rules']) > 10 else ''})"
        )
        return
    rule = {**_with_condition(found), "table_version": r["active"]}
    if as_json:
        return _emit_json(rule)
    t = Table(title=f"rule {rule_id} (table version {r['active']})", show_header=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    labels = {"condition": "condition (canonical)", "rule_content": "rule_content (as written)"}
    for key, value in rule.items():
        if key in ("rule_id", "table_version"):
            continue
        if key == "cooldown_ns":
            key, value = "cooldown", _fmt_ns(value)
        elif isinstance(value, list):
            empty = {"agents": "every agent", "target": "the agent that fired"}.get(key, "")
            value = ", ".join(map(str, value)) or empty
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v!r}" for k, v in value.items())
        elif value is None:
            value = "?"
        t.add_row(labels.get(key, key), str(value))
    console.print(t)


@rules.command("diff")
@click.argument("file", type=_existing_file)
@json_option
@click.pass_obj
@handles_errors
def rules_diff(obj: Ctx, file: Path, as_json: bool) -> None:
    """Compare a rule file with the active table: rules added, removed and changed. Exits 0
    when they are the same, 1 when they differ (like diff)."""
    _, decoded, info = _compiled(load_rule_file(file))
    r = obj.request(CtlOp.RULES_LIST)
    d = diff_rules([rule_json(x) for x in decoded.rules], r["rules"])
    same_hash = info.content_hash.hex() == r.get("hash")
    doc = {"file": str(file), "active": r["active"], "same": same_hash, **d}
    if as_json:
        _emit_json(doc)
        sys.exit(0 if same_hash else 1)
    console.print(f"{file} against active table version {r['active']}:", highlight=False)
    for x in d["added"]:
        console.print(f"[green]+ {x['rule_id']}[/]: {x['condition']}", highlight=False)
    for x in d["removed"]:
        console.print(f"[red]- {x['rule_id']}[/]: {x['condition']}", highlight=False)
    for x in d["changed"]:
        console.print(f"[yellow]~ {x['rule_id']}[/]: {x['condition']}", highlight=False)
        for name, (old, new) in x["fields"].items():
            console.print(f"    {name}: {old!r} -> {new!r}", highlight=False, markup=False)
    if same_hash:
        console.print("no differences (same content hash)")
    elif not any(d.values()):
        console.print(
            "the rules match field by field, but the content hashes differ: the custom actions "
            "differ, or fields this edged does not report"
        )
    sys.exit(0 if same_hash else 1)


@rules.command("rollback")
@json_option
@click.pass_obj
@handles_errors
def rules_rollback(obj: Ctx, as_json: bool) -> None:
    """Activate the last-known-good table again (the one active before the last push)."""
    r = obj.request(CtlOp.RULES_ROLLBACK)
    if as_json:
        return _emit_json(r)
    console.print(f"rule table version {r['version']} active (previous {r['previous']})")


@rules.command("replay")
@click.argument("rules_file", type=_existing_file)
@click.argument("trace", type=_existing_file)
@click.option(
    "--end-ms", type=float, help="Run the virtual clock to this time (default: the last row)."
)
@handles_errors
def rules_replay(rules_file: Path, trace: Path, end_ms: float | None) -> None:
    """Evaluate RULES_FILE over TRACE (CSV: t_ms,agent_id,metric,value[,labels]) offline, on a
    virtual clock, with the engine edged runs; print one JSON object per firing."""
    import json

    ruleset, rows = load_rule_file(rules_file), read_trace(trace)
    for text in unmatched_series(ruleset, rows):
        click.echo(f"warning: {trace}: series {text} is matched by no rule's selector", err=True)
    counts: dict[str, int] = {}
    fired = replay(ruleset, rows, end_ms, counts)
    for firing in fired:
        click.echo(json.dumps(firing, sort_keys=True))
    if counts.get("targets_cut"):
        click.echo(
            f"edgectl: {counts['targets_cut']} instruction(s) not sent: a firing's target "
            f"matched more than {MAX_TARGETS} agents (the fan-out cap)",
            err=True,
        )
    if not fired:
        rows_text = f"{len(rows)} row{'' if len(rows) == 1 else 's'}"
        click.echo(f"replay: no rule fired over {rows_text} of {trace}", err=True)


# --- edgectl keys ------------------------------------------------------------------------------


@click.group(cls=HelpGroup)
def keys() -> None:
    """Ed25519 key pairs that sign rule tables."""


@keys.command("gen")
@click.option(
    "--out",
    "prefix",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Writes PREFIX.key (secret, mode 0600) and PREFIX.pub.",
)
@json_option
@handles_errors
def keys_gen(prefix: Path, as_json: bool) -> None:
    """Make a signing key pair: PREFIX.key signs (`rules compile --sign`), PREFIX.pub goes to
    every board or sync process that should trust those tables."""
    secret, public = write_key_pair(prefix)
    kid = key_id(load_signing_key(secret).verify_key).hex()
    if as_json:
        return _emit_json({"key": str(secret), "pub": str(public), "key_id": kid})
    console.print(
        f"wrote {secret} (secret: keep it off the boards) and {public}; key_id {kid}",
        highlight=False,
    )
