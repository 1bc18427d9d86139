"""The web console in headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium's WebDriver client), one phase per run:

  console_browser.py status BASE TOKEN OUTDIR NODES
      the login form refuses a wrong token and takes the right one; the
      status page shows NODES nodes up; screenshots at phone and desktop size
  console_browser.py drain BASE TOKEN OUTDIR NODE
      drains NODE from its Drain button (confirming), waits until it holds
      nothing, then removes it from its Remove button
  console_browser.py down BASE TOKEN OUTDIR NODE
      NODE shows down and the cluster's health is no longer ok; screenshot

Prints "console checks passed" at the end of a phase that passed.
"""

import os
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

PHONE = (412, 915)
DESKTOP = (1280, 1000)


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    service = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    d = webdriver.Chrome(options=opts, service=service)
    d.set_window_size(*DESKTOP)
    return d


def text_of(d, css):
    try:
        return d.find_element(By.CSS_SELECTOR, css).text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def wait_for(d, what, cond, timeout=60):
    """Waits until cond() is true (retrying through htmx's re-renders)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if cond():
                return
        except (NoSuchElementException, StaleElementReferenceException):
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; page:\n{d.find_element(By.TAG_NAME, 'body').text}")


def sign_in(d, base, token):
    d.get(base + "/")
    d.find_element(By.ID, "token").send_keys(token)
    d.find_element(By.ID, "sign-in").click()
    wait_for(d, "the status page", lambda: text_of(d, "#nodes-summary") != "")


def click_confirmed(d, css):
    """Clicks a button that asks for confirmation, and confirms."""
    deadline = time.time() + 20
    while True:
        try:
            d.find_element(By.CSS_SELECTOR, css).click()
            WebDriverWait(d, 5).until(EC.alert_is_present())
            alert = d.switch_to.alert
            question = alert.text
            alert.accept()
            return question
        except (StaleElementReferenceException, TimeoutException):
            if time.time() > deadline:
                raise


def phase_status(d, base, token, out, nodes):
    d.get(base + "/")
    assert d.find_element(By.ID, "token"), "no login form"
    d.find_element(By.ID, "token").send_keys("not-a-token")
    d.find_element(By.ID, "sign-in").click()
    wait_for(d, "the refusal", lambda: "not known" in text_of(d, ".message.bad"))
    assert text_of(d, "#nodes-summary") == "", "a wrong token showed the status"

    sign_in(d, base, token)
    want = f"{nodes} up, 0 down, 0 out"
    wait_for(d, want, lambda: text_of(d, "#nodes-summary").startswith(want))
    rows = d.find_elements(By.CSS_SELECTOR, "#nodes tbody tr")
    assert len(rows) == nodes, f"{len(rows)} node rows"
    assert text_of(d, "#health-state").lower() == "ok", text_of(d, "#health-state")
    # Everything the page loads comes from the admin address itself.
    sources = d.execute_script(
        "return [...document.scripts].map(s => s.src).concat("
        "[...document.querySelectorAll('link[href]')].map(l => l.href))")
    assert sources and all(s.startswith(base + "/") for s in sources), sources
    assert d.execute_script("return typeof htmx") == "object", "htmx did not load"
    # htmx keeps the page fresh: the poll answers while we wait.
    wait_for(d, "an htmx refresh", lambda: d.execute_script(
        "return performance.getEntriesByType('resource')"
        ".some(e => e.name.endsWith('/ui/overview'))"), timeout=10)

    # The charts fill in from the sampler (one sample every 5 s).
    wait_for(d, "chart samples", lambda: d.execute_script(
        "return document.querySelector('#repair-todo-chart polyline')"
        ".getAttribute('points').split(' ').length") >= 2, timeout=20)
    # Client traffic as the nodes see it, beside repair.
    assert "written" in text_of(d, "#throughput"), text_of(d, "#throughput")
    assert d.find_elements(By.CSS_SELECTOR, "#write-rate-chart polyline"), "no write chart"
    assert d.find_elements(By.CSS_SELECTOR, "#read-rate-chart polyline"), "no read chart"
    d.save_screenshot(os.path.join(out, "status-desktop.png"))
    d.set_window_size(*PHONE)
    time.sleep(0.5)
    # Readable on a phone: nothing is wider than the screen, and each
    # node's buttons are within reach (nodes are cards there).
    overflow = d.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 1, f"the page is {overflow}px wider than a phone screen"
    off = d.execute_script(
        "return [...document.querySelectorAll('#nodes button')]"
        ".filter(b => b.getBoundingClientRect().right > window.innerWidth).length")
    assert off == 0, f"{off} node buttons are off a phone screen"
    d.save_screenshot(os.path.join(out, "status-phone.png"))


def phase_drain(d, base, token, out, node):
    sign_in(d, base, token)
    row = f"#node-{node}"
    question = click_confirmed(d, f"{row} button.drain")
    assert node in question, question
    wait_for(d, "the drain message", lambda: "is draining" in text_of(d, "#message"))
    wait_for(d, "the node marked draining", lambda: "draining" in
             d.find_element(By.CSS_SELECTOR, row).get_attribute("class"))
    wait_for(d, "the node emptied", lambda: text_of(d, f"{row} .fragments").startswith("0 ("),
             timeout=240)
    d.save_screenshot(os.path.join(out, "drained.png"))
    click_confirmed(d, f"{row} button.remove")
    wait_for(d, "the removal", lambda: "removed" in text_of(d, "#message"))
    wait_for(d, "the row gone", lambda: not d.find_elements(By.CSS_SELECTOR, row))


def phase_down(d, base, token, out, node):
    sign_in(d, base, token)
    row = f"#node-{node}"
    wait_for(d, "the node down", lambda: "down" in
             d.find_element(By.CSS_SELECTOR, row).get_attribute("class").split(), timeout=90)
    wait_for(d, "health degraded", lambda: text_of(d, "#health-state").lower() in ("degraded", "critical"))
    assert "1 down" in text_of(d, "#nodes-summary"), text_of(d, "#nodes-summary")
    d.save_screenshot(os.path.join(out, "node-down.png"))


def main():
    phase, base, token, out, arg = sys.argv[1:6]
    os.makedirs(out, exist_ok=True)
    d = browser()
    try:
        if phase == "status":
            phase_status(d, base, token, out, int(arg))
        elif phase == "drain":
            phase_drain(d, base, token, out, arg)
        elif phase == "down":
            phase_down(d, base, token, out, arg)
        else:
            raise SystemExit(f"unknown phase {phase}")
    except BaseException:
        d.save_screenshot(os.path.join(out, f"failed-{phase}.png"))
        raise
    finally:
        d.quit()
    print("console checks passed")


if __name__ == "__main__":
    main()
