"""Debian's headless Chromium, driven over the DevTools protocol on a pipe.

``--remote-debugging-pipe`` makes Chromium read DevTools commands from file
descriptor 3 and write replies and events to descriptor 4, each message JSON ended
by a NUL byte: no port to pick, no websocket client, nothing but the standard
library. A page of MLflow's UI is a React app that fetches what it shows after it
loads, so :meth:`Chromium.open` waits until the rendered text holds what the test
expects instead of waiting a fixed time.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any


def chromium_path() -> str | None:
    return shutil.which("chromium")


class PageTimeout(AssertionError):
    """The page did not show the expected text in time; says what it showed."""


class Chromium:
    def __init__(self, profile: Path, width: int = 1400, height: int = 1000):
        executable = chromium_path()
        if executable is None:
            raise FileNotFoundError("chromium is not on PATH (apt-get install -y chromium)")
        to_chromium, self._commands = os.pipe()
        self._replies, from_chromium = os.pipe()

        def descriptors() -> None:  # in the child, before exec
            os.dup2(to_chromium, 3)
            os.dup2(from_chromium, 4)

        log = (profile.parent / "chromium.log").open("wb")
        self.process = subprocess.Popen(
            [
                executable,
                *("--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe"),
                *("--no-first-run", "--no-default-browser-check", "--hide-scrollbars"),
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            pass_fds=(3, 4),
            preexec_fn=descriptors,
            start_new_session=True,
        )
        log.close()
        os.close(to_chromium)
        os.close(from_chromium)
        self._buffer = b""
        self._next_id = 0
        self.session = ""
        targets = self.send("Target.getTargets")["targetInfos"]
        page = next(t["targetId"] for t in targets if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", targetId=page, flatten=True)["sessionId"]
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def send(self, method: str, timeout: float = 60.0, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return dict(reply.get("result", {}))
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                raise TimeoutError(f"Chromium did not answer {method} in {timeout} s")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited (code {self.process.wait()}) during {method}")
            self._buffer += chunk

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def text(self) -> str:
        return str(self.evaluate("document.body ? document.body.innerText : ''"))

    def open(self, url: str, *expected: str, timeout: float = 90.0) -> str:
        """Go to ``url`` and return the page's text once it contains every ``expected``."""
        self.send("Page.navigate", url=url)
        return self.wait_for(*expected, timeout=timeout)

    def wait_for(self, *expected: str, timeout: float = 90.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if all(e in text for e in expected):
                return text
            if time.monotonic() > deadline:
                missing = [e for e in expected if e not in text]
                raise PageTimeout(f"After {timeout} s the page lacks {missing}; it shows:\n{text}")
            time.sleep(0.25)

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        for fd in (self._commands, self._replies):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
