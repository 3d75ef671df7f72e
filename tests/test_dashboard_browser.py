"""The dashboard in real Chromium (Playwright driving Debian's chromium): live bars, a failed
task's page and re-drive, cancel, dead letters, authentication, phone width, keyboard.

Screenshots of each view go to tests/artifacts/ (git-ignored) for review."""

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskstream.devservices.processes import WebServer, WorkerProc
from tests.cluster import Cluster, drop_cluster, start_cluster
from tests.conftest import eventually, wait_terminal
from tests.test_browser import CHROMIUM
from tests.test_security import keys, secure  # noqa: F401  (fixtures)

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"needs Chromium at {CHROMIUM} (apt-get install chromium)")

ARTIFACTS = Path(__file__).parent / "artifacts"
PHONE = {"width": 375, "height": 740}


@pytest.fixture
async def browser(chromium: Any, web: WebServer, worker: WorkerProc) -> Any:
    return chromium


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"])
        yield b
        await b.close()


async def new_page(browser: Any, **kw: Any) -> Any:
    page = await browser.new_page(**kw)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.js_errors = errors
    return page


async def shot(page: Any, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def submit(c: httpx.AsyncClient, **params: Any) -> str:
    body: dict[str, Any] = {"type": "demo", "max_attempts": 1,
                            "params": {"duration": 1, "steps": 4, **params}}
    r = await c.post("/tasks", json=body)
    assert r.status_code == 202, r.text
    return str(r.json()["task_id"])


async def wait_status(c: httpx.AsyncClient, task_id: str, status: str) -> None:
    async def check() -> bool:
        return bool((await c.get(f"/tasks/{task_id}")).json()["status"] == status)
    await eventually(check)


async def live(page: Any) -> None:
    await page.wait_for_selector("#conn:has-text('live')", timeout=10_000)


async def test_demo_bars_reach_100_in_explorer_and_task_page(browser: Any, web: WebServer,
                                                              client: httpx.AsyncClient) -> None:
    page = await new_page(browser, viewport={"width": 1280, "height": 900})
    a = await submit(client, duration=3, steps=6)
    await wait_status(client, a, "running")
    await page.goto(web.url + "/#/tasks")
    await live(page)
    row = page.locator(f"#explorer-rows tr[data-task-id='{a}']")
    await row.wait_for()
    assert await row.locator("progress").evaluate("e => e.value") < 100
    await row.locator(".status.completed").wait_for(timeout=20_000)  # live, no reload
    assert await row.locator("progress").evaluate("e => e.value") == 100
    await shot(page, "explorer")

    b = await submit(client, duration=2, steps=4)
    await page.goto(f"{web.url}/#/task/{b}")
    bar = page.locator("#task-body progress")
    await page.wait_for_function(
        "document.querySelector('#task-body progress')?.value === 100", timeout=20_000)
    await page.locator("#task-body .status.completed").first.wait_for()
    assert await bar.evaluate("e => e.value") == 100
    types = await page.locator("#timeline .etype").all_inner_texts()
    assert types[0] == "created" and types[-1] == "completed" and "progress" in types
    assert '"steps": 4' in await page.locator("#task-result").inner_text()
    await shot(page, "task-completed")

    await page.goto(web.url + "/#/")
    await page.wait_for_function("Number(document.getElementById('kpi-completed')"
                                 "?.textContent) >= 2")
    await page.locator("#chart svg rect").first.wait_for()
    await page.locator("#workers tr").first.wait_for()  # auth off: the caller is admin
    assert "live worker" in await page.locator("#workers-summary").inner_text()
    await shot(page, "overview")
    assert not page.js_errors, page.js_errors


async def test_failed_task_page_shows_error_and_redrive_works(
        browser: Any, web: WebServer, client: httpx.AsyncClient) -> None:
    page = await new_page(browser)
    tid = await submit(client, duration=0.2, steps=2, fail_at_step=1, fail_attempts=1)
    await wait_terminal(client, tid)
    await page.goto(f"{web.url}/#/task/{tid}")
    error = page.locator("#task-error")
    await error.get_by_text("failed at step 1 of 2").wait_for()
    assert "1 of 1 attempts used" in await page.locator("#task-attempts").inner_text()
    await shot(page, "task-failed")
    assert await page.locator("#task-cancel").is_hidden()
    await page.click("#task-redrive")
    await page.locator("#task-body .status.completed").first.wait_for(timeout=20_000)
    assert await error.inner_text() == ""
    types = await page.locator("#timeline .etype").all_inner_texts()
    assert "redriven" in types and types[-1] == "completed"
    assert (await client.get(f"/tasks/{tid}")).json()["status"] == "completed"
    assert not page.js_errors, page.js_errors


async def test_cancel_from_task_page(browser: Any, web: WebServer,
                                     client: httpx.AsyncClient) -> None:
    page = await new_page(browser)
    tid = await submit(client, duration=60, steps=60)
    await page.goto(f"{web.url}/#/task/{tid}")
    await page.locator("#task-body .status.running").first.wait_for(timeout=20_000)
    await page.click("#task-cancel")
    await page.locator("#task-body .status.cancelled").first.wait_for(timeout=20_000)
    assert (await wait_terminal(client, tid))["status"] == "cancelled"
    assert await page.locator("#task-redrive").is_visible()
    await page.click("#task-copy")
    curl = await page.locator("#task-curl").inner_text()
    assert curl.startswith("curl -X POST") and '"duration":60' in curl
    await shot(page, "task-cancelled")
    assert not page.js_errors, page.js_errors


async def test_dead_letters_redrive_a_selection(browser: Any, web: WebServer,
                                                client: httpx.AsyncClient) -> None:
    page = await new_page(browser)
    ids = [await submit(client, duration=0.2, steps=2, fail_at_step=2, fail_attempts=1)
           for _ in range(2)]
    for tid in ids:
        await wait_terminal(client, tid)
    await page.goto(web.url + "/#/dead-letters")
    for tid in ids:
        row = page.locator(f"#dead-rows tr[data-task-id='{tid}']")
        await row.wait_for()
        assert "failed at step 2 of 2" in await row.inner_text()
        await row.locator("summary").click()
        assert "started" in await row.locator("details").inner_text()
    await shot(page, "dead-letters")
    for tid in ids:
        await page.check(f"#dead-rows input[value='{tid}']")
    await page.click("#dead-redrive")
    for tid in ids:
        await page.locator(f"#dead-rows tr[data-task-id='{tid}']").wait_for(state="detached")
        assert (await wait_terminal(client, tid))["status"] == "completed"
    assert not page.js_errors, page.js_errors


async def test_phone_width_and_keyboard(browser: Any, web: WebServer,
                                        client: httpx.AsyncClient) -> None:
    page = await new_page(browser, viewport=PHONE, is_mobile=True, has_touch=True)
    tid = await submit(client, duration=0.3, steps=2)
    await wait_terminal(client, tid)
    for name, path, ready in (("overview", "/#/", "#tasks tr"),
                              ("explorer", "/#/tasks", "#explorer-rows tr"),
                              ("task", f"/#/task/{tid}", "#timeline li"),
                              ("dead-letters", "/#/dead-letters", "#dead-rows tr")):
        await page.goto(web.url + path)
        await page.locator(ready).first.wait_for()
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], (name, width)
        await shot(page, f"phone-{name}")
    # keyboard: tab to the "Tasks" link, follow it; focus lands on the view's heading
    await page.goto(web.url + "/#/")
    # a full load: a hash change alone navigates in the page and moves focus to the view's
    # heading whenever it lands, which would race the key presses below
    await page.reload()
    await live(page)
    for _ in range(30):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.textContent") == "Tasks":
            break
    focused = await page.evaluate("document.activeElement.outerHTML")
    assert 'data-view="explorer"' in focused, focused
    await page.keyboard.press("Enter")
    await page.wait_for_function("document.activeElement.id === 'h-explorer'", timeout=5000)
    assert await page.locator("#view-explorer").is_visible()
    # every form control has a label
    unlabeled = await page.evaluate("""[...document.querySelectorAll('input, select')]
        .filter(e => !e.labels?.length && !e.getAttribute('aria-label')).map(e => e.id)""")
    assert not unlabeled, unlabeled
    assert not page.js_errors, page.js_errors


