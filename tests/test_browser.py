"""The MLflow UI in a real browser: a 2-trial study's runs (opened by the link a study prints), its Pareto-only
link, its pareto tag and its Pareto plot render.

Needs Debian's chromium and chromium-driver (``.ci/run`` installs them) and selenium (a test extra).
Screenshots go to $STUDY_SCREENSHOTS (default: the test's temporary folder); ``STUDY_SCREENSHOTS=docs/images``
refreshes the documentation's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient

from browser_support import CHROMIUM, DRIVER, STUDY, body_text, chrome, free_port, quick_study, screenshots, \
    wait_for_text, wait_until
from study.reporting.ui_links import PARETO_FILTER, runs_link

pytest.importorskip("selenium.webdriver")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver")]

# the columns the run list is shown with: the three objectives, the test score, the scheme and the pareto tag
COLUMNS = ("macro_f1_validation", "latency_vs_teacher", "size_mb", "macro_f1", "quant_scheme", "pareto")
HIDDEN = ("Dataset", "Source", "Models")  # attribute columns our runs leave empty


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    stores = quick_study(tmp_path_factory)
    tracking = stores["tracking"]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=stores["root"],
                              env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=2).ok:
                break
        except requests.RequestException:
            time.sleep(0.5)
    else:
        server.terminate()
        pytest.fail("mlflow server did not start")
    driver = chrome(1600, 1000)
    client = MlflowClient(tracking_uri=tracking)
    try:
        yield {"url": url, "driver": driver, "client": client, "shots": screenshots(stores["root"]),
               "experiment_id": client.get_experiment_by_name(STUDY).experiment_id}
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=30)


def _close_assistant(driver) -> None:
    """Close MLflow's assistant side panel (a quarter of the window) where it is open."""
    for button in driver.find_elements("css selector", "button[data-component-id='mlflow.assistant.chat_panel.close']"):
        try:
            button.click()
        except Exception:  # already gone
            pass


def _expand_parents(driver, children: list[str]) -> None:
    """Trial runs are nested under their pair study's parent run: expand the parents until ``children`` show. MLflow
    remembers which parents were expanded (per experiment), so a parent may be open already, and a click closes it."""
    def shown(timeout: float) -> bool:
        try:
            wait_until(lambda: all(c in body_text(driver).splitlines() for c in children), "", timeout)
            return True
        except AssertionError:
            return False

    for wait in (5, 60, 60):
        if shown(wait):
            return
        for button in driver.find_elements("css selector", "button[data-component-id*='runnamecellrenderer']"):
            button.click()
    raise AssertionError(f"{children} never showed; page shows: {body_text(driver)[:800]}")


def _choose_columns(driver, shown=COLUMNS, hidden=HIDDEN) -> None:
    """Tick ``shown`` and untick ``hidden`` in the run list's column selector (MLflow 3 shows no metric column until
    asked: 'Show more columns')."""
    from selenium.webdriver.common.keys import Keys

    driver.find_element("css selector", "button[data-component-id*='experimentviewrunscolumnselector']").click()
    for name, want in [*((n, True) for n in shown), *((n, False) for n in hidden)]:
        title = wait_until(lambda n=name: driver.find_element(
            "xpath", f"//span[contains(@class, 'tree-title') and text()='{n}']"), f"column {name!r} listed", 30, driver)
        node = title.find_element("xpath", "./ancestor::*[contains(@class, 'treenode')][1]")
        if ("checkbox-checked" in node.get_attribute("class")) != want:
            title.click()
        wait_until(lambda: ("checkbox-checked" in node.get_attribute("class")) == want, f"column {name!r} toggled", 30)
    driver.find_element("tag name", "body").send_keys(Keys.ESCAPE)


def test_run_link_opens_the_runs_with_their_metrics(ui):
    client, driver = ui["client"], ui["driver"]
    trials = client.search_runs([ui["experiment_id"]], "tags.role = 'trial'")
    assert len(trials) == 2
    link = runs_link(ui["url"], ui["experiment_id"])  # the link a study prints at its end
    assert link.endswith(f"/#/experiments/{ui['experiment_id']}/runs?workflowType=machine_learning")
    driver.get(link)
    wait_for_text(driver, f"{STUDY}.scratch-base.scratch-tiny")
    # the model-training view (a bare experiment link opens MLflow 3's GenAI overview of traces instead)
    assert "workflowType=machine_learning" in driver.current_url and "/runs" in driver.current_url
    _close_assistant(driver)
    _expand_parents(driver, ["trial-0", "trial-1"])
    _choose_columns(driver)
    for run in trials:  # each trial's objectives are on the page, as logged
        for metric in ("macro_f1_validation", "size_mb"):
            wait_for_text(driver, str(run.data.metrics[metric])[:5])
    for name in COLUMNS:
        wait_for_text(driver, name[:8])  # column headers are cut to their width
    time.sleep(1)  # let the table settle before the screenshot
    driver.save_screenshot(str(ui["shots"] / "mlflow_runs.png"))


