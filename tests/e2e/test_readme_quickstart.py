"""The README's quick start and curl examples, run as written; the Chinese README must match.

The blocks are the fenced ``sh`` blocks right after ``<!-- readme-test: quickstart -->`` and
``<!-- readme-test: curl -->`` in README.md; README.zh-CN.md carries the same markers and
must hold the same commands (comments and blank lines aside). The curl block uses only
variables the quick start exports and ``make demo`` writes to ``.demo/demo.env``.

How the block is run (``test_the_quick_start_reaches_invoiced``):

- "from the repository root": in a temporary directory holding ``demo/samples`` (a link to
  the real one) and ``demo/tenants.toml`` (a copy, simulator port replaced), so ``var/`` and
  the SQLite file land there;
- ``source .venv/bin/activate``: ``PATH`` starts with this interpreter's ``bin``;
- Redis on 127.0.0.1:6379: ``FAPIAO_REDIS_URL`` = ``FAPIAO_BROKER_URL`` =
  FAPIAO_TEST_REDIS_URL (flushed before and after); every other ``FAPIAO_*`` variable of
  the calling environment is dropped;
- ports 8765, 8000, 5555: free ports (each literal must be in the block);
- background jobs (``&``): the quick start, then the curl block, run as one bash script
  (``set -eu``); a trailer waits for the jobs and, on SIGTERM, stops and reaps them.

It then asserts that the script's own ``until`` loop ended (the document is ``invoiced``), the
final ``fapiao show`` says so, the database agrees (one issued invoice), and the curl
examples were answered (a document created, the quick start's document shown invoiced).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = "quickstart"
CURL = "curl"
BILL_NO = "SJXC-XS-2025110601"
# The README's fixed ports and what they are; each must appear in the block.
README_PORTS = {"8765": "simulator", "8000": "api", "5555": "flower"}
DONE = "quickstart: every command ran"
TRAILER = f"""
trap 'kill $(jobs -p) 2>/dev/null; wait; exit 0' TERM
echo "{DONE}"
wait
"""
SCRIPT_TIMEOUT_SECONDS = 300.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def marked_block(readme: Path, name: str) -> str:
    """The fenced block right after ``<!-- readme-test: NAME -->`` (the text between fences)."""
    marker = f"<!-- readme-test: {name} -->"
    text = readme.read_text(encoding="utf-8")
    assert text.count(marker) == 1, f"{readme.name}: exactly one {marker!r} expected"
    after = text.split(marker, 1)[1]
    match = re.match(r"\s*```(?:sh|bash|shell)\n(.*?)\n```", after, re.DOTALL)
    assert match is not None, f"{readme.name}: a ```sh block must follow {marker!r}"
    return match.group(1) + "\n"


def commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = (" ".join(re.sub(r"\s+#.*$", "", line).split()) for line in joined.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_commands_ignore_comments_and_join_continuations() -> None:
    block = "# start\nexport A=1  # why\nfapiao api \\\n  --port 8000 &\n\n"
    assert commands(block) == ["export A=1", "fapiao api --port 8000 &"]


@pytest.mark.parametrize("name", [QUICKSTART, CURL])
def test_the_chinese_readme_runs_the_same_commands(name: str) -> None:
    english = commands(marked_block(ROOT / "README.md", name))
    chinese = commands(marked_block(ROOT / "README.zh-CN.md", name))
    assert chinese == english


def test_the_curl_examples_use_what_the_quick_start_and_the_demo_set() -> None:
    from demo.stack import demo_env_text

    used = set(re.findall(r"\$(FAPIAO_\w+)", marked_block(ROOT / "README.md", CURL)))
    assert used == {"FAPIAO_API_URL", "FAPIAO_API_KEY"}
    exported = set(re.findall(r"\b(FAPIAO_\w+)=", marked_block(ROOT / "README.md", QUICKSTART)))
    assert used <= exported
    written = demo_env_text(
        {"FAPIAO_API_KEYS": "k", "PATH": "/bin"}, api_url="http://127.0.0.1:1", api_key="k"
    )
    names = {line.split("=", 1)[0] for line in written.splitlines()}
    assert names == {"FAPIAO_API_KEYS", "FAPIAO_API_URL", "FAPIAO_API_KEY"}


def test_the_quick_start_names_the_ports_the_test_replaces() -> None:
    block = marked_block(ROOT / "README.md", QUICKSTART)
    for port, what in README_PORTS.items():
        assert re.search(rf"\b{port}\b", block), f"the {what} port {port} is not in the block"
    tenants = (ROOT / "demo" / "tenants.toml").read_text(encoding="utf-8")
    assert "127.0.0.1:8765/" in tenants, "demo/tenants.toml must point at the simulator's port"


def _scene(tmp_path: Path, ports: dict[str, int]) -> Path:
    """A working directory that looks like the checkout to the block."""
    scene = tmp_path / "checkout"
    (scene / "demo").mkdir(parents=True)
    (scene / "demo" / "samples").symlink_to(ROOT / "demo" / "samples", target_is_directory=True)
    tenants = (ROOT / "demo" / "tenants.toml").read_text(encoding="utf-8")
    (scene / "demo" / "tenants.toml").write_text(
        tenants.replace("127.0.0.1:8765/", f"127.0.0.1:{ports['8765']}/"), encoding="utf-8"
    )
    return scene


def _environment(redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("FAPIAO_")}
    env["FAPIAO_REDIS_URL"] = redis_url
    env["FAPIAO_BROKER_URL"] = redis_url
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "160"
    env.pop("VIRTUAL_ENV", None)
    return env


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the script (its trap stops and reaps the jobs); then the whole group, hard."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # jobs orphaned by an early failure
    process.wait(timeout=10)


@pytest.mark.slow
def test_the_quick_start_reaches_invoiced(redis_url: str, tmp_path: Path) -> None:
    ports = {port: free_port() for port in README_PORTS}
    block = marked_block(ROOT / "README.md", QUICKSTART) + marked_block(ROOT / "README.md", CURL)
    for port, actual in ports.items():
        block = re.sub(rf"\b{port}\b", str(actual), block)
    scene = _scene(tmp_path, ports)
    script = scene / "quickstart.sh"
    script.write_text("set -eu\n" + block + TRAILER, encoding="utf-8")
    log_path = tmp_path / "quickstart.log"

    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["bash", str(script)],
            cwd=scene,
            env=_environment(redis_url),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + SCRIPT_TIMEOUT_SECONDS
        while DONE not in log_path.read_text(encoding="utf-8", errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        _stop(process)

    output = log_path.read_text(encoding="utf-8", errors="replace")
    logs = "\n".join(
        f"--- {path.name}\n{path.read_text(encoding='utf-8', errors='replace')[-3000:]}"
        for path in sorted((scene / "var").glob("*.log"))
    )
    assert DONE in output, f"the quick start did not finish:\n{output[-4000:]}\n{logs}"
    assert re.search(rf"{BILL_NO}\s+tenant north", output), output[-4000:]
    assert re.search(r"state\s+invoiced\b", output), output[-4000:]

    database = scene / "var" / "quickstart.db"
    with sqlite3.connect(database) as connection:
        (status,) = connection.execute(
            "SELECT status FROM documents WHERE bill_no = ? AND is_current", (BILL_NO,)
        ).fetchone()
        (issued,) = connection.execute(
            "SELECT count(*) FROM invoices JOIN documents ON documents.id = invoices.document_id"
            " WHERE documents.bill_no = ? AND invoices.invoice_num IS NOT NULL"
            " AND invoices.invoice_num != ''",
            (BILL_NO,),
        ).fetchone()
    assert status == "invoiced"
    assert issued == 1
    # The curl block: a new document accepted, then the quick start's document as JSON.
    assert re.search(r'"bill_no":\s*"HZYF-RT-251120-003"[^}]*"outcome":\s*"created"', output)
    shown = re.search(r'\{"document_id":[^\n]*"bill_no":\s*"SJXC-XS-2025110601"[^\n]*', output)
    assert shown is not None, output[-4000:]
    assert re.search(r'"status":\s*"invoiced"', shown.group(0)), shown.group(0)
