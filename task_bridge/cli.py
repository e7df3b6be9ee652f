"""Commands only: parse, call the app, print, exit code.

Exit codes: 0 ok, 1 invalid config/rules/usage, 2 cannot connect, 3 internal error.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from task_bridge.app import App, load_ruleset, open_configured_outbox, tune_process
from task_bridge.config import LoadedConfig, load_config
from task_bridge.durations import parse_duration
from task_bridge.errors import (
    EXIT_INVALID,
    EXIT_OK,
    BridgeError,
    ConfigError,
    RuleError,
    exit_code,
)
from task_bridge.events import OPS, ChangeEvent, SourcePosition
from task_bridge.jsonenc import dumps_payload
from task_bridge.observability import setup_logging
from task_bridge.operations import Operation
from task_bridge.outbox.base import STATUSES, OperatorOutbox, Status, StoredOp
from task_bridge.redaction import Redactor
from task_bridge.rules.engine import RuleEngine
from task_bridge.sources.debezium import PoisonMessage, decode_debezium_json
from task_bridge.sources.kafka_connect import ColumnTypes, column_types


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_INVALID, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        default="bridge.yaml",
        type=Path,
        help="path to bridge.yaml (default: ./bridge.yaml)",
    )
    common.add_argument("--log-format", choices=["json", "text"], default="json")
    common.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    p = _Parser(prog="task-bridge", description="Postgres/Kafka change events -> task APIs.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", parents=[common], help="run until stopped")
    run.add_argument("--metrics-port", type=int, help="serve /metrics, /healthz, /readyz")

    val = sub.add_parser("validate", parents=[common], help="check config and rules")
    val.add_argument(
        "--check-source",
        action="store_true",
        help="also check that the rules' tables exist in the source database",
    )

    dry = sub.add_parser("dry-run", parents=[common], help="print the operations for one event")
    dry.add_argument("--event", required=True, help="event JSON file, or - for stdin")

    sub.add_parser("status", parents=[common], help="checkpoint, slot lag, outbox counts")

    schema = sub.add_parser("schema", help="print the JSON Schema of bridge.yaml or rule files")
    schema.add_argument(
        "kind",
        nargs="?",
        choices=["config", "rules"],
        help="config (bridge.yaml) or rules (a rule file); both, keyed so, when omitted",
    )

    fake = sub.add_parser("fake-api", help="serve in-memory fakes of the task APIs")
    fake.add_argument("--port", type=int, default=8080)
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--token", default="test-token", help="bearer token the fakes accept")

    ob = sub.add_parser("outbox", help="inspect and redrive operations")
    obs = ob.add_subparsers(dest="outbox_command", required=True, parser_class=_Parser)
    ls = obs.add_parser("list", parents=[common], help="list operations, newest first")
    ls.add_argument("--status", choices=STATUSES)
    ls.add_argument("--limit", type=int, default=50)
    show = obs.add_parser("show", parents=[common], help="one operation in full")
    show.add_argument("op_id")
    retry = obs.add_parser("retry", parents=[common], help="redrive a dead op (or all)")
    retry.add_argument("op_id", nargs="?")
    retry.add_argument("--dead", action="store_true", help="redrive every dead and parked op")
    discard = obs.add_parser("discard", parents=[common], help="delete one op")
    discard.add_argument("op_id")
    purge = obs.add_parser("purge", parents=[common], help="delete old ops")
    purge.add_argument("--delivered", action="store_true")
    purge.add_argument("--dead", action="store_true")
    purge.add_argument("--older-than", default="7d", help="age, e.g. 7d, 12h (default 7d)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = _COMMANDS[args.command]
    try:
        return handler(args)
    except (ConfigError, RuleError) as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    except BridgeError as exc:
        print(f"task-bridge: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return EXIT_OK


# -- commands ------------------------------------------------------------------------------------


def _load(args: argparse.Namespace) -> LoadedConfig:
    """The config; from here on, everything printed has its secrets masked (stored rows that
    predate redaction at rest included)."""
    path: Path = args.config
    if not path.exists():
        raise ConfigError(f"{path}: config file not found (use -c PATH)")
    loaded = load_config(path)
    redact = Redactor(loaded.secrets())
    if redact.secrets:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if not isinstance(stream, RedactingStream):
                setattr(sys, name, RedactingStream(stream, redact))
    return loaded


class RedactingStream(io.TextIOBase):
    """A text stream that masks the config's secrets in what is written to it."""

    def __init__(self, inner: TextIO, redact: Redactor) -> None:
        self.inner = inner
        self.redact = redact

    def write(self, text: str) -> int:
        self.inner.write(self.redact(text))
        return len(text)

    def flush(self) -> None:
        self.inner.flush()

    def fileno(self) -> int:
        return self.inner.fileno()

    def isatty(self) -> bool:
        return self.inner.isatty()


