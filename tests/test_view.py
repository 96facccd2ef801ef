"""`scopeline view` end to end: the server (token, API, errors) and the page in headless Chromium
(Debian's chromium + chromium-driver, driven by Selenium): open the view, select a result, click a unit,
see its trace, reject it, label another, save, and find the new curation in the database."""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request

import pytest
from conftest import one_backend

from scopeline.pipeline import cnmf, curation, initialization, motion, presets
from scopeline.pipeline.ingest import ingest

pytestmark = pytest.mark.db

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def _get(url, token=None, data=None):
    """(status, JSON or bytes) of one request; ``token`` in the view's header."""
    req = urllib.request.Request(url, data=None if data is None else json.dumps(data).encode(),
                                 headers={"Content-Type": "application/json",
                                          **({"X-Scopeline-Token": token} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as reply:
            body = reply.read()
            return reply.status, json.loads(body) if reply.headers.get_content_type() == "application/json" else body
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.fixture
def served(db, sim_cells):
    """A processed simulated recording and the view serving it (in this process, on a free port)."""
    from scopeline import view

    one_backend(db, "mysql")
    (rec,) = ingest(sim_cells, "v1", "d1")
    presets.queue([rec.key], presets.stage_paramsets("default"), "cnmf")
    for table in (motion.MotionCorrection, initialization.Initialization, cnmf.CNMF):
        table.populate(reserve_jobs=True)
    running = view.start(curator="tester")
    yield running, presets.result_key(rec.key, "default")
    running.stop()


def test_the_server_refuses_requests_without_the_token_and_says_what_is_wrong(served):
    running, key = served
    from scopeline.view import data

    for path in ("/", "/api/results", "/static/view.js", f"/api/result/{data.result_id(key)}/unit/0"):
        code, body = _get(running.base + path)
        assert code == 403 and "token" in body["error"], (path, code, body)
        assert _get(running.base + path, token="not-the-token")[0] == 403
    code, body = _get(running.base + "/api/results", token=running.token)
    assert code == 200 and [r["subject"] for r in body["results"]] == ["v1"]
    rid = body["results"][0]["id"]
    code, res = _get(f"{running.base}/api/result/{rid}", token=running.token)
    assert code == 200 and len(res["units"]) == len(cnmf.CNMF.Unit & key) > 0
    assert all(u["contour"] and u["accepted"] for u in res["units"])
    unit = res["units"][0]["unit_id"]
    code, clip = _get(f"{running.base}/api/result/{rid}/unit/{unit}/clip", token=running.token)
    assert code == 200 and clip["png"].startswith("data:image/png;base64,") and len(clip["frames"]) == clip["n"] > 10
    # bad requests: named, nothing written
    assert _get(f"{running.base}/api/result/{rid}/unit/9999", token=running.token) == (400, {"error": f"{res['describe']}: no unit 9999"})
    code, body = _get(f"{running.base}/api/result/nonsense/unit/0", token=running.token)
    assert code == 400 and "result id" in body["error"]
    code, body = _get(f"{running.base}/api/result/{rid}/curation", token=running.token,
                      data={"change": {"labels": {str(unit): ["not-a-label"]}}, "parent": None})
    assert code == 400 and "not-a-label" in body["error"]
    code, body = _get(f"{running.base}/api/result/{rid}/curation", token=running.token, data={"change": {}, "parent": None})
    assert code == 400 and "nothing to save" in body["error"]
    assert not curation.curations(key)
    # a change made on a curation no longer in use is refused (someone saved another meanwhile)
    first = curation.apply_rules(key, "default")
    code, body = _get(f"{running.base}/api/result/{rid}/curation", token=running.token,
                      data={"change": {"reject": [unit]}, "parent": None})
    assert code == 409 and f"curation {first} is in use" in body["error"]
    assert [c["curation_id"] for c in curation.curations(key)] == [first]
    # ... and checked again inside the insert's transaction (a save from another process in between)
    from scopeline.core.curation import Edit

    with pytest.raises(curation.CurationConflict, match=f"curation {first} is in use now, not None"):
        curation.edit(key, Edit(reject=[unit]), parent=None, parent_in_use=True)
    assert [c["curation_id"] for c in curation.curations(key)] == [first]


@pytest.mark.skipif(not (CHROMIUM and DRIVER) and not os.environ.get("SCOPELINE_REQUIRE_BROWSER"),
                    reason="no chromium and chromedriver (apt-get install chromium chromium-driver)")
def test_curate_in_headless_chromium(served, tmp_path):
    """Open the view, select the result, click a unit on the image, see its trace, reject it by key, label
    another by button, save: a new manual curation on top of the one in use, with those decisions."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    running, key = served
    rules = curation.apply_rules(key, "none")  # the curation in use when the person starts
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,1000",
                "--enable-unsafe-swiftshader"):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(DRIVER), options=options)
    wait = WebDriverWait(browser, 60)
    try:
        browser.get(running.url())
        assert "token" not in browser.current_url  # the token left the address bar
        item = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, ".result")))
        item.click()
        wait.until(lambda b: b.execute_script("return document.body.dataset.unitShown !== undefined"))
        units = browser.execute_script("return window.scopelineView.result.units.map(u => [u.unit_id, u.x, u.y])")
        assert len(units) >= 3
        # click the second unit on the image, at its centroid
        target, x, y = units[1]
        canvas = browser.find_element(By.ID, "fov")
        scale = canvas.size["width"] / browser.execute_script("return window.scopelineView.result.width")
        ActionChains(browser).move_to_element_with_offset(
            canvas, (x + 0.5) * scale - canvas.size["width"] / 2, (y + 0.5) * scale - canvas.size["height"] / 2).click().perform()
        wait.until(lambda b: b.execute_script("return document.body.dataset.unitShown") == str(target))
        n_points = browser.execute_script("return document.getElementById('traces').data[0].y.length")
        assert n_points == int((motion.MotionCorrection & key).fetch1("n_frames"))
        assert f"unit {target}" in browser.find_element(By.ID, "unit-title").text
        browser.save_screenshot(str(tmp_path / "unit.png"))
        # reject it with the keyboard
        browser.find_element(By.TAG_NAME, "body").send_keys("r")
        assert "rejected" in browser.find_element(By.ID, "unit-title").text
        # label another (a row of the table) with the button
        other = units[2][0]
        browser.find_element(By.CSS_SELECTOR, f'#units tr[data-unit="{other}"]').click()
        wait.until(lambda b: b.execute_script("return document.body.dataset.unitShown") == str(other))
        Select(browser.find_element(By.ID, "label-pick")).select_by_value("dendrite")
        browser.find_element(By.ID, "label").click()
        assert "2 change(s) not saved" in browser.find_element(By.ID, "pending").text
        browser.find_element(By.ID, "note").send_keys("checked in the view")
        browser.find_element(By.ID, "save").click()
        wait.until(lambda b: b.execute_script("return document.body.dataset.saved !== undefined"))
        saved = int(browser.execute_script("return document.body.dataset.saved"))
        assert "in use" in browser.find_element(By.ID, "pending").text
        browser.save_screenshot(str(tmp_path / "saved.png"))
    finally:
        browser.quit()
    row = next(c for c in curation.curations(key) if c["curation_id"] == saved)
    assert row["kind"] == "manual" and row["parent"] == rules and row["in_use"] and row["curator"] == "tester"
    assert row["note"] == "checked in the view"
    st = curation.state(key, saved)
    assert not st[target].accepted and "rejected by hand" in st[target].reason
    assert st[other].accepted and st[other].labels == ("dendrite",)
    assert all(s.accepted for u, s in st.items() if u != target)
    assert curation.state(key, rules)[target].accepted  # the parent is untouched
