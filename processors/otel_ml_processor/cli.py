"""The ``otel-ml`` command.

Usage::

    otel-ml processor [--config FILE]          run the processor service
    otel-ml demo [--forever]                   a self-contained first run (no download)
    otel-ml labels import FILE.csv [--model M] send true labels to a running processor
    otel-ml db export --model M [--since 1h] [--format csv|parquet] [--output FILE]
    otel-ml report --config FILE --model M [--version V] [--output report.html]
    otel-ml --version

A configuration error (unknown key, wrong type, unreadable file) exits with status 2 and a
message naming the key and the file. Without the processor's dependencies (``pip install
otel-ml`` installs only the SDK) a command exits with status 3 and names the extra to install.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

from otel_ml.version import __version__

EXIT_CONFIG = 2
EXIT_MISSING_EXTRA = 3
# Top-level modules of the `processor` extra's packages: a command missing one needs the extra.
PROCESSOR_MODULES = frozenset({"numpy", "scipy", "sqlalchemy", "aiohttp", "prometheus_client", "yaml", "orjson",
                               "grpc", "google", "opentelemetry", "bcrypt"})


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
    from otel_ml_processor.compute.reference import ReferenceError
    from otel_ml_processor.service import run

    from otel_ml_processor.config import ConfigError

    try:
        run(config)
    except ConfigError as exc:
        print(f"otel-ml: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (ReferenceError, ValueError) as exc:
        print(f"otel-ml: cannot start: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"otel-ml: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from otel_ml_processor.demo import run_demo

    return run_demo(forever=args.forever, duration=args.duration)


def cmd_labels_import(args: argparse.Namespace) -> int:
    from otel_ml_processor.tools import import_labels

    token = os.environ.get(args.token_env) if args.token_env else None
    sent, rejected = import_labels(args.file, args.url, model=args.model, token=token)
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
    n = export_rows(config, args.model, since, args.format, args.output)
    print(f"exported {n} rows of model {args.model!r} to {args.output or 'stdout'}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
    config = _config(args.config)
    from otel_ml_processor.compute.reference import ReferenceError
    from otel_ml_processor.report import ReportError, write_report

    try:
        path = write_report(config, args.model, args.version, args.output)
    except ReportError as exc:
        print(f"otel-ml report: {exc}", file=sys.stderr)
        return 1
    except ReferenceError as exc:
        print(f"otel-ml report: cannot use the reference: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"wrote {path}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-ml", description="OpenTelemetry-native monitoring for ML services.")
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
    p.add_argument("--duration", type=float, default=60.0, help="seconds to run when not --forever (default 60)")
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
