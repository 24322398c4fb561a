"""The served executive view in a real headless Chromium: sign in, open every page, find the KPI values.

`streamlit run` on a free loopback port over the fixture store; the overview's screenshot is saved to
``artifacts/app_overview.png`` (git-ignored) for a person to look at. Default period: the last 30 days
of the fixture (2026-10-29..11-27, day indexes 30..59).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.fixtures import services
from tests.fixtures.app.store import build_store

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]

REPO = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = services.find("chromium"), services.find("chromedriver")
PASSWORD = "browser-Secr3t-pw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    services.require("chromium", "chromedriver")
    tmp = tmp_path_factory.mktemp("browser")
    build_store(tmp / "published")
    port = free_port()
    env = {
        **os.environ,
        "PULSO_PUBLISHED": str(tmp / "published"),
        "PULSO_APP_PASSWORD": PASSWORD,
        "PULSO_APP_ACCESS_LOG": str(tmp / "access.log"),
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    }
    log = open(tmp / "streamlit.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app/streamlit_app.py",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--server.fileWatcherType",
            "none",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/_stcore/health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
            assert proc.poll() is None, (tmp / "streamlit.log").read_text()
        else:
            pytest.fail("streamlit did not become healthy in 60 s")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        output = (tmp / "streamlit.log").read_text()
        assert PASSWORD not in output and "Traceback" not in output, output


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        "--window-size=1600,2300",
        "--lang=es-AR",
    ):
        options.add_argument(flag)
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield drv
    drv.quit()


def page_text(driver) -> str:
    """Visible text plus the data grids' cell text (drawn on canvas, mirrored in an accessible table)."""
    # One script call, so an element re-rendered between two reads never goes stale under us.
    return driver.execute_script(
        "return document.body.innerText + '\\n' + Array.from(document.querySelectorAll('[role=gridcell]'))"
        ".map(e => e.textContent).join('\\n');"
    )


def wait_for(driver, *needles: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = page_text(driver)
        if all(n in text for n in needles) and "Running..." not in text:
            return text
        time.sleep(0.3)
    missing = [n for n in needles if n not in text]
    raise AssertionError(f"not found on the page: {missing}\n--- page ---\n{text[:3000]}")


def open_page(driver, label: str) -> None:
    from selenium.webdriver.common.by import By

    link = next(a for a in driver.find_elements(By.TAG_NAME, "a") if a.text.strip().endswith(label))
    link.click()


def test_sign_in_and_every_page_in_a_real_browser(server, driver):
    from selenium.webdriver.common.by import By

    driver.get(server)
    wait_for(driver, "Ingresá para ver los datos de Pulso.")
    deadline = time.monotonic() + 30  # the form's inputs arrive just after the intro text
    while not driver.find_elements(By.CSS_SELECTOR, "input[type=password]") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "Costo de infraestructura" not in page_text(driver)  # nothing before signing in
    driver.find_element(By.CSS_SELECTOR, "input[type=text]").send_keys("maria")
    driver.find_element(By.CSS_SELECTOR, "input[type=password]").send_keys(PASSWORD)
    next(b for b in driver.find_elements(By.TAG_NAME, "button") if b.text == "Iniciar sesión").click()

    # Overview: cost over 30 days = 30 x 1000 + 10 x (30+...+59); previous 30 days 34,350.
    text = wait_for(
        driver,
        "US$ 43.350",
        "+US$ 9.000,00",
        "93,38 %",
        "Metas de la estrategia",
        "≤ US$ 12.000,00",
        "● Fuera de meta",
        "datos hasta 27/11/2026",
    )
    assert "Sesión: maria" in text
    time.sleep(1.0)  # let the sparklines finish drawing before the screenshot
    artifacts = REPO / "artifacts"
    artifacts.mkdir(exist_ok=True)
    driver.save_screenshot(str(artifacts / "app_overview.png"))

    open_page(driver, "Confiabilidad")
    wait_for(driver, "Disponibilidad y presupuesto de error", "250 ms", "450 ms", "12,0 min", "90,00 %")
    open_page(driver, "Economía unitaria")
    wait_for(driver, "Costo compartido y cómo se repartió", "US$ 43.350,00", "US$ 6.000,00")  # shared 30 x 200
    open_page(driver, "Crecimiento")
    wait_for(driver, "55,0 %", "US$ 309.000,00", "395")
    open_page(driver, "Pagos")
    wait_for(driver, "Rechazos por motivo", "cc_rejected_insufficient_amount", "93,38 %")
    open_page(driver, "Geografía")
    wait_for(driver, "Buenos Aires", "Córdoba", "94,24 %", "83,33 %")
    open_page(driver, "Alertas")
    wait_for(driver, "Sin alertas en el período.")
