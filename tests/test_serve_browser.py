"""test_serve_browser: the chat page at / in a real headless browser (Debian's chromium + chromedriver, selenium).

Loads the page, checks that it shows the model, the KV cache and sparsity
settings, sends a message, waits for the streamed answer and checks it is
the server's greedy answer to the same conversation (the page's request goes
through /v1/chat/completions), that tok/s is shown, and that the Stop button
ends a long answer and frees the slot. Saves a screenshot into the build
folder (serve-chat.png; docs/serve-chat.png is a copy of one). Also with an
API key: the page asks for it and then works.
"""
import os
import shutil
import time

import openai
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from test_serve_util import Server, require_model

require_model()
KEY = "page-key"
QUESTION = "What is the capital of France?"


def find(name, candidates):
    for c in candidates:
        path = shutil.which(c) or (c if os.path.exists(c) else None)
        if path:
            return path
    pytest.fail("%s not found (deploy/setup.sh installs chromium and chromium-driver)" % name)


@pytest.fixture(scope="module")
def srv():
    s = Server("-np", "2", "-c", 1024, "--api-key", KEY, "--kv-budget", "0.5", "--kv-type", "f16")
    yield s
    assert s.stop() == 0, s.errtext()


@pytest.fixture(scope="module")
def browser():
    opts = Options()
    opts.binary_location = find("chromium", ["chromium", "/usr/bin/chromium"])
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,760"]:
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(find("chromedriver", ["chromedriver", "/usr/bin/chromedriver"])),
                           options=opts)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


def text_of(browser, css):
    return [e.text for e in browser.find_elements(By.CSS_SELECTOR, css)]


def test_chat_page(srv, browser):
    browser.get(srv.base + "/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda b: "API key" in b.find_element(By.ID, "model").text)  # the server has a key: the page asks
    key = browser.find_element(By.ID, "key")
    key.send_keys(KEY)
    browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", key)
    wait.until(lambda b: b.find_element(By.ID, "model").text == "SmolLM2-135M-Instruct.Q4_1")
    kv = browser.find_element(By.ID, "kv").text
    assert "h2o" in kv and "budget 512" in kv and "f16" in kv, kv
    assert "off" in browser.find_element(By.ID, "sparsity").text
    assert "multi-process" in browser.find_element(By.ID, "runtime").text

    temp = browser.find_element(By.ID, "temp")
    temp.clear()
    temp.send_keys("0")
    mt = browser.find_element(By.ID, "maxtok")
    mt.clear()
    mt.send_keys("40")
    browser.find_element(By.ID, "input").send_keys(QUESTION)
    browser.find_element(By.ID, "send").click()
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".meta")) == 1)
    answer = text_of(browser, ".msg.assistant")[0]
    client = openai.OpenAI(base_url=srv.base + "/v1", api_key=KEY, max_retries=0)
    expected = client.chat.completions.create(model="SmolLM2-135M-Instruct.Q4_1", max_tokens=40, temperature=0,
                                              messages=[{"role": "user", "content": QUESTION}])
    assert answer == expected.choices[0].message.content.strip() or answer == expected.choices[0].message.content
    stats = browser.find_element(By.ID, "stats").text
    assert stats.endswith("tok/s") and float(stats.split()[0]) > 0, stats
    assert "tok/s" in text_of(browser, ".meta")[0] and "first token" in text_of(browser, ".meta")[0]

    # a second turn: the conversation goes along, the prefix is reused
    browser.find_element(By.ID, "input").send_keys("And of Italy?")
    browser.find_element(By.ID, "send").click()
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".meta")) == 2)
    assert len(text_of(browser, ".msg.user")) == 2 and len(text_of(browser, ".msg.assistant")) == 2
    assert "cached)" in text_of(browser, ".meta")[1] and " (0 cached)" not in text_of(browser, ".meta")[1]
    out = os.path.join(os.getcwd(), "serve-chat.png")
    browser.save_screenshot(out)
    print("screenshot:", out)

    # Stop: a long answer ends and the server frees the slot
    mt.clear()
    mt.send_keys("2000")
    browser.find_element(By.ID, "input").send_keys("Write a very long story about a lighthouse.")
    browser.find_element(By.ID, "send").click()
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".msg.assistant")) == 3 and
               len(b.find_elements(By.CSS_SELECTOR, ".msg.assistant")[2].text) > 20)
    browser.find_element(By.ID, "stop").click()
    wait.until(lambda b: text_of(b, ".meta")[-1] == "stopped")
    t0 = time.time()
    while srv.metrics({"Authorization": "Bearer " + KEY})["hearth_requests_running"] != 0:
        assert time.time() - t0 < 3
        time.sleep(0.02)
    # no script errors (the 401 of the first /props, before the key was typed, is expected)
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "401" not in e["message"]]
    assert not severe, severe