async def test_auth_on_asks_once_and_admins_pick_a_tenant(
        browser: Any, secure: WebServer, keys: dict[str, str]) -> None:  # noqa: F811
    async with httpx.AsyncClient(base_url=secure.url, timeout=30,
                                 headers={"Authorization": f"Bearer {keys['bob']}"}) as bob:
        tid = await submit(bob, duration=0.2, steps=2)
        await wait_terminal(bob, tid)
        bob_tenant = (await bob.get("/stats/overview")).json()["tenant"]

    async def visit(who: str) -> tuple[Any, list[str], list[str]]:
        page = await new_page(browser)
        urls: list[str] = []
        dialogs: list[str] = []
        page.on("request", lambda req: urls.append(req.url))

        async def answer(d: Any) -> None:
            dialogs.append(d.message)
            await d.accept(keys[who])
        page.on("dialog", answer)
        await page.goto(secure.url + "/")
        await live(page)
        return page, urls, dialogs

    page, urls, dialogs = await visit("bob")
    assert await page.locator("#tenant-pick").is_hidden()
    # The overview renders after its own fetch, not with the connection: wait for the text
    # (read once right after "live", it raced that fetch and was sometimes still empty).
    await page.locator("#workers-summary", has_text="list is for admin keys").wait_for(
        timeout=10_000)
    await page.goto(f"{secure.url}/#/task/{tid}")
    await page.locator("#task-body .status.completed").first.wait_for()
    await page.reload()
    await live(page)
    assert len(dialogs) == 1  # the key is kept for the tab
    assert any("/stream?ticket=tk_" in u for u in urls)
    assert not any(keys["bob"] in u for u in urls)

    page, urls, dialogs = await visit("admin")
    await page.locator("#tenant-pick").wait_for()
    await page.locator("#workers tr").first.wait_for()
    await page.locator("#tenants-card").get_by_text(bob_tenant).wait_for()
    await page.select_option("#tenant", bob_tenant)
    await live(page)
    await page.goto(secure.url + "/#/tasks")
    await page.locator(f"#explorer-rows tr[data-task-id='{tid}']").wait_for()
    await page.goto(f"{secure.url}/#/task/{tid}")
    await page.locator("#task-body .status.completed").first.wait_for()
    await page.locator("#timeline li.t-completed").wait_for()  # its events, as that tenant
    assert await page.locator("#task-cancel").is_hidden()
    await shot(page, "admin-task-of-another-tenant")
    assert not any(keys["admin"] in u for u in urls)
    assert not page.js_errors, page.js_errors


