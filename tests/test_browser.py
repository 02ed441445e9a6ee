"""在真的浏览器里看课程：JupyterLab 里从头运行 00_setup，以及离线网站和幻灯片不向站外发请求。

用 Debian 的 Chromium（/usr/bin/chromium，.ci/run 会装好）和 Python 的 playwright 包驱动它；从不下载浏览器。
两者缺一时跳过，并说明原因。两个测试都在几十秒内结束，默认的 ``pytest`` 命令里也会运行
（``-m "not browser"`` 可以跳过它们）。
"""

import functools
import http.server
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CHINESE = re.compile(r"[\u4e00-\u9fff]")

pytestmark = pytest.mark.browser


@pytest.fixture
def browser():
    """一个无界面的 Chromium；没有 Chromium 或 playwright 时跳过。"""
    if not CHROMIUM.exists():
        pytest.skip(f"没有 {CHROMIUM}：在 Debian/Ubuntu 上运行 apt-get install chromium（.ci/run 会自动安装）")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("没有安装 playwright：运行 pip install -e \".[dev]\"")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lab_settings(folder: Path) -> Path:
    """JupyterLab 的用户设置：关掉自动保存（测试不能改动仓库里的 notebook），不去网上查新闻和更新。"""
    settings = {
        "docmanager-extension/plugin": {"autosave": False},
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }
    for name, values in settings.items():
        path = folder / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")
    return folder


def _wait_for_server(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterLab 没能启动（退出码 {process.returncode}）")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{timeout:.0f} 秒内 JupyterLab 没有响应 {url}")


def _wait_for_single_idle_kernel(base: str, token: str, timeout: float = 60) -> None:
    """等到服务器上只有一个内核，它已经连上浏览器、处于空闲状态，并且保持了一秒。"""
    deadline, stable_since, kernels = time.monotonic() + timeout, None, []
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/api/kernels?token={token}", timeout=5) as response:
                kernels = json.load(response)
        except urllib.error.HTTPError as error:
            # jupyter_server 列内核时，如果有一个内核刚开始启动、还没有 last_activity，会回 500
            # （TraitError）：那一刻本来就没有就绪，过一会儿再问
            if error.code != 500:
                raise
            stable_since = None
            time.sleep(0.25)
            continue
        ready = len(kernels) == 1 and kernels[0]["connections"] >= 1 and kernels[0]["execution_state"] == "idle"
        stable_since = (stable_since or time.monotonic()) if ready else None
        if stable_since and time.monotonic() - stable_since >= 1:
            return
        time.sleep(0.25)
    raise TimeoutError(f"{timeout:.0f} 秒内内核没有就绪：{kernels}")


def _shutdown_lab(base: str, token: str, process: subprocess.Popen) -> None:
    """先请 JupyterLab 自己关闭（连同内核），不行再结束进程。"""
    try:
        request = urllib.request.Request(f"{base}/api/shutdown", method="POST",
                                         headers={"Authorization": f"token {token}"})
        urllib.request.urlopen(request, timeout=5).close()
    except OSError:
        pass
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


ALL_CELLS_RAN = """(expected) => {
    const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.textContent.trim());
    const busy = document.querySelector('.jp-Notebook-ExecutionIndicator[data-status="busy"]');
    return prompts.length === expected && prompts.every(t => /^\\[\\d+\\]:$/.test(t)) && !busy;
}"""


