"""Headless Chromium from the system's packages, driven by Selenium: the status page's
browser tests and its bench use it.

Selenium is given the browser (`/usr/bin/chromium`) and its driver (`/usr/bin/chromedriver`,
Debian's `chromium` and `chromium-driver`; `.ci/run` installs them) by path, so Selenium
Manager never looks for, or downloads, either. A machine without them fails here, with the
command that installs them, rather than skipping the tests.
"""

from __future__ import annotations

from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = "apt-get install -y chromium chromium-driver (.ci/run does it)"


class BrowserMissing(RuntimeError):
    """Chromium or its driver is not installed where the tests look."""


def headless_chromium(width: int = 1400, height: int = 1000) -> webdriver.Chrome:
    """A headless Chromium at `width` x `height` CSS pixels; the caller quits it."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            raise BrowserMissing(f"{path} is missing: {INSTALL_HINT}")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",  # nothing but the worker on loopback
        "--disable-component-update",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
