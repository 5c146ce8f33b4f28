"""A small W3C WebDriver client for Debian's chromedriver and headless Chromium (the system's browser, never a
downloaded build): what the console's browser tests need and nothing more — open a page, find, type, click,
read, screenshot. Every wait is a bounded poll."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import free_port
from tests.e2e.harness import PollTimeout, poll

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C name of an element reference


class WebDriverError(AssertionError):
    pass


def browser_binary() -> str:
    for candidate in ("/usr/lib/chromium/chromium", shutil.which("chromium") or ""):
        if candidate and Path(candidate).exists():
            return candidate
    raise WebDriverError("no Chromium: run ops/browser/install (Debian's chromium and chromium-driver)")


class Browser:
    def __init__(self, workdir: Path, width: int = 1280, height: int = 900) -> None:
        driver = shutil.which("chromedriver")
        if driver is None:
            raise WebDriverError("no chromedriver: run ops/browser/install (Debian's chromium-driver)")
        port = free_port()
        self._log = open(workdir / "chromedriver.log", "w")  # closed in quit()
        self._proc = subprocess.Popen([driver, f"--port={port}"], stdout=self._log, stderr=subprocess.STDOUT)
        self._base = f"http://127.0.0.1:{port}"
        self._last_error = ""
        try:
            poll(lambda: self._answers("GET", "/status"), 30, "chromedriver to answer")
        except PollTimeout:
            self._proc.kill()
            raise
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": browser_binary(),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={width},{height}", f"--user-data-dir={workdir / 'profile'}"]}}}}
        self._session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self._base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                answer = json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = json.loads(exc.read() or b"{}").get("value", {})
            raise WebDriverError(f"{method} {path}: {detail.get('error')}: {str(detail.get('message'))[:300]}") from None
        return answer.get("value") if isinstance(answer, dict) and "value" in answer else answer

    def _answers(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The answer, or None while the driver cannot give one (for a bounded poll)."""
        try:
            return self._call(method, path, body) or True
        except (OSError, WebDriverError) as exc:
            self._last_error = str(exc)
            return None

    def _s(self, path: str, body: dict[str, Any] | None = None, method: str = "POST") -> Any:
        return self._call(method, f"/session/{self._session}{path}", body)

    # ---- pages
    def open(self, url: str) -> None:
        self._s("/url", {"url": url})

    @property
    def url(self) -> str:
        return str(self._s("/url", method="GET"))

    @property
    def source(self) -> str:
        return str(self._s("/source", method="GET"))

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self._s("/screenshot", method="GET")))
        return path

    def script(self, code: str, *args: Any) -> Any:
        return self._s("/execute/sync", {"script": code, "args": list(args)})

    # ---- elements
    def find(self, css: str, timeout: float = 10) -> str:
        def element() -> str | None:
            found = self._answers("POST", f"/session/{self._session}/element", {"using": "css selector", "value": css})
            return str(found[ELEMENT]) if isinstance(found, dict) and found.get(ELEMENT) else None

        return poll(element, timeout, lambda: f"element {css!r} on {self.url} ({self._last_error}); the page:\n"
                                              f"{self.source[:1500]}")

    def text(self, css: str, timeout: float = 10) -> str:
        return str(self._s(f"/element/{self.find(css, timeout)}/text", method="GET"))

    def type(self, css: str, value: str) -> None:
        element = self.find(css)
        self._s(f"/element/{element}/clear", {})
        self._s(f"/element/{element}/value", {"text": value})

    def click(self, css: str) -> None:
        self._s(f"/element/{self.find(css)}/click", {})

    def wait_for(self, check: Any, timeout: float, what: str) -> Any:
        def shown() -> str:
            try:
                return str(self.script("return (document.querySelector('main') || document.body).innerText"))
            except WebDriverError:
                return "?"

        return poll(check, timeout, lambda: f"{what} (at {self.url}); the page says:\n{shown()[:2000]}", interval=0.25)

    def quit(self) -> None:
        try:
            self._s("", method="DELETE")
        except (OSError, WebDriverError):
            pass
        finally:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._log.close()
