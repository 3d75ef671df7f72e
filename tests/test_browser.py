"""The seed's browser snippet (section 4.4), verbatim, in real Chromium; and the dashboard."""

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from taskstream.devservices.processes import WebServer, WorkerProc
from tests.conftest import wait_terminal

CHROMIUM = os.environ.get("TASKSTREAM_CHROMIUM", "/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"needs Chromium at {CHROMIUM} (apt-get install chromium)")

# Copied unchanged from the seed tutorial, section 4.4 "前端连接SSE".
SEED_SNIPPET = """
const eventSource = new EventSource(`/tasks/${taskId}/stream`);

eventSource.onmessage = (event) => {
    const data = JSON.parse(event.data);
    console.log(`进度: ${data.progress}%`);

    // 更新进度条
    document.getElementById('progress').value = data.progress;

    // 任务完成
    if (data.status === 'completed') {
        console.log('任务完成:', data.result);
        eventSource.close();
    }
};

eventSource.onerror = (error) => {
    console.error('SSE错误:', error);
    eventSource.close();
};
"""


@pytest.fixture
async def page(web: WebServer, worker: WorkerProc) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"],
        )
        pg = await browser.new_page()
        yield pg
        await browser.close()


async def run_seed_snippet(page: Any, web: WebServer, task_id: str) -> list[str]:
    logs: list[str] = []
    page.on("console", lambda m: logs.append(m.text))
    await page.goto(web.url + "/health")
    await page.set_content('<progress id="progress" max="100" value="0"></progress>')
    await page.evaluate(f"window.taskId = {task_id!r};")
    await page.add_script_tag(content=f"window.eventSource = (() => {{ {SEED_SNIPPET}; "
                                      "return eventSource; })();")
    return logs


async def test_seed_snippet_runs_unchanged(page: Any, web: WebServer) -> None:
    async with httpx.AsyncClient(base_url=web.url) as c:
        r = await c.post("/tasks", json={"type": "demo", "params": {"duration": 1, "steps": 4}})
        task_id = r.json()["task_id"]
        logs = await run_seed_snippet(page, web, task_id)
        await page.wait_for_function("window.eventSource.readyState === 2", timeout=20_000)
        assert await page.eval_on_selector("#progress", "e => e.value") == 100
        assert any(line.startswith("任务完成:") for line in logs), logs
        assert "进度: 50%" in logs and "进度: 100%" in logs
        assert not any(line.startswith("SSE错误") for line in logs), logs
        await wait_terminal(c, task_id)


async def test_seed_snippet_stops_after_failed_task(page: Any, web: WebServer) -> None:
    """The snippet only closes on 'completed'; after a failure the stream ends, the browser
    reconnects with Last-Event-ID, gets 204 and stops — no reconnect loop."""
    requests: list[str] = []
    page.on("request", lambda req: requests.append(req.url) if "/stream" in req.url else None)
    async with httpx.AsyncClient(base_url=web.url) as c:
        r = await c.post("/tasks", json={"type": "demo",
                                         "params": {"duration": 0.3, "steps": 3,
                                                    "fail_at_step": 2}})
        task_id = r.json()["task_id"]
        logs = await run_seed_snippet(page, web, task_id)
        await page.wait_for_function("window.eventSource.readyState === 2", timeout=20_000)
        await asyncio.sleep(1.0)
        assert len(requests) <= 2, requests
        assert any("SSE错误" in line for line in logs)


async def test_dashboard_shows_live_progress(page: Any, web: WebServer) -> None:
    await page.goto(web.url + "/")
    await page.wait_for_selector("#conn:has-text('live')", timeout=10_000)
    await page.fill("#duration", "1")
    await page.fill("#steps", "5")
    await page.click("#demo-form button")
    row = page.locator("#tasks tr").first
    await row.locator(".status.completed").wait_for(timeout=20_000)
    assert await row.locator("progress").evaluate("e => e.value") == 100
    assert "steps" in (await row.locator(".msg").inner_text())
    if os.environ.get("TASKSTREAM_SCREENSHOT"):
        await page.screenshot(path=os.environ["TASKSTREAM_SCREENSHOT"])
