"""The console in a real browser (Debian's chromium, headless, driven by chromedriver through
selenium) on a real network: VPCs built by real workers from commands given with the CLI.

The page is a canvas (cytoscape.js), so what it draws is read from the page's own graph
(`window.vpcqConsole.cy`, the elements cytoscape renders) and its panels from the DOM. Each
test saves screenshots to $VPCQ_ARTIFACTS (default: vpcq-artifacts under the system's temp
directory), never into the repository."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, Console
from tests.kernel.conftest import Net, wait_until
from vpcq.testing import probe

pytestmark = pytest.mark.kernel

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def artifacts() -> Path:
    where = Path(os.environ.get("VPCQ_ARTIFACTS") or Path(tempfile.gettempdir()) / "vpcq-artifacts")
    where = where.resolve()
    assert not where.is_relative_to(ROOT), f"$VPCQ_ARTIFACTS is inside the repository: {where}"
    where.mkdir(parents=True, exist_ok=True)
    return where


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("the browser test needs Debian's chromium and chromium-driver (./dev installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox",  # root, in a container: no setuid sandbox
                "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1600,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER, log_output=str(tmp_path / "driver.log")))
    driver.set_script_timeout(15)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def console(worker: Net) -> Iterator[Console]:
    c = Console(worker.env)
    try:
        yield c
    finally:
        assert c.stop() == 0, c.stderr()


def cli(net: Net, *args: str, input: str | None = None) -> str:
    p = net.vpcq(*args, input=input)
    assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p.stdout


def drawn(driver: Any) -> dict[str, dict[str, Any]]:
    """The page's objects (not its text blocks), by id: kind, status, what it lists."""
    return driver.execute_script(  # type: ignore[no-any-return]
        "const out = {};"
        "window.vpcqConsole.cy.elements('[kind != \"text\"]').forEach((e) => {"
        "  out[e.id()] = {kind: e.data('kind'), status: e.data('status'), mark: e.data('mark') || null,"
        "                 lines: e.data('lines') || [], title: e.data('title'),"
        "                 notes: (e.data('notes') || []).map((n) => [n.kind, n.text, n.lines])}; });"
        "return out;")


def page_state(driver: Any) -> dict[str, Any]:
    return driver.execute_script(  # type: ignore[no-any-return]
        "const s = window.vpcqConsole && window.vpcqConsole.state;"
        "return s ? {live: s.live, seq: s.seq, now: s.now, updates: s.updates} : null;")


# the VPCs and subnets drawn (partly) outside the map's visible area
_OUTSIDE = (
    "const cy = window.vpcqConsole.cy, w = cy.width(), h = cy.height();"
    "return cy.nodes('[kind = \"vpc\"], [kind = \"subnet\"]').filter((n) => {"
    "  const b = n.renderedBoundingBox(); return b.x1 < 0 || b.y1 < 0 || b.x2 > w || b.y2 > h; })"
    ".map((n) => n.id());")


