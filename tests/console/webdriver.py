"""A few lines of W3C WebDriver over HTTP, enough to drive headless Chromium in tests.

chromedriver speaks the protocol (https://www.w3.org/TR/webdriver2/); this client sends
its JSON commands with ``requests``: open a session, navigate, find elements, type, click,
read text, run a script, take a screenshot.
"""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


def browsers_present() -> bool:
    return bool(shutil.which("chromium") and shutil.which("chromedriver"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebDriverError(AssertionError):
    pass


class Browser:
    """One headless Chromium session through a chromedriver subprocess."""

    def __init__(self, profile_dir: Path, timeout_s: float = 30.0) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [shutil.which("chromedriver") or "chromedriver", f"--port={self.port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        self.http = requests.Session()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.http.get(self.base + "/status", timeout=2).json()["value"]["ready"]:
                    break
            except (requests.RequestException, ValueError, KeyError):
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.proc.kill()
                raise WebDriverError("chromedriver did not start")
            time.sleep(0.1)
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": shutil.which("chromium"),
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--no-first-run",
                            "--window-size=1280,1000",
                            f"--user-data-dir={profile_dir}",
                        ],
                    },
                }
            }
        }
        try:
            self.session = self._cmd("POST", "/session", caps, timeout=60)["sessionId"]
        except Exception:
            self.proc.kill()
            raise

    def _cmd(self, method: str, path: str, body: dict | None = None, timeout: float = 30) -> Any:
        r = self.http.request(method, self.base + path, json=body, timeout=timeout)
        value = r.json().get("value")
        if r.status_code >= 400 or (isinstance(value, dict) and "error" in value):
            raise WebDriverError(f"{method} {path}: {str(value)[:500]}")
        return value

    def _s(self, method: str, path: str, body: dict | None = None) -> Any:
        return self._cmd(method, f"/session/{self.session}{path}", body)

    # -- navigation and reading ----------------------------------------------------------
    def get(self, url: str) -> None:
        self._s("POST", "/url", {"url": url})

    @property
    def url(self) -> str:
        return self._s("GET", "/url")

    @property
    def text(self) -> str:
        return self.find("body").text

    def script(self, source: str, *args: Any) -> Any:
        return self._s("POST", "/execute/sync", {"script": source, "args": list(args)})

    def find(self, css: str) -> Element:
        found = self._s("POST", "/element", {"using": "css selector", "value": css})
        if not isinstance(found, dict) or ELEMENT not in found:
            raise WebDriverError(f"no {css!r} on {self.url}: {str(found)[:300]}")
        return Element(self, found[ELEMENT])

    def find_all(self, css: str) -> list[Element]:
        found = self._s("POST", "/elements", {"using": "css selector", "value": css})
        return [Element(self, e[ELEMENT]) for e in found]

    def wait_for(self, css: str, timeout_s: float = 15.0) -> Element:
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.find_all(css)
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise WebDriverError(
                    f"no {css!r} within {timeout_s} s on {self.url}: {self.text[:500]}"
                )
            time.sleep(0.2)

    def wait_text(self, text: str, timeout_s: float = 15.0) -> str:
        """The page's text once it contains ``text`` (a click's navigation may lag)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                body = self.text
            except WebDriverError:  # between two pages
                body = ""
            if text in body:
                return body
            if time.monotonic() > deadline:
                raise WebDriverError(
                    f"no {text!r} within {timeout_s} s on {self.url}: {body[:500]}"
                )
            time.sleep(0.2)

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self._s("GET", "/screenshot")))
        return path

    def cookies(self) -> list[dict[str, Any]]:
        return self._s("GET", "/cookie")

    def close(self) -> None:
        try:
            self._s("DELETE", "")
        except Exception:  # noqa: BLE001 - the driver may be gone already
            pass
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Element:
    def __init__(self, browser: Browser, eid: str) -> None:
        self.b = browser
        self.id = eid

    def _e(self, method: str, path: str, body: dict | None = None) -> Any:
        return self.b._s(method, f"/element/{self.id}{path}", body)

    @property
    def text(self) -> str:
        return self._e("GET", "/text")

    def find(self, css: str) -> Element:
        """The first element matching ``css`` inside this one."""
        found = self._e("POST", "/element", {"using": "css selector", "value": css})
        if not isinstance(found, dict) or ELEMENT not in found:
            raise WebDriverError(f"no {css!r} in the element: {str(found)[:300]}")
        return Element(self.b, found[ELEMENT])

    def attr(self, name: str) -> str | None:
        return self._e("GET", f"/attribute/{name}")

    def type(self, text: str) -> None:
        self._e("POST", "/clear", {})
        self._e("POST", "/value", {"text": text})

    def click(self) -> None:
        self._e("POST", "/click", {})