def cmd_run(args: argparse.Namespace) -> int:
    loaded = _load(args)
    logger = setup_logging(args.log_format, args.log_level, loaded.secrets())
    app = App(loaded, logger, after_start=tune_process)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: app.stop(signal.Signals(signum).name))
    try:
        return app.run(args.metrics_port)
    except (ConfigError, RuleError):
        raise
    except BridgeError as exc:
        logger.error("startup.failed", extra={"ctx": {"error": str(exc)}})
        return exit_code(exc)
    except Exception as exc:
        logger.exception("internal.error")
        return exit_code(exc)


def cmd_validate(args: argparse.Namespace) -> int:
    loaded = _load(args)
    ruleset = load_ruleset(loaded)
    if args.check_source:
        from task_bridge.preflight import check_source

        problems = check_source(loaded, ruleset)
        for problem in problems:
            print(problem)
        if problems:
            return EXIT_INVALID
    print(f"ok: {len(ruleset.rules)} rules, {len(loaded.config.targets)} targets")
    return EXIT_OK


def _is_debezium(data: Any) -> bool:
    """A Debezium message value (with or without schema) or `{"key": ..., "value": ...}`."""
    if not isinstance(data, dict):
        return False
    if set(data) == {"key", "value"} or set(data) == {"schema", "payload"}:
        return True
    return data.get("op") in ("c", "u", "d", "r", "t") and isinstance(data.get("source"), dict)


def _event_from_json(data: Any, types: ColumnTypes) -> ChangeEvent | None:
    """A change event as JSON, or a Debezium message (None: a message carrying no row);
    `types` types the columns of a schemaless Debezium message (`kafka.column_types`)."""
    if _is_debezium(data):
        key, value = (data["key"], data["value"]) if set(data) == {"key", "value"} else (None, data)
        try:
            return decode_debezium_json(
                key, value, topic="dry-run", partition=0, offset=0, column_types=types
            )
        except PoisonMessage as exc:
            raise ConfigError(f"the Debezium message cannot be decoded: {exc.reason}") from exc
    if not isinstance(data, dict) or "table" not in data or "op" not in data:
        raise ConfigError(
            "the event must be a JSON object with 'op', 'table', 'before', 'after',"
            ' or a Debezium message value (or {"key": ..., "value": ...})'
        )
    if data["op"] not in OPS:
        raise ConfigError(f"the event's op {data['op']!r} is not one of {', '.join(OPS)}")
    table = str(data["table"])
    schema = str(data.get("schema") or "public")
    if "." in table:
        schema, table = table.split(".", 1)
    return ChangeEvent(
        op=data["op"],
        schema=schema,
        table=table,
        position=SourcePosition(kind="dry-run", lsn=0, index=0),
        after=data.get("after"),
        before=data.get("before"),
        key=data.get("key") or {},
    )


def _shown_payload(op: Operation | StoredOp) -> Any:
    """A deferred chain step shows what it will render, not the stored event."""
    if op.deferred is None:
        return op.payload
    return {
        "rendered_at_send_time": True,
        "reads_steps": list(op.deferred.steps),
        "when": op.deferred.when,
        "task": op.deferred.task,
    }


