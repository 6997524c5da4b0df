"""`stackgan serve` through its real HTTP server on a free loopback port."""
import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from stackgan.demo import PRETRAINED_SHAPES


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(*extra: str):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "stackgan", "serve", str(PRETRAINED_SHAPES), "--port", str(port),
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "2"})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
                if r.status == 200:
                    return proc, base
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read())
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not come up")


def post(base: str, body, timeout: float = 120) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(base + "/api/generate", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def png(data_url: str) -> Image.Image:
    assert data_url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))


@pytest.fixture(scope="module")
def server():
    proc, base = start()
    yield base
    proc.terminate()
    proc.wait(timeout=30)


def test_generate_health_page_and_openapi(server):
    with urllib.request.urlopen(server + "/healthz") as r:
        assert json.loads(r.read())["status"] == "ok"
    status, res = post(server, {"text": "a large pink striped triangle in the upper right", "n": 3, "seed": 11})
    assert status == 200 and res["seed"] == 11 and len(res["images"]) == 3
    assert png(res["images"][0]["stage1"]).size == (64, 64) and png(res["images"][0]["stage2"]).size == (256, 256)
    assert res["timings_ms"]["total"] >= res["timings_ms"]["generate"] > 0
    again = post(server, {"text": "a large pink striped triangle in the upper right", "n": 3, "seed": 11})[1]
    assert again["images"] == res["images"]  # the same seed, the same images
    ca = post(server, {"text": "a large pink striped triangle in the upper right", "n": 3, "seed": 11, "vary": "ca"})[1]
    assert ca["images"][0] == res["images"][0] and ca["images"][1] != res["images"][1]  # z kept, CA redrawn
    status, res = post(server, {"text": "a blue circle"})
    assert status == 200 and len(res["images"]) == 4 and isinstance(res["seed"], int)  # defaults: 4, random seed
    with urllib.request.urlopen(server + "/") as r:
        page = r.read().decode()
    assert "Vary the Conditioning Augmentation sample" in page and "pink striped triangle" in page
    with urllib.request.urlopen(server + "/openapi.json") as r:
        assert "/api/generate" in json.loads(r.read())["paths"]


@pytest.mark.parametrize("body, message", [
    ({"text": ""}, "the sentence is empty"),
    ({"text": "   \t"}, "the sentence is empty"),
    ({"text": "a" * 301}, "at most 300"),
    ({"text": "a red circle", "n": 0}, "greater than or equal to 1"),
    ({"text": "a red circle", "n": 17}, "less than or equal to 16"),
    ({"text": "a red circle", "seed": -1}, "greater than or equal to 0"),
    ({"text": "a red circle", "vary": "both-ways"}, "'both', 'ca' or 'z'"),
    ({"text": 5}, "valid string"),
    ({"n": 2}, "Field required"),
    (b"{not json", "JSON decode error"),
])
def test_invalid_requests_get_a_clear_422(server, body, message):
    status, res = post(server, body)
    assert status == 422 and message in json.dumps(res["detail"])


def test_fifty_concurrent_requests_then_still_healthy(server):
    bodies = [{"text": f"a small {c} circle in the middle", "n": 1, "seed": i}
              for i, c in enumerate(["red", "blue", "green", "yellow", "pink"] * 10)]
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda b: post(server, b, timeout=300), bodies))
    assert all(status == 200 for status, _ in answers)
    assert [res["seed"] for _, res in answers] == list(range(50))
    assert all(png(res["images"][0]["stage2"]).size == (256, 256) for _, res in answers)
    assert answers[0][1]["images"] == post(server, bodies[0])[1]["images"]  # answered for its own request
    with urllib.request.urlopen(server + "/healthz") as r:
        assert r.status == 200


def test_a_full_queue_is_refused_with_429():
    proc, base = start("--max-queue", "1")
    try:
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda i: post(base, {"text": "a red circle", "n": 16, "seed": i}), range(12)))
        codes = [status for status, _ in answers]
        assert 200 in codes and 429 in codes and set(codes) <= {200, 429}
        assert all("busy" in res["detail"] for status, res in answers if status == 429)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_page_in_headless_chromium(server, tmp_path):
    """Chromium loads the page, an example sentence is clicked and generated, the images render."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("chromium / chromedriver not installed (`make test` installs them with apt-get where it can)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1400"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(server + "/")
        box = driver.find_element(By.ID, "text")
        box.send_keys("a tiny striped orange circle, in the top left, against a gray backdrop")
        driver.find_element(By.ID, "n").clear()
        driver.find_element(By.ID, "n").send_keys("2")
        driver.find_element(By.ID, "seed").send_keys("5")
        driver.find_element(By.ID, "go").click()
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#out img.stage2")) == 2)
        wait.until(lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", im)
                                 for im in d.find_elements(By.CSS_SELECTOR, "#out img")))
        sizes = [driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", im)
                 for im in driver.find_elements(By.CSS_SELECTOR, "#out img")]
        assert sizes == [[64, 64], [256, 256]] * 2
        assert driver.find_element(By.ID, "status").text.startswith("seed 5, ")
        first = driver.find_element(By.CSS_SELECTOR, "#out img.stage2").get_attribute("src")
        driver.find_element(By.ID, "vary-ca").click()
        wait.until(lambda d: "(ca)" in d.find_element(By.ID, "status").text)
        assert driver.find_element(By.CSS_SELECTOR, "#out img.stage2").get_attribute("src") == first  # image 0 kept
        driver.find_element(By.CSS_SELECTOR, "a.ex").click()
        assert driver.find_element(By.ID, "text").get_attribute("value").startswith("a drawing of a large pink")
        shot = tmp_path / "page.png"
        driver.save_screenshot(str(shot))
        assert Image.open(shot).size[0] > 0
    finally:
        driver.quit()


def test_the_real_server_checks_host_numbers_and_body_size(server):
    port = server.rsplit(":", 1)[1]
    req = urllib.request.Request(server + "/healthz", headers={"Host": "evil.example.com"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 400  # bound to 127.0.0.1: foreign Host headers are not served
    req = urllib.request.Request(server + "/healthz", headers={"Host": f"localhost:{port}"})
    with urllib.request.urlopen(req) as r:
        assert r.status == 200
    assert post(server, b'{"text": "a", "seed": 1e400}')[0] == 422
    assert post(server, json.dumps({"text": "a red circle", "pad": "x" * 100_000}).encode())[0] == 413