def test_the_console_shows_the_network_live_and_as_it_was(worker: Net, console: Console, browser: Any):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    net, driver = worker, browser
    a, b = net.name("a"), net.name("b")
    rules = net.home / "rules.json"
    rules.write_text(json.dumps({"ingress": [{"protocol": "tcp", "port": "8000", "action": "allow"},
                                         {"protocol": "tcp", "port": "22", "action": "deny"}]}))
    cli(net, "submit", "-f", "-", input="\n".join([
        f"create-vpc {a} 10.0.0.0/16",
        f"add-subnet {a} web 10.0.1.0/24 --type public",
        f"add-subnet {a} db 10.0.2.0/24 --type private",
        f"deploy-app {a} web --port 8000",
        f"apply-firewall {a} web {rules}",
        f"create-vpc {b} 10.1.0.0/16",
        f"add-subnet {b} app 10.1.1.0/24 --type public",
        f"peer-vpcs {a} {b}",
    ]))
    state = net.client().state()
    c = console.start()
    shots = artifacts()

    # without the token (or with a wrong one) the page is refused, and nothing of it loads
    for url in (c.base + "/", c.base + "/?token=wrong", c.base + "/api/graph"):
        driver.get(url)
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "vpcq ui refused this request" in body, (url, body)
        assert driver.execute_script("return typeof window.vpcqConsole") == "undefined"

    # with it: every VPC and subnet of the log, drawn where the page shows it
    driver.get(c.url)
    assert "token" not in driver.current_url  # taken out of the address bar, kept in a cookie
    assert wait_until(lambda: (page_state(driver) or {}).get("seq") == state.seq, 15), page_state(driver)
    objects = drawn(driver)
    want = {f"vpc:{v.name}" for v in state.vpcs.values()}
    want |= {f"subnet:{v.name}/{s}" for v in state.vpcs.values() for s in v.subnets}
    assert {k for k, o in objects.items() if o["kind"] in ("vpc", "subnet")} == want
    assert objects[f"peering:{a}|{b}"]["kind"] == "peering"
    assert objects[f"subnet:{a}/web"]["lines"] == [
        "public · 10.0.1.0/24", "host 10.0.1.1 · gw 10.0.1.254", "app :8000 · fw 2 rules, default allow"]
    assert objects[f"subnet:{a}/db"]["lines"][0] == "private · 10.0.2.0/24"
    assert all(o["status"] == "ok" for o in objects.values()), objects
    outside = driver.execute_script(_OUTSIDE)
    assert outside == [], outside  # all of it on screen, none scrolled away
    rows = driver.find_elements(By.CSS_SELECTOR, "#timeline tbody tr")
    assert len(rows) == 8 and rows[-1].text.split()[3:5] == ["create-vpc", a]
    driver.save_screenshot(str(shots / "console-live.png"))

    # the audit log of one VPC, and a command's whole story on click
    Select(driver.find_element(By.ID, "vpc-filter")).select_by_value(b)
    assert wait_until(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#timeline tbody tr")) == 3, 5)
    whats = [r.find_element(By.CSS_SELECTOR, ".what").text
             for r in driver.find_elements(By.CSS_SELECTOR, "#timeline tbody tr")]
    assert whats == [f"peer-vpcs {a} {b}", f"add-subnet {b} app 10.1.1.0/24 --type public",
                     f"create-vpc {b} 10.1.0.0/16"]
    driver.find_elements(By.CSS_SELECTOR, "#timeline tbody tr")[0].click()
    assert wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "#details-body ol.events li"), 5)
    story = [li.find_element(By.CSS_SELECTOR, ".type").text
             for li in driver.find_elements(By.CSS_SELECTOR, "#details-body ol.events li")]
    assert story == ["CommandAccepted", "VpcsPeered", "ChangeApplied"]
    assert driver.find_element(By.ID, "details-title").text == f"peer-vpcs {a} {b}"
    Select(driver.find_element(By.ID, "vpc-filter")).select_by_value("")

    # live: a command given with the CLI is drawn, without a reload, within 1 s of its outcome
    driver.execute_script(
        "window.__sameDocument = true; window.__shown = null;"
        "window.vpcqConsole.cy.on('add', 'node', (ev) => {"
        f"  if (ev.target.id() === 'subnet:{a}/extra' && ev.target.data('status') === 'ok'"
        "      && window.__shown === null) window.__shown = Date.now(); });")
    updates = page_state(driver)["updates"]
    before = net.client().state().seq
    out = json.loads(cli(net, "add-subnet", a, "extra", "10.0.3.0/24", "--json"))
    assert out["status"] == "applied", out
    assert wait_until(lambda: driver.execute_script("return window.__shown"), 5)
    shown_ms = driver.execute_script("return window.__shown")
    outcome = next(e for e in reversed(net.client().events())
                   if e.type == "ChangeApplied" and e.command_id == out["command_id"])
    late = shown_ms / 1000 - datetime.fromisoformat(outcome.time).timestamp()
    assert late < 1.0, f"drawn {late:.3f} s after its outcome"
    print(f"the new subnet was drawn {late:.3f} s after its outcome")
    assert driver.execute_script("return window.__sameDocument") is True  # no reload
    assert page_state(driver)["updates"] > updates
    row = f"//table[@id='timeline']//td[@class='what' and text()='add-subnet {a} extra 10.0.3.0/24 --type private']"
    assert wait_until(lambda: driver.find_elements(By.XPATH, row), 3)

    # time travel, as a user types a seq: the network right before that command, and what
    # changed since
    field = driver.find_element(By.ID, "seq-input")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(str(before), Keys.TAB)
    assert wait_until(lambda: (lambda s: not s["live"] and s["seq"] == before)(page_state(driver)), 5), \
        page_state(driver)
    then = drawn(driver)
    assert f"subnet:{a}/extra" not in then
    assert {k for k, o in then.items() if o["kind"] in ("vpc", "subnet")} == want
    assert driver.find_element(By.ID, "mode").text == "time travel"
    changes = driver.find_element(By.ID, "changes-list").text
    assert "subnet extra" in changes and driver.find_element(By.ID, "changes").is_displayed()
    driver.save_screenshot(str(shots / "console-then.png"))

    # further back, with the slider's arrow keys: before VPC b and the peering, only a was there
    peered = next(e.seq for e in net.client().events() if e.type == "CommandAccepted"
                  and e.event.kind == "create-vpc" and e.event.args.get("name") == b) - 1
    slider = driver.find_element(By.ID, "seq-slider")
    assert slider.get_attribute("value") == str(before)
    slider.send_keys(*[Keys.ARROW_LEFT] * (before - peered))
    assert wait_until(lambda: page_state(driver)["seq"] == peered, 5), page_state(driver)
    earlier = drawn(driver)
    assert {k for k, o in earlier.items() if o["kind"] in ("vpc", "subnet", "peering")} == {
        f"vpc:{a}", f"subnet:{a}/web", f"subnet:{a}/db"}
    # and back to live, where the new subnet is
    driver.find_element(By.ID, "live-btn").click()
    assert wait_until(lambda: page_state(driver)["live"] and f"subnet:{a}/extra" in drawn(driver), 5)
    driver.execute_script("window.vpcqConsole.cy.zoom(2.5)")  # as a user zooms in
    assert driver.execute_script(_OUTSIDE) != []
    driver.find_element(By.ID, "fit-btn").click()
    assert driver.execute_script(_OUTSIDE) == []

    # drift, repaired with the CLI, is shown on the subnet it concerned (and only there)
    probe.save(f"{a}-web", "iptables", "-F")
    cli(net, "repair", a)
    assert wait_until(lambda: drawn(driver)[f"subnet:{a}/web"]["notes"], 3), drawn(driver)[f"subnet:{a}/web"]
    objects = drawn(driver)
    ((kind, text, lines),) = objects[f"subnet:{a}/web"]["notes"]
    assert kind == "drift" and text.startswith("drift repaired at ") and text.endswith(": 1 step")
    assert lines == [f"update rules in {a}-web"]
    assert [k for k, o in objects.items() if o["notes"]] == [f"subnet:{a}/web"]
    assert wait_until(lambda: driver.find_elements(
        By.XPATH, "//table[@id='timeline']//td[@class='what' and text()='drift repaired: 1 step']"), 3)
    driver.save_screenshot(str(shots / "console-drift.png"))
    print(f"screenshots in {shots}")
