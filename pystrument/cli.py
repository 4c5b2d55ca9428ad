"""The `pystrument` command: run the platform, manage projects, try the demo.

pystrument up                 store (embedded unless PYSTRUMENT_MONGODB_URL) + receiver + UI
pystrument receiver           the OTLP receiver alone, against PYSTRUMENT_MONGODB_URL
pystrument analyzer           an analysis worker (any number share one job queue)
pystrument ui                 the Streamlit UI (`up` starts it too), on http://127.0.0.1:8501
pystrument projects create N  create a project and print its key (shown once)
pystrument projects list      list projects (never their keys)
pystrument demo               run the example Flask app against a running `pystrument up`
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from pystrument import __version__
from pystrument.settings import ServerSettings, load_settings

logger = logging.getLogger("pystrument")

EPILOG = """\
Configuration: flags override PYSTRUMENT_* environment variables, which override the YAML
file given by --config or PYSTRUMENT_CONFIG. Keys: see docs/configuration.md.
Key environment variables:
  PYSTRUMENT_MONGODB_URL   MongoDB to use (unset: start the embedded server)
  PYSTRUMENT_DATA_DIR      where the embedded store keeps its data
                           (default ~/.local/share/pystrument)
  PYSTRUMENT_GRPC_PORT     OTLP/gRPC port (default 4317)
  PYSTRUMENT_HTTP_PORT     OTLP/HTTP (/v1/traces), REST API, /metrics port (default 4318)
  PYSTRUMENT_LOG_FORMAT    text (default) or json
