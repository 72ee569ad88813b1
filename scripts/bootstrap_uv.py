"""Fetch the pinned uv binary from its PyPI wheel, with nothing but the standard library.

Used by ``scripts/uv`` when no uv is installed: Debian's stock ``python3`` refuses
``pip install`` (PEP 668) and may lack ``python3-venv``/``python3-pip``, but it can download a
file and open a zip. The wheel is checked against the SHA-256 pinned here before anything of it
is written, so a changed or truncated download never runs.

    python3 scripts/bootstrap_uv.py DEST_DIR        -> DEST_DIR/uv

Keep ``UV_VERSION`` equal to the Dockerfile's uv image tag.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import os
import platform
import re
import sys
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

UV_VERSION = "0.13.9"
INDEX = os.environ.get("UV_BOOTSTRAP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
# (machine) -> (wheel file name, sha256), as PyPI lists them for UV_VERSION.
WHEELS = {
    "x86_64": (
        f"uv-{UV_VERSION}-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19",
    ),
    "aarch64": (
        f"uv-{UV_VERSION}-py3-none-manylinux_2_28_aarch64.whl",
        "ecb6028d79dc96fbeafffe5c8af62a7099487ebc05a701e76714eebcffd06375",
    ),
}


def wheel_url(filename: str) -> str:
    """Where the package index (PEP 503/691 simple API, as pip uses it) serves ``filename``."""
    request = urllib.request.Request(
        f"{INDEX}/uv/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        base = response.geturl()
        body = response.read().decode("utf-8")
        kind = response.headers.get("Content-Type", "")
    if "json" in kind:
        for item in json.loads(body)["files"]:
            if item["filename"] == filename:
                return urllib.parse.urljoin(base, str(item["url"]))
    else:
        for href in re.findall(r'href="([^"]+)"', body):
            if urllib.parse.urlsplit(href).path.endswith("/" + filename):
                return urllib.parse.urljoin(base, html.unescape(href))
    raise LookupError(f"{filename} is not listed by {INDEX}/uv/")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: bootstrap_uv.py DEST_DIR", file=sys.stderr)
        return 2
    dest = Path(argv[1])
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    if sys.platform != "linux" or machine not in WHEELS:
        print(
            f"bootstrap_uv: no pinned uv wheel for {sys.platform}/{machine}; install uv"
            " (https://docs.astral.sh/uv/) and run make again / 请先安装 uv",
            file=sys.stderr,
        )
        return 1
    filename, sha256 = WHEELS[machine]
    url = wheel_url(filename)
    print(f"bootstrap_uv: fetching uv {UV_VERSION} from {url}", file=sys.stderr)
    with urllib.request.urlopen(url, timeout=120) as response:
        payload = response.read()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != sha256:
        print(
            f"bootstrap_uv: {filename} has sha256 {digest}, expected {sha256}; refusing it",
            file=sys.stderr,
        )
        return 1
    with zipfile.ZipFile(io.BytesIO(payload)) as wheel:
        binary = wheel.read(f"uv-{UV_VERSION}.data/scripts/uv")
    dest.mkdir(parents=True, exist_ok=True)
    partial = dest / "uv.partial"
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(dest / "uv")
    print(f"bootstrap_uv: installed {dest / 'uv'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
