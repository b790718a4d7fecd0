"""What the browser tests share: one tiny study per test session, headless Chromium, a free port, patient waits.

test_browser.py (the MLflow UI) and test_dashboard.py (optuna-dashboard) open the same 2-trial ``--quick`` study,
run once per session: whichever module comes first runs it, the other finds it done.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
STUDY = "browser"  # the --study-name: the MLflow experiment; its one pair study is browser.scratch-base.scratch-tiny


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quick_study(tmp_path_factory) -> dict[str, object]:
    """The session's 2-trial quick study (scratch-base teacher, scratch-tiny student): its folder, Optuna storage
    and MLflow tracking URI."""
    from study.run import main

    root = tmp_path_factory.getbasetemp() / "quick-study"
    stores = {"root": root, "storage": f"sqlite:///{root}/optuna.db", "tracking": f"sqlite:///{root}/mlflow.db"}
    if not (root / "done").exists():
        root.mkdir(parents=True, exist_ok=True)
        assert main(["--n-trials", "2", "--quick", "--study-name", STUDY, "--students", "scratch-tiny",
                     "--storage", stores["storage"], "--tracking-uri", stores["tracking"],
                     "--cache-dir", str(root / "cache"), "--quiet"]) == 0
        (root / "done").touch()
    return stores


def chrome(width: int = 1800, height: int = 1000):
    """Headless Chromium with its own throwaway profile."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--window-size={width},{height}",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)


def screenshots(root: Path) -> Path:
    """$STUDY_SCREENSHOTS (``STUDY_SCREENSHOTS=docs/images`` refreshes the documentation's), else a temp folder."""
    shots = Path(os.environ.get("STUDY_SCREENSHOTS", root / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    return shots


def body_text(driver) -> str:
    try:
        return driver.find_element("tag name", "body").text
    except Exception:  # the page is being replaced
        return ""


def wait_for_text(driver, text: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in body_text(driver):
            return
        time.sleep(0.5)
    raise AssertionError(f"{text!r} never appeared; page shows: {body_text(driver)[:800]}")


def wait_until(predicate, what: str, timeout: float = 90, driver=None):
    """Poll ``predicate()`` until it returns something truthy (returned); fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # a stale element while the page re-renders
            value = None
        if value:
            return value
        time.sleep(0.5)
    shown = f"; page shows: {body_text(driver)[:800]}" if driver is not None else ""
    raise AssertionError(f"{what} did not happen within {timeout:.0f}s{shown}")
