"""End to end: the practice project's app on a free local port, driven in a real headless browser.

Playwright for Python drives Debian's Chromium (/usr/bin/chromium; `make browser` installs it, as root:
`apt-get install -y chromium`); Playwright downloads no browser of its own. A missing browser FAILS this test.
The one explicit way to skip it is SKIP_BROWSER_TEST=1 (.ci/run sets it for its Python 3.12 leg only).

The page is driven offline (COURSE_OFFLINE=1, no API keys), as CI runs it: a small benchmark on the ONNX Runtime
int8 runtime (lab 4.5's export and quantization, through common.deployment) must put the model's row in the table,
an uploaded example image must get the course ViT's prediction, a photograph must get the out-of-distribution
warning, and screenshots go
to outputs/app/ (screenshot.png: the course-models tab; screenshot_benchmark.png: the benchmark tab).
"""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from common.course import outputs_dir, repo_root

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
START_TIMEOUT_S = 90
SKIP = os.environ.get("SKIP_BROWSER_TEST") == "1"

pytestmark = pytest.mark.skipif(SKIP, reason="SKIP_BROWSER_TEST=1 set explicitly (CI's Python 3.12 leg)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is not installed: run `make setup` (requirements-app.txt pins it).")
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: run `make browser` (as root: apt-get install -y chromium), "
            "or set SKIP_BROWSER_TEST=1 to skip this test explicitly."
        )
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def app_url():
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "LLAMA_API_BASE"}
    env.update(COURSE_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, str(repo_root() / "app" / "app.py"), "--port", str(port)],
        cwd=repo_root(),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    start, seen = time.perf_counter(), []
    try:
        while True:
            remaining = START_TIMEOUT_S - (time.perf_counter() - start)
            if remaining <= 0 or proc.poll() is not None:
                pytest.fail(f"the app did not start within {START_TIMEOUT_S} s:\n{''.join(seen)[-3000:]}")
            try:
                line = lines.get(timeout=min(1.0, remaining))
            except queue.Empty:
                continue
            seen.append(line)
            if "App running at" in line:
                break
        print(f"app started in {time.perf_counter() - start:.1f} s")
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def page(browser, app_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(app_url)
    yield page
    context.close()


def set_slider(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def test_benchmark_and_course_model_in_a_real_browser(page, tmp_path):
    from playwright.sync_api import expect

    shots = outputs_dir("app")
    expect(page.locator("#network-status")).to_contain_text("Offline", timeout=60_000)  # a busy machine

    # Tab 1: a small benchmark of the default tiny model (resnet18) at 64 px, batch 1, exported and run in
    # ONNX Runtime with int8 weights (the runtime choice).
    set_slider(page, "bench-size", 64)
    set_slider(page, "bench-batch", 1)
    set_slider(page, "bench-time", 0.1)
    page.locator("#bench-runtime").get_by_text("ONNX Runtime int8").click()
    page.locator("#bench-run").click()
    expect(page.locator("#bench-message")).to_contain_text(
        "measured 1 model(s) on ONNX Runtime int8", timeout=180_000
    )
    row = page.locator("#bench-table tbody tr").filter(has_text="resnet18")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("random")
    expect(row).to_contain_text("int8")
    csv_link = page.locator("#bench-csv a").first
    expect(csv_link).to_have_attribute("href", re.compile(r"benchmark\.csv$"))
    csv = page.request.get(csv_link.get_attribute("href")).text()
    assert csv.startswith("model,family,size,weights") and "\nresnet18," in csv
    page.screenshot(path=shots / "screenshot_benchmark.png", full_page=True)

    # Tab 2: upload an example image (a generated plain ring, as the ViT was trained on), classify it.
    sys.path.insert(0, str(repo_root() / "app"))
    from benchapp import course_models

    example = course_models.example("vit:1")
    path = tmp_path / "example_ring.png"
    Image.fromarray(example.pixels).save(path)
    page.get_by_role("tab", name="② 코스 모델 / The course's models").click()
    page.locator("#tab-course input[type=file]").first.set_input_files(path)
    expect(page.locator("#tab-course")).to_contain_text("image ready")
    page.locator("#vit-run").click()
    expect(page.locator("#vit-message")).to_contain_text(f"prediction: {example.true_class}")
    expect(page.locator("#vit-probs")).to_contain_text(example.true_class)
    expect(page.locator("#vit-message")).not_to_contain_text("knows only six generated shapes")

    # A photograph: the prediction comes with the out-of-distribution warning.
    page.locator("#course-example input").click()
    page.get_by_role("option", name="사진 / photo · coffee (scikit-image)").click()
    page.locator("#course-load").click()
    expect(page.locator("#tab-course")).to_contain_text("ℹ 사진 / photo · coffee")  # the photo is loaded
    page.locator("#vit-run").click()
    # (the first such check generates the 300 shapes that set its limits: seconds on a busy machine)
    expect(page.locator("#vit-message")).to_contain_text("knows only six generated shapes", timeout=90_000)

    # DINO on a textured example with its true mask: the IoU per head appears.
    page.locator("#course-example input").click()
    page.get_by_role("option", name="DINO · 무늬 도형 / textured shape #2").click()
    page.locator("#course-load").click()
    expect(page.locator("#tab-course")).to_contain_text("true class")
    page.locator("#dino-run").click()
    expect(page.locator("#dino-message")).to_contain_text("IoU with the true mask")
    page.screenshot(path=shots / "screenshot.png", full_page=True)

    # Tab 3 without keys: says which variables to set, calls nothing.
    page.get_by_role("tab", name="③ 멀티모달 API / Multimodal APIs").click()
    expect(page.locator("#api-status")).to_contain_text("GEMINI_API_KEY")
    assert "Traceback" not in page.content()
    assert (shots / "screenshot.png").stat().st_size > 10_000