Every flag has a PYSTRUMENT_<FLAG> variable (e.g. PYSTRUMENT_INGEST_MAX_INFLIGHT_SPANS).
The receiver is described in docs/receiver.md.
"""


def _add_server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML configuration file (also PYSTRUMENT_CONFIG)")
    p.add_argument("--mongodb-url", help="MongoDB URL (also PYSTRUMENT_MONGODB_URL)")
    p.add_argument("--data-dir", help="data directory of the embedded store")
    p.add_argument("--grpc-host", help="OTLP/gRPC bind address (default 0.0.0.0)")
    p.add_argument("--grpc-port", type=int, help="OTLP/gRPC port (default 4317; 0 = any free)")
    p.add_argument("--http-host", help="HTTP bind address (default 0.0.0.0)")
    p.add_argument("--http-port", type=int, help="HTTP port: OTLP/HTTP, REST API (default 4318)")
    p.add_argument("--grpc-max-message-bytes", type=int, help="largest OTLP/gRPC message")
    p.add_argument("--grpc-max-workers", type=int, help="gRPC handler threads (default 16)")
    p.add_argument(
        "--grpc-max-concurrent-streams", type=int, help="per gRPC connection (default 100)"
    )
    p.add_argument(
        "--grpc-keepalive-seconds",
        type=float,
        help="keepalive ping interval on idle gRPC connections (default: gRPC's)",
    )
    p.add_argument(
        "--http-max-body-bytes",
        type=int,
        help="largest OTLP/HTTP body after decompression (default 20 MiB; larger: 413)",
    )
    p.add_argument(
        "--http-max-inflight-body-bytes",
        type=int,
        help="OTLP/HTTP body bytes held at once; beyond it: 429 + Retry-After (default 100 MiB)",
    )
    p.add_argument(
        "--ingest-max-inflight-spans",
        type=int,
        help="spans held in memory at once; beyond it exporters get RESOURCE_EXHAUSTED/429 "
        "with a retry hint (default 100000)",
    )
    p.add_argument("--ingest-max-batch-spans", type=int, help="most spans per group-commit write")
    p.add_argument("--ingest-writers", type=int, help="group-commit writer threads (default 2)")
    p.add_argument(
        "--ingest-retry-after-seconds",
        type=float,
        help="retry hint sent with RESOURCE_EXHAUSTED/429 when busy (default 1.0)",
    )
    p.add_argument(
        "--ingest-admission-wait-seconds",
        type=float,
        help="how long an export over --ingest-max-inflight-spans waits for room before it "
        "is refused (default 0.5; 0 = refuse at once)",
    )
    p.add_argument(
        "--max-span-attributes",
        type=int,
        help="spans with more attributes are rejected via partial_success (default 1024)",
    )
    p.add_argument("--tls-cert-file", help="TLS certificate (PEM) for the receiver")
    p.add_argument("--tls-key-file", help="TLS private key (PEM) for the receiver")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--log-format", choices=["text", "json"], help="json: one object per line")


def _add_ui_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ui-port", type=int, help="UI port (default 8501; PYSTRUMENT_UI_PORT)")
    p.add_argument("--ui-address", help="UI bind address (default 127.0.0.1; "
                   "PYSTRUMENT_UI_ADDRESS)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pystrument",
        description="pystrument: pyinstrument call trees of your slow requests, over "
        "OpenTelemetry (OTLP), stored in MongoDB.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pystrument {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    up = sub.add_parser(
        "up",
        help="run the whole platform: store (embedded by default) and OTLP receiver",
        description="Start the store (the embedded MongoDB-compatible server unless "
        "PYSTRUMENT_MONGODB_URL is set) and the OTLP receiver (gRPC on 4317, HTTP on 4318 "
        "with /v1/traces, /metrics, /health, /ready); create the default "
        "project on first start and print its key. Ctrl-C or SIGTERM stops everything.",
    )
    _add_server_flags(up)
    up.add_argument("--no-analyzer", action="store_true",
                    help="do not run an analysis worker in this process")  # fmt: skip
    up.add_argument("--concurrency", type=int, help="jobs the built-in analysis worker runs "
                    "at once (default 1)")  # fmt: skip
    _add_ui_flags(up)
    up.add_argument("--no-ui", action="store_true", help="do not start the Streamlit UI")

    ui = sub.add_parser(
        "ui",
        help="run the Streamlit UI (http://127.0.0.1:8501) on the store",
        description="Run the web UI: overview, endpoints, requests with their call trees, "
        "analyses, version comparison, projects. It reads PYSTRUMENT_MONGODB_URL, or the store "
        "of a `pystrument up` on this data directory. It binds 127.0.0.1 unless told "
        "otherwise; bound elsewhere it asks for the admin token (PYSTRUMENT_ADMIN_TOKEN, or "
        "the one `pystrument up` generated). Ctrl-C or SIGTERM stops it.",
    )
    _add_ui_flags(ui)
    ui.add_argument("--config", help="YAML configuration file (also PYSTRUMENT_CONFIG)")
    ui.add_argument("--mongodb-url", help="MongoDB URL (also PYSTRUMENT_MONGODB_URL)")
    ui.add_argument("--data-dir", help="data directory of a `pystrument up` to read")
    ui.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    receiver = sub.add_parser(
        "receiver",
        help="run the OTLP receiver alone against PYSTRUMENT_MONGODB_URL",
        description="Run only the OTLP/gRPC receiver. Needs PYSTRUMENT_MONGODB_URL (or "
        "--mongodb-url): receivers are stateless and share one MongoDB.",
    )
    _add_server_flags(receiver)

    analyzer = sub.add_parser(
        "analyzer",
        help="run an analysis worker: claims jobs (analyze, batch_analyze, report, cleanup)",
        description="Run an analysis worker against the store (PYSTRUMENT_MONGODB_URL, or the "
        "store of a `pystrument up` on this data directory). Workers claim jobs from one "
        "queue in MongoDB with a lease, so any number may run on any number of machines; a "
        "job of a worker that died is retried once its lease expires. Analyzers and queue "
        "settings come from the `analysis:` section of the YAML config (docs/analysis.md). "
        "Ctrl-C or SIGTERM stops claiming and lets running jobs finish.",
    )
    analyzer.add_argument("--concurrency", type=int, help="jobs run at once (default 1)")
    analyzer.add_argument("--config", help="YAML configuration file (also PYSTRUMENT_CONFIG)")
    analyzer.add_argument("--mongodb-url", help="MongoDB URL (also PYSTRUMENT_MONGODB_URL)")
    analyzer.add_argument("--data-dir", help="data directory of a `pystrument up` to join")
    analyzer.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    projects = sub.add_parser("projects", help="create and list projects")
    psub = projects.add_subparsers(dest="projects_command", metavar="ACTION", required=True)
    create = psub.add_parser("create", help="create a project and print its key (shown once)")
    create.add_argument("name")
    create.add_argument("--description", default="")
    create.add_argument(
        "--framework", default="other", choices=["flask", "django", "fastapi", "other"]
    )
    create.add_argument("--json", action="store_true", help="machine-readable output")
    _add_server_flags(create)
    listing = psub.add_parser("list", help="list projects (keys are never shown)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    _add_server_flags(listing)
    rotate = psub.add_parser("rotate-key", help="give a project a new key; the old one stops")
    rotate.add_argument("name")
    rotate.add_argument("--json", action="store_true", help="machine-readable output")
    _add_server_flags(rotate)

    demo = sub.add_parser(
        "demo",
        help="run the example Flask app against a running `pystrument up` and send traffic",
        description="Runs examples/flask_app with pystrument's processor, exporting to the "
        "receiver, drives some requests through it, and reports what arrived. Every demo "
        "request is profiled with pyinstrument's per-call hook (PYSTRUMENT_PROFILER_MODE="
        "pyinstrument, no cap), so that each carries a tree; the default for your apps is "
        "the sampling thread.",
    )
    demo.add_argument("--endpoint", help="OTLP/gRPC endpoint (default http://localhost:4317)")
    demo.add_argument("--key", help="project key (default: PYSTRUMENT_PROJECT_KEY, or the key "
                      "file `pystrument up` keeps in the data dir)")  # fmt: skip
    demo.add_argument("--requests", type=int, default=30, help="how many requests to send")
    demo.add_argument("--data-dir", help="data directory of `pystrument up`")
    return parser


def _settings(args: argparse.Namespace) -> ServerSettings:
    return load_settings(
        getattr(args, "config", None),
        mongodb_url=getattr(args, "mongodb_url", None),
        data_dir=getattr(args, "data_dir", None),
        grpc_host=getattr(args, "grpc_host", None),
        grpc_port=getattr(args, "grpc_port", None),
        grpc_max_message_bytes=getattr(args, "grpc_max_message_bytes", None),
        grpc_max_workers=getattr(args, "grpc_max_workers", None),
        grpc_max_concurrent_streams=getattr(args, "grpc_max_concurrent_streams", None),
        grpc_keepalive_seconds=getattr(args, "grpc_keepalive_seconds", None),
        ingest_retry_after_seconds=getattr(args, "ingest_retry_after_seconds", None),
        ingest_admission_wait_seconds=getattr(args, "ingest_admission_wait_seconds", None),
        http_max_body_bytes=getattr(args, "http_max_body_bytes", None),
        http_max_inflight_body_bytes=getattr(args, "http_max_inflight_body_bytes", None),
        ingest_max_inflight_spans=getattr(args, "ingest_max_inflight_spans", None),
        ingest_max_batch_spans=getattr(args, "ingest_max_batch_spans", None),
        ingest_writers=getattr(args, "ingest_writers", None),
        max_span_attributes=getattr(args, "max_span_attributes", None),
        log_format=getattr(args, "log_format", None),
        http_host=getattr(args, "http_host", None),
        http_port=getattr(args, "http_port", None),
        tls_cert_file=getattr(args, "tls_cert_file", None),
        tls_key_file=getattr(args, "tls_key_file", None),
        log_level=getattr(args, "log_level", None),
        analyzer_concurrency=getattr(args, "concurrency", None),
        analyzer_enabled=False if getattr(args, "no_analyzer", False) else None,
        ui_enabled=False if getattr(args, "no_ui", False) else None,
        ui_port=getattr(args, "ui_port", None),
        ui_address=getattr(args, "ui_address", None),
    )


def _configure_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        from pystrument.log_format import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level), handlers=[handler])


class _StopSignal:
    """SIGTERM and Ctrl-C as one event, installed before anything starts, so a signal that
    arrives during start-up still leads to a clean shutdown."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous = signal.signal(signal.SIGTERM, lambda *_: self.event.set())

    def wait(self) -> None:
        try:
            while not self.event.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def cmd_serve(args: argparse.Namespace, *, with_default_project: bool) -> int:
    from pystrument.server import (
        Receiver,
        ensure_admin_token,
        ensure_default_project,
        remove_runtime_info,
        write_runtime_info,
    )
    from storage_backend import Store, StoreError

    settings = _settings(args)
    _configure_logging(settings.log_level, settings.log_format)
    if not with_default_project and not settings.mongodb_url:
        print(
            "pystrument receiver: set PYSTRUMENT_MONGODB_URL (or --mongodb-url); "
            "use `pystrument up` for the embedded store",
            file=sys.stderr,
        )
        return 2
    stop = _StopSignal()
    try:
        store = Store.open(settings.store_settings())
    except StoreError as exc:
        stop.restore()
        print(f"pystrument: cannot open the store: {exc}", file=sys.stderr)
        return 1
    receiver = None
    worker = None
    ui_process = None
    try:
        default = None
        if with_default_project:
            default = ensure_default_project(
                store, settings.data_dir, keep_key_file=store.embedded is not None
            )
        admin = ensure_admin_token(settings, generate=with_default_project)
        receiver = Receiver(store, settings, admin_token=admin.token)
        receiver.start()
        if with_default_project and settings.analyzer_enabled:
            worker = _start_worker(store, settings)
        scheme = "https" if receiver.tls else "http"
        host = "localhost" if settings.grpc_host in ("0.0.0.0", "::") else settings.grpc_host
        lines = [
            "",
            "pystrument is up.",
            f"  OTLP/gRPC endpoint : {scheme}://{host}:{receiver.grpc_port}",
            f"  HTTP               : {scheme}://{host}:{receiver.http_port}"
            "  (OTLP/HTTP /v1/traces, /metrics, /health, /docs)",
            f"  MongoDB            : {store.url}"
            + ("  (embedded, data in " + str(settings.data_dir) + ")" if store.embedded else ""),
        ]
        if worker is not None:
            lines.append(
                f"  Analysis worker    : {worker.concurrency} job(s) at a time, default "
                f"analyzer {settings.analysis.default_service!r}"
            )
        if admin.source in ("generated", "file"):
            lines.append(
                f"  Admin token        : {admin.token}  (REST API management; kept in "
                f"{settings.data_dir}/admin.token)"
            )
        elif admin.source == "none":
            lines.append(
                "  Admin token        : not set (PYSTRUMENT_ADMIN_TOKEN): "
                "project management API off"
            )
        if default is not None:
            if default.key:
                lines.append(f"  Project 'default'  : key {default.key}")
            else:
                lines.append(
                    "  Project 'default'  : key not shown again; "
                    "`pystrument projects rotate-key default` makes a new one"
                )
            lines += [
                "",
                "Point an app at it:",
                f"  export OTEL_EXPORTER_OTLP_ENDPOINT={scheme}://{host}:{receiver.grpc_port}",
                "  export PYSTRUMENT_PROJECT_KEY=<the key above>",
                "Try it: `make demo` (or `pystrument demo`) in another shell. Ctrl-C stops.",
            ]
        print("\n".join(lines), flush=True)
        if with_default_project and settings.ui_enabled:
            ui_process = _start_ui_child(settings, store.url, receiver, admin.token)
        if with_default_project:
            write_runtime_info(
                settings.data_dir,
                {
                    "grpc_endpoint": f"{scheme}://{host}:{receiver.grpc_port}",
                    "http_endpoint": f"{scheme}://{host}:{receiver.http_port}",
                    "mongodb_url": store.url,
                    "database": settings.mongodb_database,
                    "pid": os.getpid(),
                    "ui_url": _ui_url(settings) if ui_process is not None else None,
                },
            )
        stop.wait()
        print("pystrument: shutting down...", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("pystrument: interrupted during start-up, shutting down...", file=sys.stderr)
    finally:
        stop.restore()
        if ui_process is not None:
            from pystrument.ui_launcher import stop_ui

            stop_ui(ui_process)
        if receiver is not None:
            receiver.stop()
        if worker is not None:
            worker.stop()
        if with_default_project:
            remove_runtime_info(settings.data_dir)
        store.close()
    print("pystrument: stopped.", file=sys.stderr, flush=True)
    return 0


def _start_ui_child(settings: ServerSettings, mongodb_url: str, receiver: Any, token: Any) -> Any:
    """The UI as a child of `pystrument up`, on this store and receiver."""
    from pystrument.ui_launcher import start_ui, ui_command, ui_environment

    scheme = "https" if receiver.tls else "http"
    host = "localhost" if settings.grpc_host in ("0.0.0.0", "::") else settings.grpc_host
    env = ui_environment(
        settings,
        address=settings.ui_address,
        mongodb_url=mongodb_url,
        otlp_endpoint=f"{scheme}://{host}:{receiver.grpc_port}",
        admin_token=token,
    )
    process = start_ui(ui_command(settings.ui_port, settings.ui_address), env)
    print(f"  UI                 : {_ui_url(settings)}", flush=True)
    return process


def _ui_url(settings: ServerSettings) -> str:
    host = "localhost" if settings.ui_address in ("127.0.0.1", "::1") else settings.ui_address
    return f"http://{host}:{settings.ui_port}"


def cmd_ui(args: argparse.Namespace) -> int:
    """Run the UI in the foreground until it exits, Ctrl-C or SIGTERM."""
    from pystrument.ui_launcher import start_ui, stop_ui, ui_command, ui_environment

    settings = _settings(args)
    _configure_logging(settings.log_level)
    env = ui_environment(settings, address=settings.ui_address)
    if "PYSTRUMENT_MONGODB_URL" not in env:
        print("pystrument ui: no PYSTRUMENT_MONGODB_URL and no running `pystrument up` found; "
              "the UI starts the embedded store on " + str(settings.data_dir),
              file=sys.stderr)  # fmt: skip
    stop = _StopSignal()
    process = start_ui(ui_command(settings.ui_port, settings.ui_address), env)
    print(f"pystrument UI on http://{settings.ui_address}:{settings.ui_port}  (Ctrl-C stops)",
          flush=True)  # fmt: skip
    try:
        while process.poll() is None and not stop.event.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        stop.restore()
        stop_ui(process)
    return process.returncode if process.returncode and process.returncode > 0 else 0


def _start_worker(store: Any, settings: ServerSettings) -> Any:
    from analysis_service import Worker

    worker = Worker(store, settings.analysis, concurrency=settings.analyzer_concurrency)
    worker.start()
    return worker


def cmd_analyzer(args: argparse.Namespace) -> int:
    from pystrument.server import open_admin_store
    from storage_backend import StoreError

    settings = _settings(args)
    _configure_logging(settings.log_level)
    stop = _StopSignal()
    try:
        store = open_admin_store(settings)
        store.ensure_schema()
    except StoreError as exc:
        stop.restore()
        print(f"pystrument: cannot open the store: {exc}", file=sys.stderr)
        return 1
    worker = None
    try:
        worker = _start_worker(store, settings)
        print(
            f"pystrument analyzer {worker.worker_id} running {settings.analyzer_concurrency} "
            f"job(s) at a time on {store.url}; default analyzer "
            f"{settings.analysis.default_service!r}. Ctrl-C stops.",
            flush=True,
        )
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop.restore()
        if worker is not None:
            worker.stop()
        store.close()
    print("pystrument analyzer: stopped.", file=sys.stderr, flush=True)
    return 0


def _open_store_for_admin(args: argparse.Namespace) -> Any:
    from pystrument.server import open_admin_store

    settings = _settings(args)
    _configure_logging("WARNING" if settings.log_level == "INFO" else settings.log_level)
    return open_admin_store(settings)


def cmd_projects(args: argparse.Namespace) -> int:
    from storage_backend import ProjectNameExistsError, StoreError

    try:
        store = _open_store_for_admin(args)
    except StoreError as exc:
        print(f"pystrument: cannot open the store: {exc}", file=sys.stderr)
        return 1
    try:
        if args.projects_command == "create":
            try:
                project, key = store.projects.create(
                    args.name, description=args.description, framework=args.framework
                )
            except ProjectNameExistsError as exc:
                print(f"pystrument: {exc}", file=sys.stderr)
                return 1
            if args.json:
                print(json.dumps({"id": project.id, "name": project.name, "key": key}))
            else:
                print(f"Created project {project.name!r} ({project.id}).")
                print(f"Key (shown once, keep it secret): {key}")
        elif args.projects_command == "rotate-key":
            project = store.projects.find_by_name(args.name)
            if project is None:
                print(f"pystrument: no project named {args.name!r}", file=sys.stderr)
                return 1
            key = store.projects.rotate_key(project.id)
            if args.json:
                print(json.dumps({"id": project.id, "name": project.name, "key": key}))
            else:
                print(f"New key for {project.name!r} (shown once; the old key no longer works):")
                print(key)
        else:
            projects = store.projects.list()
            if args.json:
                print(json.dumps([_project_json(p) for p in projects]))
            elif not projects:
                print("No projects yet: `pystrument projects create NAME`.")
            else:
                print(f"{'ID':<18} {'NAME':<24} {'KEY PREFIX':<14} LAST ACTIVITY")
                for p in projects:
                    activity = (
                        p.last_activity.isoformat(timespec="seconds") if p.last_activity else "-"
                    )
                    print(f"{p.id:<18} {p.name:<24} {p.key_prefix + '…':<14} {activity}")
    finally:
        store.close()
    return 0


def _project_json(p: Any) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "framework": p.framework,
        "status": p.status,
        "key_prefix": p.key_prefix,
        "created_at": p.created_at.isoformat(),
        "last_activity": p.last_activity.isoformat() if p.last_activity else None,
    }


def cmd_demo(args: argparse.Namespace) -> int:
    from pystrument.demo import run_demo

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_demo(
        endpoint=args.endpoint, key=args.key, requests=args.requests, data_dir=args.data_dir
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "up":
        return cmd_serve(args, with_default_project=True)
    if args.command == "receiver":
        return cmd_serve(args, with_default_project=False)
    if args.command == "analyzer":
        return cmd_analyzer(args)
    if args.command == "projects":
        return cmd_projects(args)
    if args.command == "ui":
        return cmd_ui(args)
    if args.command == "demo":
        return cmd_demo(args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
