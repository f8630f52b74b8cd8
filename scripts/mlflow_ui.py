"""Start the MLflow UI on this project's tracking store (`make mlflow-ui [PORT=5000]`).

With the local default the store is the SQLite file under <data_dir>/mlflow, which the UI reads
directly (runs, metrics, the model registry, and the PNG/CSV artifacts under
<data_dir>/mlflow/artifacts). It binds to 127.0.0.1 only. A configured tracking server
(mlflow.tracking_uri) already has a UI: its address is printed instead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
from pathlib import Path


def tcp_port(text: str) -> int:
    """argparse type: a TCP port number a server can bind (1-65535)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 1-65535")
    return port


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"mlflow-ui: error: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = _OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=tcp_port, default=os.environ.get("PORT") or "5000",
                        help="port on 127.0.0.1 (default $PORT or 5000)")
    parser.add_argument("--env", default="local", help="config overlay (default local)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from lakehouse.config import load_config
    from lakehouse.errors import LakehouseError
    from ml.tracking import local_store, tracking_uri

    try:
        config = load_config(args.env)
        store = local_store(config)
        uri = tracking_uri(config)
    except LakehouseError as exc:
        print(f"mlflow-ui: error: {exc}", file=sys.stderr)
        return 2
    if store is None and uri.startswith(("http://", "https://")):
        print(f"MLflow tracking server configured: open {uri} (mlflow.tracking_uri)")
        return 0
    if store is None and not uri.startswith("sqlite:///"):
        print(f"mlflow-ui: error: mlflow.tracking_uri {uri} is neither a server nor a SQLite "
              f"store: open that store's own UI", file=sys.stderr)
        return 2
    # The default store, or a configured SQLite file: the UI reads it directly.
    db = store[0] if store is not None else Path(uri.removeprefix("sqlite:///")).resolve()
    if not db.exists():
        print(f"mlflow-ui: error: no MLflow store at {db} yet: run `make run` (or `lakehouse run "
              f"all`) first", file=sys.stderr)
        return 2
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", args.port))
        except OSError:
            print(f"mlflow-ui: error: port {args.port} on 127.0.0.1 is in use: choose another, "
                  f"e.g. `make mlflow-ui PORT={args.port + 1}`", file=sys.stderr)
            return 2
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    if mlflow is None:
        print("mlflow-ui: error: the mlflow command is not installed: run `make setup`",
              file=sys.stderr)
        return 2
    print(f"MLflow UI: http://127.0.0.1:{args.port}  (store {db}; Ctrl-C stops it)", flush=True)
    os.execv(mlflow, [mlflow, "server", "--backend-store-uri", uri,
                      "--host", "127.0.0.1", "--port", str(args.port), "--workers", "1"])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
