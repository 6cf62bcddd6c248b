"""Headless Chromium for the tests that look at pages (the Prefect UI, the HTML report)."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time

import pytest

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", "--window-size=1400,1100")

# every <img> of the page: [src prefix, loaded, natural width]; a broken image is complete with width 0
IMAGES_JS = "return Array.from(document.images).map(i => [i.src.slice(0, 22), i.complete, i.naturalWidth])"


def chromium() -> tuple[str, str]:
    """The Debian chromium and its driver, installed when missing (root and apt only)."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver) and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=600)
        binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        pytest.skip("chromium and chromium-driver are not installed and could not be installed with apt-get")
    return binary, driver


@contextlib.contextmanager
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = chromium()
    opts = webdriver.ChromeOptions()
    for flag in FLAGS:
        opts.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="unirain-chromium-")
    opts.add_argument(f"--user-data-dir={profile}")
    opts.binary_location = binary
    b = webdriver.Chrome(options=opts, service=Service(driver))
    try:
        b.set_page_load_timeout(120)
        yield b
    finally:
        b.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(b, done, timeout: float = 90.0, every: float = 0.5):
    """Poll `done(b)` until it returns something truthy or the time runs out; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = done(b)
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def body_text(b) -> str:
    from selenium.webdriver.common.by import By

    return b.find_element(By.TAG_NAME, "body").text


def images(b) -> list[list]:
    return b.execute_script(IMAGES_JS)


def all_loaded(imgs: list[list], at_least: int = 1) -> bool:
    return len(imgs) >= at_least and all(complete and width > 0 for _, complete, width in imgs)
