"""Child processes the demo owns: started with a log file each, stopped together, always.

``ProcessGroup`` starts each child in its own session (so a Ctrl-C in the terminal reaches
only the demo, which then stops the children in order) and stops them in reverse start
order: SIGTERM, a grace period, then SIGKILL for the whole process group (Celery's prefork
children included). Readiness is checked by the caller (``wait_http``, ``wait_for_log``).

| helper | does |
|---|---|
| ``free_port()`` | a free loopback TCP port |
| ``ProcessGroup.start(name, argv, env, log)`` | start a child, output to ``log`` |
| ``ProcessGroup.stop_all(grace)`` | stop every child still running (reverse order) |
| ``wait_http(url, ...)`` | poll until a URL answers (any status below 500) |
| ``wait_for_log(process, text, ...)`` | poll the child's log until it contains ``text`` |
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

__all__ = [
    "ChildExited",
    "ManagedProcess",
    "ProcessGroup",
    "free_port",
    "wait_for_log",
    "wait_http",
]


class ChildExited(RuntimeError):
    """A child process ended while the demo still needed it (its log says why)."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def check_alive(self) -> None:
        if not self.running():
            raise ChildExited(
                f"{self.name} exited with code {self.popen.returncode}; see {self.log_path}"
                f" / 进程{self.name}已退出，请查看日志"
            )

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""


class ProcessGroup:
    """Every child the demo started; ``stop_all`` is idempotent."""

    def __init__(self) -> None:
        self.processes: list[ManagedProcess] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path | None = None,
    ) -> ManagedProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("ab")
        popen = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Own session: the terminal's Ctrl-C goes to the demo only; the demo stops us.
            start_new_session=True,
        )
        process = ManagedProcess(name=name, popen=popen, log_path=log_path, _log=log)
        self.processes.append(process)
        return process

    def stop_all(self, grace: float = 10.0) -> None:
        for process in reversed(self.processes):
            _stop(process, grace)
        self.processes.clear()


def _signal_group(process: ManagedProcess, sig: signal.Signals) -> None:
    # The child leads its own process group (start_new_session): this reaches its children.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _stop(process: ManagedProcess, grace: float) -> None:
    if process.running():
        _signal_group(process, signal.SIGTERM)
        try:
            process.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.popen.wait(timeout=5)
    # Children of a child (prefork pool) may outlive their parent for a moment.
    _signal_group(process, signal.SIGKILL)
    process._log.close()


def wait_http(
    url: str,
    *,
    timeout: float = 30.0,
    process: ManagedProcess | None = None,
    auth: tuple[str, str] | None = None,
) -> httpx.Response:
    """The first answer below 500 from ``url``; fails early if ``process`` died."""
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while time.monotonic() < deadline:
        if process is not None:
            process.check_alive()
        try:
            response = httpx.get(url, timeout=2.0, auth=auth)
            if response.status_code < 500:
                return response
            last_error = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last_error = type(exc).__name__
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout:g} s ({last_error})")


def wait_for_log(process: ManagedProcess, text: str, *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.check_alive()
        if text in process.log_text():
            return
        time.sleep(0.1)
    raise TimeoutError(
        f"{process.name} did not log {text!r} within {timeout:g} s; see {process.log_path}"
    )