def test_pareto_link_shows_only_pareto_runs(ui):
    client, driver = ui["client"], ui["driver"]
    runs = client.search_runs([ui["experiment_id"]])
    on_front = sorted(r.info.run_name for r in runs if r.data.tags.get("pareto") == "true")
    elsewhere = sorted(r.info.run_name for r in runs if r.data.tags.get("pareto") != "true"
                       and r.data.tags.get("role") != "study")  # the parent is listed to nest its trials under
    assert on_front and f"{STUDY} report" in elsewhere  # the report run carries no pareto tag: filtered out
    driver.get("about:blank")
    driver.get(runs_link(ui["url"], ui["experiment_id"], PARETO_FILTER))
    wait_for_text(driver, f"{STUDY}.scratch-base.scratch-tiny")
    search = driver.find_element("css selector", "input[data-component-id*='runssearchautocomplete']")
    assert search.get_attribute("value") == PARETO_FILTER
    _close_assistant(driver)
    _expand_parents(driver, on_front)
    time.sleep(2)  # the whole filtered list has arrived with the front's trials; nothing else may follow
    text = driver.find_element("tag name", "body").text
    assert [name for name in elsewhere if name in text.splitlines()] == []
    driver.save_screenshot(str(ui["shots"] / "mlflow_pareto_runs.png"))


def test_trial_run_page_shows_the_pareto_tag(ui):
    client, driver = ui["client"], ui["driver"]
    run = client.search_runs([ui["experiment_id"]], "tags.role = 'trial' and tags.pareto = 'true'")[0]
    driver.get(f"{ui['url']}/#/experiments/{ui['experiment_id']}/runs/{run.info.run_id}?workflowType=machine_learning")
    wait_for_text(driver, "pareto")
    wait_for_text(driver, "macro_f1")
    _close_assistant(driver)
    driver.save_screenshot(str(ui["shots"] / "mlflow_trial.png"))


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
    parent = client.search_runs([ui["experiment_id"]], "tags.role = 'study'")[0]
    driver.get("about:blank")
    driver.get(f"{ui['url']}/#/experiments/{ui['experiment_id']}/runs/{parent.info.run_id}/artifacts/pareto_front.html"
               "?workflowType=machine_learning")
    wait_for_text(driver, "pareto_front.csv")  # the artifact browser lists the run's files
    _close_assistant(driver)
    assert _rendered_in_viewer(driver, [".js-plotly-plot .main-svg"]), "the plotly figure did not render"
    driver.save_screenshot(str(ui["shots"] / "mlflow_pareto_plot.png"))


def test_report_renders_every_figure(ui):
    client, driver = ui["client"], ui["driver"]
    parent = client.search_runs([ui["experiment_id"]], "tags.role = 'study'")[0]
    driver.get("about:blank")  # a full load: a hash-only change would keep the previously selected artifact
    driver.get(f"{ui['url']}/#/experiments/{ui['experiment_id']}/runs/{parent.info.run_id}/artifacts/"
               f"report/{STUDY}.scratch-base.scratch-tiny.html?workflowType=machine_learning")
    wait_for_text(driver, "report")
    _close_assistant(driver)
    from objectives.trial import OBJECTIVES as O  # macro_f1_validation, latency_vs_teacher, size_mb

    assert O == ("macro_f1_validation", "latency_vs_teacher", "size_mb")
    expected = [f"pareto_{O[0]}_{O[1]}", f"pareto_{O[0]}_{O[2]}", "pareto_3d", *(f"history_{o}" for o in O),
                "hypervolume", *(f"importance_{o}" for o in O), "parallel_coordinates"]
    found = _rendered_in_viewer(driver, [f"#{n} .js-plotly-plot" for n in expected])
    assert found == [f"#{n} .js-plotly-plot" for n in expected]
    driver.save_screenshot(str(ui["shots"] / "mlflow_report.png"))