async def test_unknown_event_types_and_a_batch_render_generically(
        browser: Any, web: WebServer, client: httpx.AsyncClient) -> None:
    """Event types other work adds (steps, text streams, anything new) and a batch parent's
    aggregate and children: shown from whatever the API returns, without knowing them."""
    page = await new_page(browser)
    parent = await submit(client, duration=0.2, steps=2)
    child = await submit(client, duration=3, steps=6)
    await wait_terminal(client, parent)

    async def with_batch(route: Any) -> None:
        resp = await route.fetch()
        body = await resp.json()
        body["batch"] = {"total": 1, "completed": 0, "failed": 0, "counts": {"running": 1}}
        body["links"]["children"] = "/tasks?limit=1&type=demo"  # the newest: the child
        await route.fulfill(response=resp, json=body)

    await page.route(f"**/tasks/{parent}", with_batch)
    await page.goto(f"{web.url}/#/task/{parent}")
    await page.locator("#batch-aggregate").get_by_text("total").wait_for()
    row = page.locator(f"#batch-children tr[data-task-id='{child}']")
    await row.locator(".status.completed").wait_for(timeout=20_000)  # its bar is live
    assert await row.locator("progress").evaluate("e => e.value") == 100

    texts = await page.evaluate("""async () => {
        const { timelineItem } = await import('/static/task.js');
        const base = { task_id: 'x', status: 'running', progress: 10, message: null,
                       attempt: 1, created_at: new Date().toISOString() };
        return [
          { ...base, seq: 1, type: 'step_started', data: { step: 'fetch', index: 0 } },
          { ...base, seq: 2, type: 'step_completed', data: { step: 'fetch', index: 0 } },
          { ...base, seq: 3, type: 'text',
            data: { stream: 'answer', text: 'Hello <b>', length: 9 } },
          { ...base, seq: 4, type: 'brand_new', message: 'something new', data: { k: 1 } },
          { ...base, seq: 5, type: 'suspended', data: { signal: 'approval', deadline: null } },
        ].map((ev) => timelineItem(ev).textContent);
    }""")
    assert "step fetch (#0) started" in texts[0] and "step fetch (#0) completed" in texts[1]
    assert 'text stream "answer" (9 chars)' in texts[2] and "Hello <b>" in texts[2]
    assert "brand_new" in texts[3] and "something new" in texts[3] and '"k": 1' in texts[3]
    assert 'waiting for signal "approval"' in texts[4]
    await shot(page, "task-batch")
    assert not page.js_errors, page.js_errors


@pytest.fixture
async def steps_cluster(backing: tuple[str, str], tmp_path: Path) -> AsyncIterator[Cluster]:
    c = await start_cluster(backing[0], backing[1], tmp_path / "cluster", workers=1,
                            TASKSTREAM_TASKS="tests.tasktypes_steps")
    yield c
    await drop_cluster(backing[0], c)