def cmd_dry_run(args: argparse.Namespace) -> int:
    loaded = _load(args)
    engine = RuleEngine(load_ruleset(loaded))
    raw = sys.stdin.read() if args.event == "-" else Path(args.event).read_text(encoding="utf-8")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{args.event}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
    kafka = loaded.config.source.kafka
    event = _event_from_json(data, column_types(kafka.column_types) if kafka else {})
    ops = engine.evaluate(event) if event is not None else []
    out = [
        {
            "op_id": o.op_id,
            "rule": o.rule,
            "action_index": o.action_index,
            "target": o.target,
            "op": o.op,
            "uid": o.uid,
            "payload": _shown_payload(o),
            "error": o.error,
            **({"chain_step": o.step_id, "on_error": o.on_error} if o.chain else {}),
        }
        for o in ops
    ]
    print(dumps_payload(out))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from task_bridge.sources.postgres.lag import slot_lag_bytes

    loaded = _load(args)
    outbox = open_configured_outbox(loaded)
    try:
        pg, kafka = loaded.config.source.postgres, loaded.config.source.kafka
        source = f"postgres:{pg.slot}" if pg is not None else f"kafka:{kafka and kafka.group_id}"
        oldest = outbox.oldest_pending_created_at()
        status: dict[str, Any] = {
            "checkpoint": outbox.get_checkpoint(source),
            "outbox": outbox.counts(),
            "oldest_pending_age_s": round(time.time() - oldest, 1) if oldest else None,
        }
    finally:
        outbox.close()
    if pg is not None:
        status["slot_lag_bytes"] = slot_lag_bytes(pg.dsn.get_secret_value(), pg.slot)
    print(json.dumps(status, indent=2))
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from task_bridge.schemas import SCHEMA_FILES, schema_for

    kinds = [args.kind] if args.kind else list(SCHEMA_FILES)
    schemas = {kind: schema_for(kind) for kind in kinds}
    print(json.dumps(schemas[args.kind] if args.kind else schemas, indent=2))
    return EXIT_OK


def cmd_fake_api(args: argparse.Namespace) -> int:
    from task_bridge.fakes.server import serve_fakes

    serve_fakes(args.port, host=args.host, token=args.token)
    return EXIT_OK


def _op_summary(op: StoredOp) -> str:
    error = f"  {op.last_error}" if op.last_error else ""
    return (
        f"{op.op_id}  {op.status:9} {op.target}/{op.op:7} {op.uid}  attempts={op.attempts}{error}"
    )


def cmd_outbox(args: argparse.Namespace) -> int:
    loaded = _load(args)
    outbox = open_configured_outbox(loaded)
    try:
        return _OUTBOX[args.outbox_command](outbox, args)
    finally:
        outbox.close()


def _ob_list(outbox: OperatorOutbox, args: argparse.Namespace) -> int:
    for op in outbox.list(args.status, args.limit):
        print(_op_summary(op))
    return EXIT_OK


def _ob_show(outbox: OperatorOutbox, args: argparse.Namespace) -> int:
    op = outbox.get(args.op_id)
    if op is None:
        print(f"no operation {args.op_id}", file=sys.stderr)
        return EXIT_INVALID
    print(json.dumps(dataclasses.asdict(op), indent=2, default=str))
    return EXIT_OK


def _ob_retry(outbox: OperatorOutbox, args: argparse.Namespace) -> int:
    now = time.time()
    if args.dead:
        print(f"requeued {outbox.retry_dead(now)} operations")
        return EXIT_OK
    if not args.op_id:
        print("give an op id, or --dead", file=sys.stderr)
        return EXIT_INVALID
    if not outbox.retry(args.op_id, now):
        print(f"no dead or parked operation {args.op_id}", file=sys.stderr)
        return EXIT_INVALID
    print(f"requeued {args.op_id}")
    return EXIT_OK


def _ob_discard(outbox: OperatorOutbox, args: argparse.Namespace) -> int:
    if not outbox.discard(args.op_id):
        print(f"no operation {args.op_id} to discard", file=sys.stderr)
        return EXIT_INVALID
    print(f"discarded {args.op_id}")
    return EXIT_OK


def _ob_purge(outbox: OperatorOutbox, args: argparse.Namespace) -> int:
    statuses: list[Status] = []
    if args.delivered:
        statuses.append("delivered")
    if args.dead:
        statuses.append("dead")
    if not statuses:
        print("choose what to purge: --delivered and/or --dead", file=sys.stderr)
        return EXIT_INVALID
    try:
        age = parse_duration(args.older_than)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_INVALID
    print(f"purged {outbox.purge(statuses, time.time() - age)} operations")
    return EXIT_OK


_OUTBOX: dict[str, Callable[[OperatorOutbox, argparse.Namespace], int]] = {
    "list": _ob_list,
    "show": _ob_show,
    "retry": _ob_retry,
    "discard": _ob_discard,
    "purge": _ob_purge,
}
_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "validate": cmd_validate,
    "dry-run": cmd_dry_run,
    "status": cmd_status,
    "schema": cmd_schema,
    "fake-api": cmd_fake_api,
    "outbox": cmd_outbox,
}