def test_jupyterlab_runs_setup_chapter_without_errors(browser, tmp_path):
    nb = json.loads((REPO / "chapters" / "00_setup.ipynb").read_text(encoding="utf-8"))
    code_cells = sum(1 for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip())
    port, token = _free_port(), secrets.token_hex(16)
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, AIGC_PROFILE="smoke", AIGC_PROGRESS="off", OMP_NUM_THREADS="1",
               JUPYTERLAB_SETTINGS_DIR=str(_lab_settings(tmp_path / "lab-settings")),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab-workspaces"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"))
    log = open(tmp_path / "jupyterlab.log", "wb")
    lab = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={REPO}", "--allow-root",
         # 不联网：不取新闻、不查更新、扩展管理器不连 PyPI
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         "--LabApp.extension_manager=readonly"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        _wait_for_server(f"{base}/api/status?token={token}", lab)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{base}/lab/tree/chapters/00_setup.ipynb?token={token}", timeout=60_000)
        page.locator(".jp-NotebookPanel .jp-CodeCell").first.wait_for(timeout=60_000)
        # 打开 notebook 时 JupyterLab 有时先启动一个内核、马上又换成另一个；等只剩一个已连接的空闲内核再运行，
        # 否则 Run All 可能发给那个正在被关掉的内核，什么也不发生
        _wait_for_single_idle_kernel(base, token)
        page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for(timeout=60_000)

        # 菜单 Run > Run All Cells，和学习者的操作一样
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        try:
            page.wait_for_function(ALL_CELLS_RAN, arg=code_cells, timeout=90_000, polling=500)
        except Exception:
            page.screenshot(path=str(tmp_path / "jupyterlab-timeout.png"))
            prompts = page.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()
            pytest.fail(f"90 秒内没有运行完全部 {code_cells} 个代码单元格；各单元格的提示符：{prompts}")

        stderr = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
        stderr = stderr.all_text_contents()
        errors = [text for text in stderr if "Traceback" in text or "Error" in text]
        errors += page.locator('.jp-RenderedText[data-mime-type*="error"]').all_text_contents()
        assert not errors, f"有单元格报错：{errors[0][:500]}"
        heading = page.locator(".jp-RenderedMarkdown h1").first
        heading.scroll_into_view_if_needed()  # 运行完以后视图停在最后一个单元格
        title = heading.text_content()  # innerText 对 content-visibility 暂时跳过渲染的单元格是空的
        assert heading.is_visible() and CHINESE.search(title), title
        page.screenshot(path=str(tmp_path / "jupyterlab-00_setup.png"))
    finally:
        _shutdown_lab(base, token, lab)
        log.close()
    # 自动保存是关着的：仓库里的 notebook 没有被改写
    assert json.loads((REPO / "chapters" / "00_setup.ipynb").read_text(encoding="utf-8")) == nb


@pytest.fixture
def site_server(tmp_path):
    """生成只有 00 和 02 两章的网站，用 http.server 在本机的一个空闲端口上提供它。"""
    from aigc_lib.course.site import build_site

    site = tmp_path / "site"
    build_site(REPO / "chapters", site, only=["00", "02"])

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=site))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _open_and_record(browser, url: str):
    """打开页面，记下它发出的每个请求、失败的请求和 4xx/5xx 响应。"""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    record = {"requests": [], "failed": [], "bad_status": []}
    page.on("request", lambda request: record["requests"].append(request.url))
    page.on("requestfailed", lambda request: record["failed"].append(f"{request.url} {request.failure}"))
    page.on("response", lambda response: response.status >= 400 and record["bad_status"].append(
        f"{response.status} {response.url}"))
    page.goto(url, wait_until="load", timeout=30_000)
    return page, record


def _assert_only_local(record) -> None:
    hosts = {urlsplit(url).hostname for url in record["requests"] if urlsplit(url).scheme in ("http", "https")}
    assert hosts <= {"127.0.0.1", "localhost"}, f"向站外发了请求：{sorted(hosts)}"
    assert not record["failed"], f"有请求失败：{record['failed']}"
    assert not record["bad_status"], f"有请求返回错误：{record['bad_status']}"


def test_offline_site_page_and_slides_render_math_and_reveal(browser, site_server, tmp_path):
    page, record = _open_and_record(browser, f"{site_server}/02_word_segmentation.html")
    page.wait_for_function("document.querySelectorAll('.MathJax, .MathJax_Display').length > 0", timeout=30_000)
    page.wait_for_function("window.MathJax && MathJax.Hub && MathJax.Hub.queue.pending === 0", timeout=30_000)
    assert CHINESE.search(page.locator("h1").first.inner_text())
    assert page.locator('a[rel="prev"][href="00_setup.html"]').count() >= 1
    page.screenshot(path=str(tmp_path / "site-02.png"))
    _assert_only_local(record)
    assert len(record["requests"]) > 3  # MathJax 的文件确实是从本机取的

    slides, record = _open_and_record(browser, f"{site_server}/02_word_segmentation.slides.html")
    slides.wait_for_function("typeof Reveal !== 'undefined' && Reveal.isReady()", timeout=30_000)
    assert slides.locator(".reveal .slides section").count() > 3
    slides.wait_for_function("document.querySelectorAll('.MathJax, .MathJax_Display').length > 0", timeout=30_000)
    slides.keyboard.press("ArrowRight")
    slides.wait_for_function("Reveal.getIndices().h === 1", timeout=10_000)
    slides.screenshot(path=str(tmp_path / "slides-02.png"))
    _assert_only_local(record)
