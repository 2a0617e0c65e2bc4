"""The ``otel-ml`` command.

Usage::

    otel-ml processor [--config FILE]          run the processor service
    otel-ml demo [--forever]                   a self-contained first run (no download)
    otel-ml labels import FILE.csv [--model M] send true labels to a running processor
    otel-ml db export --model M [--since 1h] [--format csv|parquet] [--output FILE]
    otel-ml report --config FILE --model M [--version V] [--output report.html]
    otel-ml --version

Bad input gets one line on stderr that names the argument (or the configuration key) and the
problem, never a traceback:

- status 2, a usage error: the command line or the configuration is wrong (an unknown key, a
  wrong type, a duration or URL that does not parse, ``--format parquet`` without ``--output``,
  a configuration file or a reference file it names that is missing, unreadable, not Parquet
  or without the model's columns);
- status 1, the rest: a file named on the command line that is missing, unreadable or not what
  it should be (a labels CSV without its columns), an unknown model, a database that cannot be
  reached, a port already in use, a processor that refuses the labels.

Without the processor's dependencies (``pip install otel-ml`` installs only the SDK) a command
exits with status 3 and names the extra to install.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from typing import NoReturn, Optional, Sequence

from otel_ml.version import __version__

EXIT_FAILED = 1
EXIT_CONFIG = EXIT_USAGE = 2
EXIT_MISSING_EXTRA = 3
# Top-level modules of the `processor` extra's packages: a command missing one needs the extra.
PROCESSOR_MODULES = frozenset({"numpy", "scipy", "sqlalchemy", "aiohttp", "prometheus_client", "yaml", "orjson",
                               "grpc", "google", "opentelemetry", "bcrypt"})


class CommandError(Exception):
    """One line for the user (``otel-ml <command>: <message>``) and the exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILED):
        super().__init__(message)
        self.status = status


