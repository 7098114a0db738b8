"""Screenshots of the local Airflow UI in headless Chromium, logged in as the printed user.

    python scripts/ui_screenshot.py OUT_DIR PATH [PATH ...]
        e.g. /dags/crm_nightly/runs/<run_id>  /dags/crm_nightly/runs/<run_id>/tasks/check_run

Uses Debian's `chromium` through the DevTools protocol (websockets, which Airflow already
installs): the JWT from /auth/token goes into the `_token` cookie the UI reads, then each
page is opened, given time to render, and saved as OUT_DIR/<n>.png. For a person to look
at what `make airflow` shows, without a desktop.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import websockets

BASE = f"http://localhost:{os.environ.get('CRM_AIRFLOW_PORT', '8080')}"
HOME = Path(os.environ.get("AIRFLOW_HOME", Path(__file__).resolve().parent.parent / ".airflow"))


def token() -> str:
    passwords = json.loads((HOME / "simple_auth_manager_passwords.json.generated").read_text())
    user, password = next(iter(passwords.items()))
    req = urllib.request.Request(
        f"{BASE}/auth/token",
        data=json.dumps({"username": user, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
    )
    return json.load(urllib.request.urlopen(req))["access_token"]


async def shoot(ws_url: str, paths: list[str], out: Path, jwt: str) -> None:
    async with websockets.connect(ws_url, max_size=64 * 2**20) as ws:
        ids = iter(range(1, 10**6))

        async def call(method, **params):
            n = next(ids)
            await ws.send(json.dumps({"id": n, "method": method, "params": params}))
            while True:
                msg = json.loads(await ws.recv())
                if msg.get("id") == n:
                    return msg.get("result", {})

        await call("Network.enable")
        await call("Network.setCookie", name="_token", value=jwt, url=BASE)
        await call(
            "Emulation.setDeviceMetricsOverride",
            width=1600,
            height=1000,
            deviceScaleFactor=1,
            mobile=False,
        )
        for i, path in enumerate(paths, 1):
            await call("Page.navigate", url=BASE + path)
            await asyncio.sleep(8)  # the UI fetches its data after load
            shot = await call("Page.captureScreenshot", format="png")
            (out / f"{i}.png").write_bytes(base64.b64decode(shot["data"]))
            print(out / f"{i}.png", path)


def main() -> None:
    out, paths = Path(sys.argv[1]), sys.argv[2:]
    out.mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="crm-ui-")
    browser = subprocess.Popen(
        [
            shutil.which("chromium") or "chromium",
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--remote-debugging-port=9339",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(50):
            try:
                pages = json.load(urllib.request.urlopen("http://127.0.0.1:9339/json/list"))
                page = next(p for p in pages if p["type"] == "page")
                break
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.2)
        asyncio.run(shoot(page["webSocketDebuggerUrl"], paths, out, token()))
    finally:
        browser.terminate()
        browser.wait()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