async def test_steps_text_and_a_signal_sent_from_the_task_page(
        chromium: Any, steps_cluster: Cluster, tmp_path: Path) -> None:
    """Real step_started/step_completed, suspended/resumed and text events on the timeline;
    the page delivers the signal a parked run waits for."""
    url = steps_cluster.web.url
    page = await new_page(chromium)
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        r = await c.post("/tasks", json={"type": "approval", "params": {"dir": str(tmp_path)}})
        tid = r.json()["task_id"]
        await page.goto(f"{url}/#/task/{tid}")
        form = page.locator("#task-signal")
        await form.wait_for(timeout=20_000)  # shown once the run is suspended
        assert await page.input_value("#signal-name") == "approval"
        await page.fill("#signal-payload", '{"ok": true, "by": "ana"}')
        await shot(page, "task-waiting-for-signal")
        await page.click("#task-signal button[type=submit]")
        await page.locator("#task-body .status.completed").first.wait_for(timeout=20_000)
        assert await form.is_hidden()
        types = await page.locator("#timeline .etype").all_inner_texts()
        for t in ("step_started", "step_completed", "suspended", "resumed", "completed"):
            assert t in types, types
        assert '"by": "ana"' in await page.locator("#task-result").inner_text()
        assert 'step draft (#0) completed' in await page.locator("#timeline").inner_text()

        r = await c.post("/tasks", json={"type": "writer", "params": {"words": 3}})
        tid = r.json()["task_id"]
        await wait_terminal(c, tid)
        await page.goto(f"{url}/#/task/{tid}")
        item = page.locator("#timeline li.t-text")
        await item.wait_for()
        assert 'text stream "answer"' in await item.inner_text()
        assert "word0 word1 word2" in await item.inner_text()
    assert not page.js_errors, page.js_errors


@pytest.fixture
async def hooks_cluster(backing: tuple[str, str], tmp_path: Path) -> AsyncIterator[Cluster]:
    c = await start_cluster(backing[0], backing[1], tmp_path / "cluster", workers=1,
                            TASKSTREAM_WEBHOOK_ALLOW_HOSTS="127.0.0.1",
                            TASKSTREAM_WEBHOOK_POLL_INTERVAL="0.1")
    yield c
    await drop_cluster(backing[0], c)


async def test_webhooks_view_registers_and_shows_deliveries(
        chromium: Any, hooks_cluster: Cluster) -> None:
    """Register a webhook from the page (its secret shown once); a task's terminal event is
    delivered to a real local receiver, and the page lists the delivery with its response."""
    from chaos.receiver import Receiver

    rx = await Receiver().start()
    url = hooks_cluster.web.url
    page = await new_page(chromium, viewport={"width": 1280, "height": 900})
    try:
        await page.goto(f"{url}/#/webhooks")
        await live(page)
        await page.fill("#hooks-url", rx.url)
        await page.click("#hooks-form button[type=submit]")
        await page.locator("#hooks-secret:has-text('whsec_')").wait_for(timeout=10_000)
        await page.locator(f"#hooks-list code:has-text('{rx.url}')").wait_for()
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            tid = await submit(c, duration=0.2, steps=1)
            await wait_terminal(c, tid)
        row = page.locator("#hooks-list tbody tr", has_text="delivered")
        await row.first.wait_for(timeout=20_000)  # refreshed by the terminal event, live
        text = await row.first.inner_text()
        assert "completed" in text and "200" in text, text
        assert len(rx.received) == 1
        await shot(page, "webhooks")
        await page.click("#hooks-list button:has-text('Remove')")
        await page.locator("#hooks-list :text('no webhooks registered')").wait_for()
        assert not page.js_errors, page.js_errors
    finally:
        await rx.close()


async def test_a_real_batch_shows_its_children_live(browser: Any, web: WebServer,
                                                    client: httpx.AsyncClient) -> None:
    r = await client.post("/batches", json={"tasks": [
        {"type": "demo", "params": {"duration": 1.5, "steps": 3}} for _ in range(3)]})
    assert r.status_code == 202, r.text
    parent = r.json()["task_id"]
    page = await new_page(browser, viewport={"width": 1280, "height": 900})
    await page.goto(f"{web.url}/#/task/{parent}")
    await live(page)
    rows = page.locator("#batch-children tr")
    await rows.nth(2).wait_for(timeout=15_000)
    assert await rows.count() == 3
    assert (await wait_terminal(client, parent))["status"] == "completed"
    await page.locator("#batch-children .status.completed").nth(2).wait_for(timeout=15_000)
    await page.locator("#task-body .status.completed").first.wait_for(timeout=15_000)
    await shot(page, "task-batch-real")
    assert not page.js_errors, page.js_errors
