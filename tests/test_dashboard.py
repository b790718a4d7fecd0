"""The Optuna dashboard on our storage, in a real browser: a pair study's page names its objectives and draws its
Pareto front, and the study's user attributes are listed.

Needs optuna-dashboard (the ``dashboard`` extra; scripts/setup.sh installs it), Debian's chromium and
chromium-driver, and selenium. Shares the session's 2-trial study with test_browser.py. The screenshot
(dashboard_study.png) goes to $STUDY_SCREENSHOTS (default: the test's temporary folder).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import requests

from browser_support import CHROMIUM, DRIVER, STUDY, chrome, free_port, quick_study, screenshots, wait_for_text, \
    wait_until
from study.reporting.ui_links import dashboard_link, dashboard_lines

pytest.importorskip("selenium.webdriver")
pytest.importorskip("optuna_dashboard", reason="needs optuna-dashboard (pip install -e '.[dashboard]')")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver")]

PAIR = f"{STUDY}.scratch-base.scratch-tiny"
OBJECTIVES = ("macro_f1_validation", "latency_vs_teacher", "size_mb")


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    stores = quick_study(tmp_path_factory)
    port = free_port()
    program = Path(sys.executable).parent / "optuna-dashboard"
    command = [str(program)] if program.exists() else [sys.executable, "-m", "optuna_dashboard"]
    log = stores["root"] / f"optuna-dashboard-{port}.log"
    with log.open("w") as out:
        server = subprocess.Popen([*command, stores["storage"], "--port", str(port), "--host", "127.0.0.1"],
                                  stdout=out, stderr=subprocess.STDOUT, cwd=stores["root"])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"optuna-dashboard exited ({server.returncode}): {log.read_text()[-2000:]}")
        try:
            if requests.get(f"{url}/api/studies", timeout=2).ok:
                break
        except requests.RequestException:
            pass
        time.sleep(0.5)
    else:
        server.terminate()
        pytest.fail(f"optuna-dashboard did not start: {log.read_text()[-2000:]}")
    driver = chrome(1500, 1000)
    try:
        yield {"url": url, "driver": driver, "stores": stores, "shots": screenshots(stores["root"])}
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=30)


def test_api_lists_the_pair_study_with_named_objectives(dashboard):
    summaries = requests.get(f"{dashboard['url']}/api/studies", timeout=30).json()["study_summaries"]
    study = next(s for s in summaries if s["study_name"] == PAIR)
    assert study["directions"] == ["maximize", "minimize", "minimize"]
    attrs = {a["key"]: a["value"] for a in study["user_attrs"]}
    assert attrs["teacher"] == "scratch-base" and attrs["student"] == "scratch-tiny"
    detail = requests.get(f"{dashboard['url']}/api/studies/{study['study_id']}", timeout=30).json()
    assert detail["objective_names"] == list(OBJECTIVES)  # from study.set_metric_names
    assert len([t for t in detail["trials"] if t["state"] == "Complete"]) == 2


def test_study_page_names_objectives_and_draws_the_front(dashboard):
    driver, storage = dashboard["driver"], dashboard["stores"]["storage"]
    study_id = optuna.storages.get_storage(storage).get_study_id_from_name(PAIR)
    # the link a study prints at its end (on the dashboard's default port; here the test's own)
    printed = dashboard_lines(storage, STUDY)
    assert f"  {PAIR}: {dashboard_link('http://127.0.0.1:8080', study_id)}" in printed
    assert printed[1].split()[-1] == storage
    driver.get(dashboard_link(dashboard["url"], study_id))
    wait_for_text(driver, PAIR, timeout=120)
    for name in OBJECTIVES:  # named objectives, not "Objective 0", "Objective 1", "Objective 2"
        wait_for_text(driver, name)
    assert "Objective 0" not in driver.find_element("tag name", "body").text
    # the Pareto front plot: one marker per completed trial (both are on, or one is behind, the front)
    points = wait_until(lambda: len(driver.find_elements("css selector", "#graph-pareto-front .scatterlayer .point")),
                        "the Pareto front plot to draw its points", 120, driver)
    assert points == 2
    wait_for_text(driver, "Best Trials")
    wait_for_text(driver, "Study User Attributes")
    wait_for_text(driver, "scratch-tiny")  # the student user attribute, listed in that table
    time.sleep(1)
    driver.save_screenshot(str(dashboard["shots"] / "dashboard_study.png"))
