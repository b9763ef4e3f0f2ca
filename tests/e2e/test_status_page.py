"""The status page and playground (GET /ui) in a real browser: Debian's headless Chromium
driven by Selenium, against a worker on the bundled model.

No timed assertions: every wait is a WebDriverWait whose timeout only guards against a hang.
A machine without Chromium fails here (`llm_worker_rbee.testing.browser` says what to
install; `.ci/run` installs it), it does not skip.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TypeVar

import httpx
import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from llm_worker_rbee.testing.browser import headless_chromium
from llm_worker_rbee.testing.process import WorkerProcess

pytestmark = pytest.mark.real_model

ARGS = ["--slots", "2", "--ctx-size", "2048", "--threads", "1"]
KEY = "page-test-key"
HANG_GUARD_S = 120  # a wait ends when its condition holds; this only stops a hang
T = TypeVar("T")


@pytest.fixture(scope="module")
def page_worker() -> Iterator[WorkerProcess]:
    process = WorkerProcess(ARGS).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    driver = headless_chromium()
    yield driver
    driver.quit()


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], T]) -> T:
    result: T = WebDriverWait(driver, HANG_GUARD_S, poll_frequency=0.2).until(condition)
    return result


def text(driver: WebDriver, css: str) -> str | None:
    """The shown text of the first element `css` finds (None: there is none). Read in one
    script, so the page's re-render between a find and a read cannot make it stale."""
    found = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;", css
    )
    return None if found is None else str(found).strip()


def fact(driver: WebDriver, name: str) -> str | None:
    return text(driver, f'dd[data-field="{name}"]')


def slot_jobs(driver: WebDriver, css: str = "#slot-rows tr[data-job]") -> list[str]:
    """The job ids of the slot rows shown."""
    jobs = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((r) => r.dataset.job);", css
    )
    return [str(job) for job in jobs]


def cancelled_total(url: str) -> float:
    metrics = httpx.get(f"{url}/metrics").text
    found = re.search(r'request_success_total\{finished_reason="cancelled"\} (\S+)', metrics)
    return float(found.group(1)) if found else 0.0


def slots_idle(url: str, headers: dict[str, str] | None = None) -> bool:
    slots = httpx.get(f"{url}/v1/slots", headers=headers).json()["slots"]
    return not any(slot["busy"] for slot in slots)


def open_page(driver: WebDriver, url: str) -> None:
    driver.get(f"{url}/ui")
    wait_for(driver, lambda d: text(d, "#state") == "ready")


@pytest.mark.behavior("HTTP-065")
def test_the_page_shows_ready_and_the_model_card(
    page_worker: WorkerProcess, browser: WebDriver
) -> None:
    open_page(browser, page_worker.url)
    card = httpx.get(f"{page_worker.url}/v1/status").json()["model"]
    wait_for(browser, lambda d: fact(d, "slots") != "—")
    assert text(browser, "#model-name") == card["id"]
    assert fact(browser, "name") == f"{card['name']} ({card['id']})"
    assert (fact(browser, "architecture") or "").startswith(card["architecture"] + ",")
    assert (fact(browser, "quantization") or "").startswith(card["quantization"] + ",")
    assert (fact(browser, "context") or "").startswith(f"{card['n_ctx']:,} tokens")
    assert fact(browser, "slots") == "2"
    assert fact(browser, "mode").startswith("fast")
    assert fact(browser, "backend") == "cpu · cpu:0 · 1 thread"
    assert fact(browser, "template") == "no (a plain transcript)"  # the bundled base model
    # The playground follows the model: no template, a plain completion.
    assert browser.find_element(By.ID, "mode-completion").is_selected()


@pytest.mark.behavior("HTTP-065")
def test_a_slot_row_appears_while_a_stream_runs_and_goes_when_it_ends(
    page_worker: WorkerProcess, browser: WebDriver
) -> None:
    open_page(browser, page_worker.url)
    body = {"prompt": "Once upon a time", "max_tokens": 1500, "ignore_eos": True, "stream": True}
    headers = {"X-Request-Id": "row-test"}
    with (
        httpx.Client(base_url=page_worker.url, timeout=HANG_GUARD_S) as client,
        client.stream("POST", "/v1/completions", json=body, headers=headers) as response,
    ):
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
        row = '#slot-rows tr[data-job="row-test"]'
        wait_for(browser, lambda d: "row-test" in slot_jobs(d))
        wait_for(browser, lambda d: text(d, f"{row} .phase") == "decode")
        assert text(browser, f"{row} .job") == "row-test"
        wait_for(browser, lambda d: int((text(d, f"{row} .tokens") or "0").replace(",", "")) > 0)
        assert text(browser, "#g-slots") == "1 / 2"
    # The client has gone: the worker ends the stream, and the row goes.
    wait_for(browser, lambda d: "row-test" not in slot_jobs(d))
    wait_for(browser, lambda d: text(d, "#slot-rows tr.empty") == "all slots idle")
    assert slots_idle(page_worker.url)


