"""A headless Chromium driven over the Chrome DevTools protocol through ``--remote-debugging-pipe``.

Standard library only: Chromium reads commands from file descriptor 3 and
writes replies and events to descriptor 4, each message a JSON object followed
by a NUL byte. Used by tools/bench_report.py and by the report's browser tests
(tests/test_report_browser.py; tools/ is on the test path, see pyproject.toml).
No browser is ever downloaded: :func:`find_chromium` looks for the Debian
``chromium`` package's binary (or ``$CHROMIUM``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

__all__ = ["find_chromium", "Browser", "Page", "BrowserError"]


class BrowserError(RuntimeError):
    """A DevTools command failed or timed out."""


def find_chromium() -> Optional[str]:
    """Path of a Chromium binary: ``$CHROMIUM``, else ``chromium`` / ``chromium-browser`` on PATH."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if os.access(env, os.X_OK) else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    """One headless Chromium process; close it with :meth:`close` (or use ``with``)."""

    def __init__(self, binary: Optional[str] = None, *, window: "tuple[int, int]" = (1280, 900),
                 timeout: float = 60.0, dark: bool = False) -> None:
        binary = binary or find_chromium()
        if binary is None:
            raise BrowserError("no chromium binary found (install Debian's chromium package)")
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="anomclust-chromium-")
        cmd_r, self._cmd_w = os.pipe()
        self._res_r, res_w = os.pipe()
        args = [binary, "--headless", "--remote-debugging-pipe", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--mute-audio", "--hide-scrollbars",
                f"--user-data-dir={self._profile}", f"--window-size={window[0]},{window[1]}"]
        if dark:
            args.append("--force-dark-mode")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium refuses to run its sandbox as root (CI containers)

        def child_fds() -> None:
            os.dup2(cmd_r, 3)
            os.dup2(res_w, 4)

        self.proc = subprocess.Popen(args + ["about:blank"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, pass_fds=(3, 4), preexec_fn=child_fds,
                                     close_fds=True)
        os.close(cmd_r)
        os.close(res_w)
        self._next_id = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._replies: Dict[int, Dict[str, Any]] = {}
        self.events: List[Dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    # ------------------------------------------------------------------ protocol
    def _read_loop(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._res_r, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._replies[-1] = {"error": {"message": "chromium closed the pipe"}}
                    self._cond.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw.decode("utf-8"))
                with self._cond:
                    if "id" in msg:
                        self._replies[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                    self._cond.notify_all()

    def send(self, method: str, params: Optional[Dict[str, Any]] = None, session: Optional[str] = None,
             timeout: Optional[float] = None) -> Dict[str, Any]:
        """Send one command and wait for its reply's ``result``."""
        with self._lock:
            self._next_id += 1
            mid = self._next_id
        msg: Dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        data = json.dumps(msg).encode("utf-8") + b"\0"
        with self._lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self._cmd_w, view):]
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._cond:
            while mid not in self._replies and -1 not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrowserError(f"{method}: no reply within {timeout or self.timeout} s")
                self._cond.wait(left)
            reply = self._replies.pop(mid, None) or self._replies[-1]
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def new_page(self) -> "Page":
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        return Page(self, session)

    def allow_downloads(self, folder: Path) -> None:
        self.send("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(folder),
                                                  "eventsEnabled": True})

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except BrowserError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._cmd_w, self._res_r):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Page:
    """One tab: commands, JavaScript evaluation, the events of its session."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params: Any) -> Dict[str, Any]:
        return self.browser.send(method, params, session=self.session)

    def events(self, method: str) -> List[Dict[str, Any]]:
        """Parameters of every event ``method`` of this page so far."""
        with self.browser._cond:
            return [e.get("params", {}) for e in self.browser.events
                    if e.get("sessionId") == self.session and e.get("method") == method]

    def evaluate(self, expression: str, timeout: Optional[float] = None) -> Any:
        """Value of a JavaScript expression (promises awaited); a thrown exception raises BrowserError."""
        res = self.browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                     "awaitPromise": True}, session=self.session, timeout=timeout)
        if "exceptionDetails" in res:
            details = res["exceptionDetails"]
            raise BrowserError(f"{expression[:60]}: {details.get('exception', {}).get('description', details)}")
        return res["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Poll ``expression`` until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for {expression!r}")
            time.sleep(0.02)

    def open(self, url: str, timeout: float = 30.0) -> float:
        """Navigate to ``url`` and wait for ``html[data-ready]``; returns the seconds it took."""
        t0 = time.perf_counter()
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && document.documentElement.hasAttribute('data-ready')",
                      timeout)
        return time.perf_counter() - t0

    def errors(self) -> List[str]:
        """JavaScript exceptions and console/log errors (CSP violations included) so far."""
        out = [e["exceptionDetails"].get("exception", {}).get("description", str(e["exceptionDetails"]))
               for e in self.events("Runtime.exceptionThrown")]
        out += [e["entry"]["text"] for e in self.events("Log.entryAdded") if e["entry"].get("level") == "error"]
        out += [" ".join(str(a.get("value", a.get("description", ""))) for a in e.get("args", []))
                for e in self.events("Runtime.consoleAPICalled") if e.get("type") == "error"]
        return out

    def requests(self) -> List[str]:
        """URLs of every request the page made so far."""
        return [e["request"]["url"] for e in self.events("Network.requestWillBeSent")]

    def screenshot(self, path: Path, *, width: int = 1280, height: int = 900, full: bool = False) -> None:
        import base64

        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=width < 700)
        params: Dict[str, Any] = {"format": "png", "captureBeyondViewport": full}
        data = self.call("Page.captureScreenshot", **params)["data"]
        Path(path).write_bytes(base64.b64decode(data))
