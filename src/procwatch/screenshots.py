"""`uv run python -m procwatch.screenshots [--out docs/screenshots]`: a PNG of every dashboard page.

Starts `procwatch up` (with its agent) in a throwaway data directory, signs in with the one-time
link it prints, lets a few samples arrive, and photographs each page with Debian's chromium
(Playwright, `executable_path`; `apt-get install chromium`). The browser tests start the stack
the same way (`RunningUp`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from procwatch.embedded import free_port

BANNER_END = "Ctrl-C stops everything"
# Where Debian puts chromium; CHROMIUM_PATH overrides.
CHROMIUM_CANDIDATES = ("chromium", "/usr/bin/chromium", "/usr/lib/chromium/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    configured = os.environ.get("CHROMIUM_PATH")
    if configured:
        return configured if os.path.exists(configured) else None
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate) or (candidate if os.path.exists(candidate) else None)
        if found:
            return found
    return None


class RunningUp:
    """`procwatch up` in `data_dir` on a free port, until `stop()`: its banner's URLs, the demo
    token (first run) and the one-time sign-in link."""

    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None, timeout_s: float = 180):
        self.data_dir = data_dir
        self.port = free_port()
        clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "NATS_URL")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "procwatch.cli", "up", "--data-dir", str(data_dir), "--api-port", str(self.port),
             *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**clean, **(env or {})},
        )
        self.banner = self._read_banner(timeout_s)
        self.url = f"http://127.0.0.1:{self.port}"
        token = re.search(r"Bearer (\S+)'", self.banner)
        self.token = token.group(1) if token else None
        self.signin_link = re.search(r"sign in once: (\S+)", self.banner).group(1)

    def _read_banner(self, timeout_s: float) -> str:
        seen: list[str] = []
        deadline = time.monotonic() + timeout_s
        os.set_blocking(self.proc.stdout.fileno(), False)
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line:
                seen.append(line)
                if BANNER_END in line:
                    return "".join(seen)
            elif self.proc.poll() is not None:
                break
            else:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("procwatch up did not start:\n" + "".join(seen))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


PAGES = (  # (file name, path; {server} and {process} filled in)
    ("signin", "/ui/signin"),
    ("fleet", "/ui"),
    ("server", "/ui/servers/{server}"),
    ("process", "/ui/servers/{server}/processes/{process}"),
    ("alerts", "/ui/alerts"),
    ("channels", "/ui/channels"),
    ("maintenance", "/ui/maintenance"),
)


# Something to show on every page: a watched process that never runs (down, with its alert) and a
# channel (`up` lets channels post to this machine; nothing listens on port 9, which is fine).
EXAMPLE_PROCESS = "backup-agent"
EXAMPLE_CHANNEL = ("ops webhook", "http://127.0.0.1:9/procwatch")


def _add_examples(page, url: str) -> None:
    page.goto(f"{url}/ui")
    page.locator(".server h2 a").first.click()
    page.get_by_label("Process name").fill(EXAMPLE_PROCESS)
    page.get_by_role("button", name="Add process").click()
    page.goto(f"{url}/ui/channels")
    page.get_by_label("Name").fill(EXAMPLE_CHANNEL[0])
    page.get_by_label("URL", exact=False).fill(EXAMPLE_CHANNEL[1])
    page.get_by_role("button", name="Add channel").click()


def capture(out_dir: Path, settle_s: float = 8.0) -> list[Path]:
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise SystemExit("chromium not found: apt-get install chromium, or set CHROMIUM_PATH")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="procwatch-shots-") as tmp:
        stack = RunningUp(Path(tmp) / "pw", env={"PROCWATCH_INGEST_INTERVAL_SECONDS": "1"})
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
                for scheme, width, suffix in (("light", 1280, ""), ("dark", 375, "-mobile-dark")):
                    context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)
                    page = context.new_page()
                    if not suffix:
                        page.goto(f"{stack.url}/ui/signin")
                        page.screenshot(path=str(out_dir / "signin.png"))
                        written.append(out_dir / "signin.png")
                        page.goto(stack.signin_link)
                        _add_examples(page, stack.url)
                        time.sleep(settle_s)  # samples arrive: the charts have points, the missing process is down
                        cookies = context.cookies()
                    else:
                        context.add_cookies(cookies)
                    page.goto(f"{stack.url}/ui")
                    server = page.locator(".server h2 a").first.get_attribute("href").rsplit("/", 1)[1]
                    page.goto(f"{stack.url}/ui/servers/{server}")
                    up = page.get_by_test_id("status").filter(has_text="up")
                    running = page.locator("tr[data-process-id]", has=up)
                    process = running.first.get_attribute("data-process-id")
                    for name, path in PAGES[1:]:
                        page.goto(stack.url + path.format(server=server, process=process))
                        if name == "process":
                            page.wait_for_selector("#charts[data-points]", timeout=15_000)
                        target = out_dir / f"{name}{suffix}.png"
                        page.screenshot(path=str(target), full_page=True)
                        written.append(target)
                    context.close()
                browser.close()
        finally:
            stack.stop()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m procwatch.screenshots", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/screenshots", help="directory for the PNGs (default docs/screenshots)")
    args = parser.parse_args(argv)
    for path in capture(Path(args.out)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