def fill(driver: WebDriver, field_id: str, value: str) -> None:
    element = driver.find_element(By.ID, field_id)
    element.clear()
    element.send_keys(value)


@pytest.mark.behavior("HTTP-066")
def test_the_playground_streams_text(page_worker: WorkerProcess, browser: WebDriver) -> None:
    open_page(browser, page_worker.url)
    fill(browser, "play-prompt", "The capital of France is")
    fill(browser, "f-max_tokens", "24")
    # Counts the turns of the page's event loop in which the output's text grew: streamed
    # text arrives in more than one.
    browser.execute_script(
        "window.pieces = 0; new MutationObserver((records) => {"
        " if (records.some((r) => r.type === 'characterData')) window.pieces++; })"
        ".observe(document.getElementById('play-output'), {characterData: true, subtree: true});"
    )
    browser.find_element(By.ID, "play-run").click()
    wait_for(browser, lambda d: (text(d, "#play-state") or "").startswith("done"))
    output = text(browser, "#play-output") or ""
    assert output.startswith("The capital of France is")
    assert len(output) > len("The capital of France is")
    assert browser.execute_script("return window.pieces") > 1
    end = text(browser, "#run-end")
    assert end in ("length", "stop")
    tokens = int(text(browser, "#run-tokens") or 0)
    assert tokens == 24 if end == "length" else 0 < tokens <= 24
    assert (text(browser, "#run-ttft") or "").endswith(("ms", " s"))
    assert float(text(browser, "#run-tps") or 0) > 0
    assert text(browser, "#play-error") == ""


@pytest.mark.behavior("HTTP-066")
def test_stop_frees_the_slot(page_worker: WorkerProcess, browser: WebDriver) -> None:
    open_page(browser, page_worker.url)
    cancelled = cancelled_total(page_worker.url)
    fill(browser, "f-max_tokens", "1500")
    checkbox = browser.find_element(By.ID, "f-ignore_eos")
    if not checkbox.is_selected():
        checkbox.click()
    browser.find_element(By.ID, "play-run").click()
    # The run's own row (its job id is the page's) is in the slots table, decoding.
    mine = wait_for(browser, lambda d: slot_jobs(d, "#slot-rows tr.mine"))
    job = mine[0]
    assert job.startswith("ui-")
    assert not slots_idle(page_worker.url)
    wait_for(browser, lambda d: text(d, "#run-tokens") != "—")  # text has come
    browser.find_element(By.ID, "play-stop").click()
    wait_for(browser, lambda d: (text(d, "#play-state") or "").startswith("stopped"))
    wait_for(browser, lambda d: slots_idle(page_worker.url))
    wait_for(browser, lambda d: cancelled_total(page_worker.url) == cancelled + 1)
    wait_for(browser, lambda d: job not in slot_jobs(d))
    assert text(browser, "#run-end") == "stopped"


@pytest.mark.behavior("HTTP-067", "HTTP-061")
def test_with_a_key_the_page_without_it_shows_no_data(browser: WebDriver) -> None:
    worker = WorkerProcess(ARGS, env={"LLM_WORKER_API_KEY": KEY}).start()
    try:
        browser.get(f"{worker.url}/ui")
        wait_for(browser, lambda d: d.find_element(By.ID, "key-panel").is_displayed())
        assert text(browser, "#state") == "key needed"
        assert text(browser, "#model-name") == "—"
        facts = browser.execute_script(
            "return [...document.querySelectorAll('dd[data-field]')].map((e) => e.innerText);"
        )
        assert facts and all(shown == "—" for shown in facts)
        assert text(browser, "#slot-rows") == "no data"
        model_id = httpx.get(f"{worker.url}/info").json()["model_id"]
        assert model_id not in browser.find_element(By.TAG_NAME, "body").text
        # A wrong key is refused and still shows nothing.
        fill(browser, "key-input", "not-the-key")
        browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
        wait_for(browser, lambda d: text(d, "#key-error") == "That key was refused.")
        assert text(browser, "#model-name") == "—"
        # The key, once: then the page shows the worker, and a reload does not ask again.
        fill(browser, "key-input", KEY)
        browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
        wait_for(browser, lambda d: text(d, "#state") == "ready")
        wait_for(browser, lambda d: text(d, "#model-name") == model_id)
        browser.refresh()
        wait_for(browser, lambda d: text(d, "#model-name") == model_id)
        assert not browser.find_element(By.ID, "key-panel").is_displayed()
    finally:
        worker.stop()
