"""The `lakehouse` command. Every user mistake ends in one clear line and a non-zero exit."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from lakehouse.argtypes import as_of_date, output_file, positive_int
from lakehouse.errors import LakehouseError, error_line
from lakehouse.pipeline import ON_DEMAND_STAGES, PINNABLE_STAGES, STAGE_ORDER

_PINNABLE = ", ".join(PINNABLE_STAGES)

SCALES = ("xs", "s", "m", "l")
# Modules that add their own sub-commands: each defines
# ``add_commands(sub, common) -> dict[name, handler(args) -> exit code]``.
COMMAND_MODULES = ("lakehouse.audit.commands", "lakehouse.privacy.commands")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (what was wrong, and where to look)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def _order(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if not 0 <= value <= 4:
        raise argparse.ArgumentTypeError(f"order {value} is not supported: use 1 to 4, or 0 (automatic)")
    return value


def _table_version(text: str) -> tuple[str, int]:
    table, sep, version = text.partition("=")
    if not sep or not table.strip():
        raise argparse.ArgumentTypeError(f"'{text}' is not TABLE=VERSION (e.g. silver.orders=3)")
    try:
        number = int(version)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{version}' in '{text}' is not a version number") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"version {number} in '{text}' must be 0 or more")
    return table.strip(), number


def _table_timestamp(text: str) -> tuple[str | None, datetime]:
    from lakehouse.audit.timetravel import parse_timestamp

    table, sep, when = text.partition("=")
    if not sep:
        table, when = "", text
    try:
        return (table.strip() or None), parse_timestamp(when)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lakehouse",
        description="Spark lakehouse job suite for customer data (Delta Lake + MLflow).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    parser.commands = sub.choices  # type: ignore[attr-defined]
    sub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--env", default="local", help="config overlay conf/ENV.yaml (default local)")
        p.add_argument("--conf-dir", default=None, help="folder of the YAML config (default conf/)")

    gen = sub.add_parser("generate", help="write synthetic raw data for all six sources")
    gen.add_argument("--scale", required=True, choices=SCALES, help="data size: xs s m l")
    gen.add_argument("--seed", type=int, default=None, help="random seed (default from config)")
    gen.add_argument("--days", type=positive_int, default=None,
                     help="number of daily batches (default depends on the scale)")
    gen.add_argument("--no-progress", action="store_true",
                     help="no progress bar (there is none when stderr is not a terminal)")
    common(gen)

    run = sub.add_parser("run", help="run a pipeline stage, or all of them in order")
    run.add_argument("stage", choices=(*STAGE_ORDER, *ON_DEMAND_STAGES, "all"), metavar="STAGE",
                     help=f"one of: {', '.join((*STAGE_ORDER, 'all'))}; on demand: "
                          f"{', '.join(ON_DEMAND_STAGES)}")
    run.add_argument("--as-of", type=as_of_date, default=None,
                     help="date the figures are valid for (YYYY-MM-DD)")
    run.add_argument("--as-of-version", type=_table_version, action="append", default=[],
                     metavar="TABLE=VERSION",
                     help=f"read input TABLE at VERSION (repeatable; stages {_PINNABLE})")
    run.add_argument("--as-of-timestamp", type=_table_timestamp, action="append", default=[],
                     metavar="[TABLE=]TIMESTAMP",
                     help="read input TABLE (or, without TABLE=, every input) as it was at "
                          f"TIMESTAMP, e.g. 2026-01-03T12:00:00Z (stages {_PINNABLE})")
    common(run)

    attr = sub.add_parser("attribution", help="Markov attribution of a path file")
    attr.add_argument("--paths", required=True,
                      help="CSV: path;total_conversions;total_conversion_value;total_null")
    attr.add_argument("--order", type=_order, default=1,
                      help="Markov order 1-4 (default 1); 0 = choose automatically")
    attr.add_argument("--auto-order", action="store_true", help="choose the order by hold-out")
    attr.add_argument("--output", type=output_file, default=None, help="write the result as CSV here")

    for module_name in COMMAND_MODULES:
        if _module_exists(module_name):
            module = importlib.import_module(module_name)
            COMMANDS.update(module.add_commands(sub, common))
    return parser


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # its package is not there either
        return False


def _cmd_generate(args: argparse.Namespace) -> int:
    from lakehouse.catalog import Catalog, ensure_data_dir_writable
    from lakehouse.config import load_config
    from lakehouse.generate import generate
    from lakehouse.session import stderr_is_terminal

    config = load_config(args.env, args.conf_dir)
    ensure_data_dir_writable(config)
    if not config.is_local_data_dir:
        raise LakehouseError("generate writes to a local data_dir only; set LAKEHOUSE_DATA_DIR")
    seed = args.seed if args.seed is not None else config.get("generate.seed")
    started = time.monotonic()
    out = Catalog(config).raw_root
    manifest = generate(
        out, args.scale, seed=seed, days=args.days,
        start_date=config.get("generate.start_date"),
        progress=not args.no_progress and stderr_is_terminal(),
    )
    print(f"generated scale {args.scale} (seed {seed}, {manifest.get('days')} days) in {out} "
          f"in {time.monotonic() - started:.1f}s")
    for name, info in manifest.get("sources", {}).items():
        print(f"  {name:<14} {info.get('rows', 0):>10,} rows in {info.get('files', 0)} files")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from lakehouse.catalog import ensure_data_dir_writable
    from lakehouse.config import load_config
    from lakehouse.pipeline import RunContext, new_run_id, run_stages
    from lakehouse.session import get_spark

    config = load_config(args.env, args.conf_dir)
    ensure_data_dir_writable(config)
    spark = get_spark(config)
    from lakehouse.catalog import parse_table_name

    for table, _ in [*args.as_of_version, *args.as_of_timestamp]:
        if table is not None:
            parse_table_name(table)
    run_wide = [when for table, when in args.as_of_timestamp if table is None]
    if len(run_wide) > 1:
        raise LakehouseError("--as-of-timestamp without TABLE= may be given once")
    pinned = [t for t, _ in args.as_of_version] + [t for t, _ in args.as_of_timestamp if t]
    twice = sorted({t for t in pinned if pinned.count(t) > 1})
    if twice:
        # The last pin silently won: a build from another version than one of those asked.
        raise LakehouseError(
            f"{', '.join(twice)} pinned more than once (--as-of-version / --as-of-timestamp "
            f"TABLE=): give one version or timestamp per table"
        )
    ctx = RunContext(
        run_id=new_run_id(), as_of=args.as_of,
        as_of_versions=dict(args.as_of_version),
        as_of_timestamps={t: w for t, w in args.as_of_timestamp if t is not None},
        as_of_timestamp=run_wide[0] if run_wide else None,
    )
    run_stages(spark, config, args.stage, ctx, echo=print)
    return 0


def _cmd_attribution(args: argparse.Namespace) -> int:
    from ml.attribution.pathfile import run_path_file

    order = None if args.auto_order or args.order == 0 else args.order
    result = run_path_file(args.paths, order=order, output=args.output)
    if args.output is None:
        print(result.to_csv(index=False), end="")
    else:
        print(f"wrote {len(result)} channels to {args.output}")
    return 0


def _is_spark_error(exc: BaseException) -> bool:
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    # Errors Spark does not convert (an OutOfMemoryError, say) arrive as Py4JJavaError.
    return isinstance(exc, PySparkException | Py4JJavaError)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


COMMANDS.update(generate=_cmd_generate, run=_cmd_run, attribution=_cmd_attribution)


def _write_notes(exc: BaseException) -> None:
    """The other failures of steps run side by side with the one reported (parallel)."""
    for note in getattr(exc, "__notes__", ()):
        sys.stderr.write(f"lakehouse: error: {note}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # Said by the sub-command's parser, so the hint points at its own --help.
        owner = parser.commands.get(getattr(args, "command", None) or "", parser)
        owner.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return COMMANDS[args.command](args)
    except LakehouseError as exc:
        sys.stderr.write(f"lakehouse: error: {exc}\n")
        _write_notes(exc)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - Spark's own errors: one line unless debugging
        if os.environ.get("LAKEHOUSE_DEBUG") or not _is_spark_error(exc):
            raise
        from lakehouse.catalog import storage_refusal

        refusal = storage_refusal(str(exc))  # a bad environment, not a fault of Spark's
        if refusal is not None:
            sys.stderr.write(f"lakehouse: error: {refusal} (LAKEHOUSE_DEBUG=1 for the trace)\n")
            _write_notes(exc)
            return refusal.exit_code
        sys.stderr.write(
            f"lakehouse: error: Spark failed: {error_line(exc)} (LAKEHOUSE_DEBUG=1 for the trace)\n"
        )
        _write_notes(exc)
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("lakehouse: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
