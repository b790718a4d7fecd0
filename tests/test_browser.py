"""The MLflow UI in a real browser: a 2-trial study's runs, its pareto tag and its Pareto plot render.

Needs Debian's chromium and chromium-driver (``.ci/run`` installs them) and selenium (a test extra).
Screenshots go to $STUDY_SCREENSHOTS (default: the test's temporary folder).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient

from study.run import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    tracking = f"sqlite:///{root}/mlflow.db"
    assert main(["--n-trials", "2", "--quick", "--study-name", "browser", "--students", "scratch-tiny",
                 "--storage", f"sqlite:///{root}/optuna.db", "--tracking-uri", tracking,
                 "--cache-dir", str(root / "cache"), "--quiet"]) == 0
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root,
                              env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=2).ok:
                break
        except requests.RequestException:
            time.sleep(0.5)
    else:
        server.terminate()
        pytest.fail("mlflow server did not start")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1800,1000",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    shots = Path(os.environ.get("STUDY_SCREENSHOTS", root / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    try:
        yield {"url": url, "driver": driver, "client": MlflowClient(tracking_uri=tracking), "shots": shots}
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=30)


def _wait_for_text(driver, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in driver.find_element("tag name", "body").text:
            return
        time.sleep(0.5)
    raise AssertionError(f"{text!r} never appeared; page shows: {driver.find_element('tag name', 'body').text[:800]}")


def test_experiment_page_lists_the_study_and_its_trials(ui):
    client, driver = ui["client"], ui["driver"]
    exp = client.get_experiment_by_name("browser")
    driver.get(f"{ui['url']}/#/experiments/{exp.experiment_id}/runs")
    _wait_for_text(driver, "browser.scratch-base")
    # Trial runs are nested under their study's parent run: expand it.
    for button in driver.find_elements("css selector", "button[data-component-id*='runnamecellrenderer']"):
        button.click()
    _wait_for_text(driver, "trial-0")
    _wait_for_text(driver, "trial-1")
    driver.save_screenshot(str(ui["shots"] / "mlflow_experiment.png"))


def test_trial_run_page_shows_the_pareto_tag(ui):
    client, driver = ui["client"], ui["driver"]
    exp = client.get_experiment_by_name("browser")
    run = client.search_runs([exp.experiment_id], "tags.role = 'trial' and tags.pareto = 'true'")[0]
    driver.get(f"{ui['url']}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}")
    _wait_for_text(driver, "pareto")
    _wait_for_text(driver, "macro_f1")
    driver.save_screenshot(str(ui["shots"] / "mlflow_trial_run.png"))


def _rendered_in_viewer(driver, selectors: list[str], timeout: float = 120) -> list[str]:
    """Which ``selectors`` match inside the MLflow artifact viewer's iframe (which renders HTML artifacts).

    The viewer may replace its iframe while loading, so the frame is looked up afresh on every poll.
    """
    deadline = time.monotonic() + timeout
    found: list[str] = []
    while time.monotonic() < deadline:
        driver.switch_to.default_content()
        frames = driver.find_elements("css selector", "iframe")
        if frames:
            try:
                driver.switch_to.frame(frames[0])
                found = [s for s in selectors if driver.find_elements("css selector", s)]
            except Exception:  # the frame went stale between lookup and use
                found = []
            if len(found) == len(selectors):
                break
        time.sleep(1)
    driver.switch_to.default_content()
    return found


def test_pareto_plot_artifact_renders(ui):
    client, driver = ui["client"], ui["driver"]
    exp = client.get_experiment_by_name("browser")
    parent = client.search_runs([exp.experiment_id], "tags.role = 'study'")[0]
    driver.get("about:blank")
    driver.get(f"{ui['url']}/#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}/artifacts/pareto_front.html")
    _wait_for_text(driver, "pareto_front.csv")  # the artifact browser lists the run's files
    assert _rendered_in_viewer(driver, [".js-plotly-plot .main-svg"]), "the plotly figure did not render"
    driver.save_screenshot(str(ui["shots"] / "mlflow_pareto_plot.png"))


def test_report_renders_every_figure(ui):
    client, driver = ui["client"], ui["driver"]
    exp = client.get_experiment_by_name("browser")
    parent = client.search_runs([exp.experiment_id], "tags.role = 'study'")[0]
    driver.get("about:blank")  # a full load: a hash-only change would keep the previously selected artifact
    driver.get(f"{ui['url']}/#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}/artifacts/"
               "report/browser.scratch-base.scratch-tiny.html")
    from objectives.trial import OBJECTIVES as O  # macro_f1_validation, latency_vs_teacher, size_mb

    assert O == ("macro_f1_validation", "latency_vs_teacher", "size_mb")
    expected = [f"pareto_{O[0]}_{O[1]}", f"pareto_{O[0]}_{O[2]}", "pareto_3d", *(f"history_{o}" for o in O),
                "hypervolume", *(f"importance_{o}" for o in O), "parallel_coordinates"]
    found = _rendered_in_viewer(driver, [f"#{n} .js-plotly-plot" for n in expected])
    assert found == [f"#{n} .js-plotly-plot" for n in expected]
    driver.save_screenshot(str(ui["shots"] / "mlflow_report.png"))