def _database_error(config, exc: BaseException) -> CommandError:
    """A database that cannot be reached (or a URL it cannot use), naming ``storage.url``."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, DBAPIError

    try:
        url = make_url(config.storage.url).render_as_string(hide_password=True)
    except ArgumentError:
        url = config.storage.url
    where = f"storage.url {url!r}" + (f" (in {config.source})" if config.source else "")
    if isinstance(exc, ArgumentError):
        return CommandError(f"{where}: not a database URL: {exc}", EXIT_USAGE)
    reason = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    first = next((line.strip() for line in str(reason).splitlines() if line.strip()), type(reason).__name__)
    return CommandError(f"{where}: cannot use the database: {first}")


def _open_database(config):
    from sqlalchemy.exc import SQLAlchemyError

    from otel_ml_processor.store.database import Database

    try:
        return Database(config.storage.url)
    except SQLAlchemyError as exc:
        raise _database_error(config, exc) from None


def _positive_seconds(text: str) -> float:
    """argparse type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def _writable(path: str, option: str) -> None:
    """Fail before any work when ``path`` cannot be written (its folder missing, a directory, no permission)."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise CommandError(f"{option} {path}: is a directory")
    if not os.path.isdir(folder):
        raise CommandError(f"{option} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise CommandError(f"{option} {path}: permission denied")


def _fail(message: str, status: int = EXIT_FAILED) -> NoReturn:
    raise CommandError(message, status)


def _config(path: Optional[str]):
    from otel_ml_processor.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"otel-ml: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def cmd_processor(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = _config(args.config)
    from sqlalchemy.exc import SQLAlchemyError

    from otel_ml_processor.compute.reference import ReferenceError
    from otel_ml_processor.config import ConfigError
    from otel_ml_processor.service import run

    try:
        run(config)
    except ConfigError as exc:
        print(f"otel-ml: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except SQLAlchemyError as exc:
        raise _database_error(config, exc) from None
    except ReferenceError as exc:
        # a reference file the configuration names is part of the configuration
        raise CommandError(f"cannot start: {exc}", EXIT_CONFIG) from None
    except ValueError as exc:
        raise CommandError(f"cannot start: {exc}", EXIT_CONFIG) from None
    except OSError as exc:
        raise CommandError(f"cannot start: {exc}") from None
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from otel_ml_processor.demo import run_demo

    return run_demo(forever=args.forever, duration=args.duration)


def cmd_labels_import(args: argparse.Namespace) -> int:
    from otel_ml_processor.tools import LabelImportError, import_labels, read_label_file

    token = os.environ.get(args.token_env) if args.token_env else None
    if args.token_env and not token:
        _fail(f"--token-env {args.token_env}: the environment variable is not set", EXIT_USAGE)
    if not args.url.lower().startswith(("http://", "https://")):
        _fail(f"--url {args.url!r}: not an http:// or https:// URL", EXIT_USAGE)
    try:
        labels = read_label_file(args.file, args.model)
        sent, rejected = import_labels(labels, args.url, token=token)
    except LabelImportError as exc:
        raise CommandError(str(exc)) from None
    print(f"sent {sent} labels, {rejected} rejected")
    return 0 if rejected == 0 else 1


def cmd_db_export(args: argparse.Namespace) -> int:
    from otel_ml_processor.config import ConfigError, parse_duration
    from otel_ml_processor.tools import export_rows

    config = _config(args.config)
    try:
        since = parse_duration(args.since, "--since", "command line")
    except ConfigError as exc:
        print(f"otel-ml: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.format == "parquet" and not args.output:
        _fail("--format parquet needs --output FILE", EXIT_USAGE)
    if args.output:
        _writable(args.output, "--output")
    db = _open_database(config)
    try:
        models = sorted({m for m, _v, _t in db.model_versions()})
        if args.model not in models:
            _fail(f"--model {args.model!r}: no such model in the database"
                  + (f" (models: {', '.join(models)})" if models else " (it is empty)"))
        n = export_rows(db, args.model, since, args.format, args.output)
    except OSError as exc:
        raise CommandError(f"--output {args.output}: cannot write: {exc.strerror or exc}") from None
    finally:
        db.close()
    print(f"exported {n} rows of model {args.model!r} to {args.output or 'stdout'}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
    config = _config(args.config)
    from sqlalchemy.exc import SQLAlchemyError

    from otel_ml_processor.compute.reference import ReferenceError
    from otel_ml_processor.report import ReportError, write_report

    if args.output:
        _writable(args.output, "--output")
    try:
        path = write_report(config, args.model, args.version, args.output)
    except ReportError as exc:
        print(f"otel-ml report: {exc}", file=sys.stderr)
        return 1
    except ReferenceError as exc:
        raise CommandError(f"cannot use the reference: {exc}") from None
    except SQLAlchemyError as exc:
        raise _database_error(config, exc) from None
    except OSError as exc:
        raise CommandError(f"--output {args.output}: cannot write: {exc.strerror or exc}") from None
    print(f"wrote {path}", file=sys.stderr)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (the usage itself is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="otel-ml", description="OpenTelemetry-native monitoring for ML services.")
    parser.add_argument("--version", action="version", version=f"otel-ml {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("processor", help="run the processor service (OTLP in, Prometheus metrics out)",
                       description="Receive ml.* OTLP events, store them, join labels, compute ML metrics and serve /metrics.")
    p.add_argument("--config", metavar="FILE", help="YAML configuration (default: every default; SQLite in the current folder)")
    p.add_argument("--log-level", default=os.environ.get("OTEL_ML_LOG_LEVEL", "info"),
                   choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_processor)

    p = sub.add_parser("demo", help="a self-contained first run: processor, model, drift, labels",
                       description="Start a processor on a temporary SQLite, serve a scikit-learn model through the SDK, "
                                   "shift its inputs half way and print the accuracy and drift the processor computes.")
    p.add_argument("--forever", action="store_true", help="keep running (Ctrl-C to stop)")
    p.add_argument("--duration", type=_positive_seconds, default=60.0, help="seconds to run when not --forever (default 60)")
    p.set_defaults(func=cmd_demo)

    labels = sub.add_parser("labels", help="true labels").add_subparsers(dest="labels_command", required=True)
    p = labels.add_parser("import", help="send labels from a CSV file to a running processor",
                          description="CSV columns: model,prediction_id,value (or prediction_id,value with --model).")
    p.add_argument("file")
    p.add_argument("--model", help="the model of every row (the file then has two columns)")
    p.add_argument("--url", default=os.environ.get("OTEL_ML_LABELS_URL", "http://127.0.0.1:4318/v1/labels"))
    p.add_argument("--token-env", default=None, help="environment variable holding the bearer token")
    p.set_defaults(func=cmd_labels_import)

    db = sub.add_parser("db", help="the production ML database").add_subparsers(dest="db_command", required=True)
    p = db.add_parser("export", help="export joined prediction rows for offline analysis")
    p.add_argument("--config", metavar="FILE")
    p.add_argument("--model", required=True)
    p.add_argument("--since", default="1h", help="a duration such as 1h or 7d (default 1h)")
    p.add_argument("--format", choices=["csv", "parquet"], default="csv")
    p.add_argument("--output", help="file to write (default: stdout for csv)")
    p.set_defaults(func=cmd_db_export)

    p = sub.add_parser("report", help="write a model version's page from the database (offline report)",
                       description="Rebuild a model version's window and reference from the database, compute its "
                                   "metrics and write the same page as /models/<name>; the processor may be stopped.")
    p.add_argument("--config", metavar="FILE", help="the processor's YAML configuration (database, models)")
    p.add_argument("--model", required=True)
    p.add_argument("--version", help="model version (default: the latest)")
    p.add_argument("--output", metavar="FILE", help="HTML file to write (default: <model>-<version>.html)")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CommandError as exc:
        command = " ".join(filter(None, (args.command, getattr(args, f"{args.command}_command", None))))
        print(f"otel-ml {command}: {exc}", file=sys.stderr)
        return exc.status
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in PROCESSOR_MODULES and not (args.command == "demo" and missing == "sklearn"):
            raise
        extra = "demo" if args.command == "demo" else "processor"
        print(f"otel-ml: `otel-ml {args.command}` needs the {extra!r} extra ({exc.name} is not installed): "
              f"pip install 'otel-ml[{extra}]'", file=sys.stderr)
        return EXIT_MISSING_EXTRA


if __name__ == "__main__":
    sys.exit(main())
