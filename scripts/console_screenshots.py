"""Screenshots of the operator console for docs/console/, from a real stack.

    .venv/bin/python scripts/console_screenshots.py [--out docs/console]

Starts what ``make demo`` starts (simulator, API, worker, beat, Flower; ``demo.stack``) with a
console account, runs the demo's sample documents to their states (invoiced, rejected,
withdrawn), pauses one tenant and submits two more documents to it (they wait in draft), then
logs in with Chromium (/usr/bin/chromium; ``scripts/ensure-test-tools.sh`` installs it) and
saves the overview, the document list and a rejected document, in Chinese and in English.
After issuance it also has the cloud's clerk void one invoiced document (it becomes
``reversed``), reverses another through the bridge (红冲: a linked red document), and saves
those two documents and the tenants page (credit quota per seller).
Chinese text needs a CJK font (Debian: fonts-wqy-microhei or fonts-noto-cjk).
"""

from __future__ import annotations

import argparse
import copy
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from playwright.sync_api import Page, sync_playwright  # noqa: E402
from rich.console import Console  # noqa: E402

import demo.stack  # noqa: E402
from demo.display import PlainDisplay  # noqa: E402
from demo.samples import DEFAULT_SAMPLES_DIR, load_samples  # noqa: E402
from demo.scenario import run_scenario  # noqa: E402
from producers.console.auth import hash_password  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
OPERATOR = "zhangmin"
REJECTED_BILL = "XS20250721-0015"  # demo/samples/refused-by-cloud.json
PAUSED_TENANT = "south"
WAITING_SAMPLE = "026-electronic-normal-discount.json"  # a seller of the south tenant
VOIDED_BILL = "XS20250718-0042"  # demo/samples/007-paper-normal.json
REVERSED_BILL = "QHSZ-2025-0930-88"  # demo/samples/028-electronic-special.json (专票)


def _with_console_account(password: str) -> None:
    """The demo's settings plus one console operator (demo.stack builds the children's env)."""
    original = demo.stack._settings_env

    def settings_env(*args: Any, **kwargs: Any) -> dict[str, str]:
        env = original(*args, **kwargs)
        account = {"name": OPERATOR, "role": "operator", "password_hash": hash_password(password)}
        env["FAPIAO_CONSOLE__USERS"] = json.dumps([account])
        env["FAPIAO_CONSOLE__SESSION_SECRET"] = secrets.token_urlsafe(32)
        return env

    demo.stack._settings_env = settings_env


def _documents_waiting_on_a_paused_tenant(api: httpx.Client) -> None:
    answer = api.post(f"/v1/tenants/{PAUSED_TENANT}/pause", json={"reason": "月末对账，暂停推送"})
    answer.raise_for_status()
    template = json.loads((DEFAULT_SAMPLES_DIR / WAITING_SAMPLE).read_text(encoding="utf-8"))
    for suffix in ("A", "B"):
        bill = copy.deepcopy(template)
        bill["billNo"] = f"{template['billNo']}-{suffix}"
        api.post("/v1/documents", json=bill).raise_for_status()


def _wait_for(api: httpx.Client, bill_no: str, wanted: set[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = api.get(f"/v1/documents/{bill_no}").json().get("status")
        if status in wanted:
            return
        time.sleep(0.5)
    raise RuntimeError(f"{bill_no} is {status}, not {sorted(wanted)}, after {timeout:.0f} s")


def _after_issuance(api: httpx.Client, simulator_url: str) -> None:
    """A clerk's 作废 in the cloud, and a 红冲 requested through the bridge."""
    with httpx.Client(base_url=simulator_url, timeout=30.0) as sim:
        sim.post(f"/_sim/bills/{VOIDED_BILL}/void", json={"wait": True}).raise_for_status()
    _wait_for(api, VOIDED_BILL, {"reversed"})
    answer = api.post(
        f"/v1/documents/{REVERSED_BILL}/reverse",
        json={"redReason": "1", "redInfoBillNo": "4403012025120600", "reason": "客户退货"},
    )
    answer.raise_for_status()
    for red in answer.json()["red_documents"]:
        _wait_for(api, red["bill_no"], {"invoiced"})
    _wait_for(api, REVERSED_BILL, {"reversed"})


def _shoot(page: Page, url: str, path: Path) -> None:
    page.goto(url)
    page.wait_for_selector("main[data-ready='1']")
    page.screenshot(path=str(path), full_page=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "console")
    args = parser.parse_args()
    console = Console(highlight=False)
    if not Path(CHROMIUM).exists():
        console.print(f"{CHROMIUM} is missing: run scripts/ensure-test-tools.sh first")
        return 2
    fonts = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True, check=False)
    if shutil.which("fc-list") and not fonts.stdout.strip():
        console.print("warning: no CJK font installed; Chinese text will show as boxes")
    args.out.mkdir(parents=True, exist_ok=True)

    password = secrets.token_urlsafe(12)
    _with_console_account(password)
    workdir = Path(tempfile.mkdtemp(prefix="fapiao-console-shots-"))
    samples = load_samples()
    options = demo.stack.DemoOptions(workdir=workdir)
    with demo.stack.running_stack(options) as stack:
        console.print(f"stack up: API {stack.api_url}; running the demo's samples …")
        report = run_scenario(stack, samples, PlainDisplay(console))
        console.print(f"documents settled: {report.counts}")
        with httpx.Client(
            base_url=stack.api_url,
            headers={"Authorization": f"Bearer {stack.api_key}"},
            timeout=30.0,
        ) as api:
            _after_issuance(api, stack.simulator_url)
            _documents_waiting_on_a_paused_tenant(api)

        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            context = browser.new_context(viewport={"width": 1360, "height": 860})
            page = context.new_page()
            base = f"{stack.api_url}/console/"
            page.goto(base)
            page.fill("#login-name", OPERATOR)
            page.fill("#login-password", password)
            page.click("#login-submit")
            page.wait_for_selector("main[data-ready='1']")
            for lang in ("zh", "en"):
                page.evaluate("lang => localStorage.setItem('fapiao-console-lang', lang)", lang)
                shots = {
                    f"overview-{lang}.png": f"{base}#/overview",
                    f"documents-{lang}.png": f"{base}#/documents",
                    f"document-{lang}.png": f"{base}#/documents/{REJECTED_BILL}",
                    f"voided-{lang}.png": f"{base}#/documents/{VOIDED_BILL}",
                    f"red-letter-{lang}.png": f"{base}#/documents/{REVERSED_BILL}",
                    f"tenants-{lang}.png": f"{base}#/tenants",
                }
                for name, url in shots.items():
                    page.goto("about:blank")
                    _shoot(page, url, args.out / name)
                    console.print(f"saved {args.out / name}")
            browser.close()
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
