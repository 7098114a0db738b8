"""A local SMTP server that keeps every message it receives as an .eml file.

The embedded default sends the manager alerts here instead of to a real mail server
(Airflow connection `smtp_default` = smtp://127.0.0.1:8025 with the extras
disable_ssl=true and disable_tls=true). It listens on loopback only and accepts anything.
A development tool, not part of the pipeline: production mail goes to a real relay.

    python -m crm_devtools.smtp_sink --dir data/outbox_sink --port 8025     # foreground
    python -m crm_devtools.smtp_sink start --dir data/outbox_sink --port 8025 \
        --pid-file data/smtp_sink.pid                                        # background
    python -m crm_devtools.smtp_sink stop --pid-file data/smtp_sink.pid

From Python: `with SmtpSink(directory) as sink: ... sink.port, sink.messages()`, or
`start_background(...)` / `stop_background(...)`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import email
import email.policy
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8025


class _SaveHandler:
    """aiosmtpd handler: write each message to `<dir>/<utc time>-<n>-<message id>.eml`."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        match = re.search(rb"^Message-ID:\s*<?([^>\r\n]+)>?", raw, re.IGNORECASE | re.MULTILINE)
        ident = (
            re.sub(r"[^A-Za-z0-9._-]+", "_", match.group(1).decode("ascii", "replace"))
            if match
            else "no-id"
        )
        with self._lock:
            n = next(self._counter)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        name = f"{stamp}-{os.getpid()}-{n:04d}-{ident[:80]}.eml"
        envelope_lines = (
            f"X-Sink-Envelope-From: {envelope.mail_from}\r\n"
            f"X-Sink-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode("utf-8", "replace")
        tmp = self.directory / f".{name}.part"
        tmp.write_bytes(envelope_lines + raw)
        tmp.replace(self.directory / name)
        return "250 Message accepted for delivery"


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def is_listening(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when an SMTP server answers with its 220 greeting on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(4).startswith(b"220")
    except OSError:
        return False


class SmtpSink:
    """The sink in a background thread of this process, as a context manager (tests)."""

    def __init__(self, directory: str | Path, port: int | None = None, host: str = DEFAULT_HOST):
        self.directory = Path(directory)
        self.host = host
        self.port = port or free_port(host)
        self._controller = None

    def start(self) -> SmtpSink:
        from aiosmtpd.controller import Controller

        self._controller = Controller(
            _SaveHandler(self.directory), hostname=self.host, port=self.port
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def messages(self) -> list[email.message.EmailMessage]:
        return read_messages(self.directory)


def read_messages(directory: str | Path) -> list[email.message.EmailMessage]:
    """Every .eml in the folder, oldest first, parsed."""
    paths = sorted(Path(directory).glob("*.eml")) if Path(directory).exists() else []
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in paths]


def serve(directory: str | Path, port: int = DEFAULT_PORT, host: str = DEFAULT_HOST) -> None:
    """Run in the foreground until SIGTERM or SIGINT."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with SmtpSink(directory, port, host):
        print(
            f"smtp_sink: listening on {host}:{port}, saving to {Path(directory).resolve()}",
            flush=True,
        )
        stop.wait()
    print("smtp_sink: stopped", flush=True)


# -- background process helpers (the run script) -----------------------------------------
_children: dict[int, subprocess.Popen] = {}


def _alive(pid: int) -> bool:
    proc = _children.get(pid)
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def start_background(
    directory: str | Path,
    port: int = DEFAULT_PORT,
    pid_file: str | Path = "smtp_sink.pid",
    host: str = DEFAULT_HOST,
    log_file: str | Path | None = None,
    timeout: float = 15.0,
) -> int:
    """Start the sink as its own process, write its pid, return once it is listening.

    A sink already running from the same pid file is reused. A port held by something
    else is an error (a different server would swallow the alerts).
    """
    pid_file = Path(pid_file)
    pid = _read_pid(pid_file)
    if pid and _alive(pid) and is_listening(host, port):
        return pid
    if is_listening(host, port):
        raise RuntimeError(f"smtp_sink: {host}:{port} is already served by another process")
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_file) if log_file else pid_file.with_suffix(".log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "crm_devtools.smtp_sink",
                "serve",
                "--dir",
                str(directory),
                "--port",
                str(port),
                "--host",
                host,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    pid_file.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pid_file.unlink(missing_ok=True)
            raise RuntimeError(f"smtp_sink: exited with {proc.returncode} at start; see {log_path}")
        if is_listening(host, port, timeout=0.5):
            return proc.pid
        time.sleep(0.1)
    stop_background(pid_file)
    raise RuntimeError(
        f"smtp_sink: not listening on {host}:{port} after {timeout:.0f}s; see {log_path}"
    )


def stop_background(pid_file: str | Path = "smtp_sink.pid", timeout: float = 10.0) -> bool:
    """Stop the sink started with this pid file; False when none was running."""
    pid_file = Path(pid_file)
    pid = _read_pid(pid_file)
    if not pid or not _alive(pid):
        pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    proc = _children.pop(pid, None)
    if proc is not None:
        proc.wait(timeout=timeout)
    pid_file.unlink(missing_ok=True)
    return True


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("serve", "start", "stop"):
        argv = ["serve", *argv]
    parser = argparse.ArgumentParser(
        prog="python -m crm_devtools.smtp_sink", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "start"):
        p = sub.add_parser(name)
        p.add_argument("--dir", default="data/outbox_sink", help="folder for the .eml files")
        p.add_argument("--port", type=int, default=DEFAULT_PORT)
        p.add_argument("--host", default=DEFAULT_HOST)
        if name == "start":
            p.add_argument("--pid-file", default="data/smtp_sink.pid")
    p = sub.add_parser("stop")
    p.add_argument("--pid-file", default="data/smtp_sink.pid")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.dir, args.port, args.host)
    elif args.command == "start":
        pid = start_background(args.dir, args.port, args.pid_file, args.host)
        print(f"smtp_sink: running (pid {pid}) on {args.host}:{args.port}, saving to {args.dir}")
    else:
        stopped = stop_background(args.pid_file)
        print("smtp_sink: stopped" if stopped else "smtp_sink: was not running")


if __name__ == "__main__":
    main()
