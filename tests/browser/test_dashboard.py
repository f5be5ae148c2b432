"""The dashboard in a real browser against a real stack (gateway with a token, store, scheduler, runner)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import TOKEN, sign_in
from tests.support import Stack

CODE_SLOW_HELLO = """import time
def main():
    print("hello from the dashboard", flush=True)
    time.sleep(4)  # long enough to be seen running even when the store lags under load
    return {"answer": 42}
"""
CODE_TALKS = """import sys, time
def main():
    for i in range(1, 7):
        print(f"line {i}\\n  continued", flush=True)
        if i == 2:
            print("\\x1b[31mred alert\\x1b[0m", flush=True)
            print("to stderr", file=sys.stderr, flush=True)
        time.sleep(0.7)
    return "done"
"""
CODE_MEBIBYTE = """def main():
    for i in range(16000):
        print(f"line {i:05d} " + "x" * 50)
"""
CODE_FAILS = "def main():\n    count = 'x'\n    return int(count)\n"
CODE_SLEEPS = "import time\ndef main():\n    time.sleep(60)\n"

# Records every status the task page shows, so a test sees transitions without polling the DOM itself.
STATUS_RECORDER = r"""
window.__statuses = [];
new MutationObserver(() => {
  const shown = document.querySelector('#task-status')?.dataset.status;
  if (shown && window.__statuses[window.__statuses.length - 1] !== shown) window.__statuses.push(shown);
}).observe(document, {subtree: true, childList: true, attributes: true});
window.__polls = [];  // what the API answered the page, to tell a slow page from a late store
const realFetch = window.fetch;
window.fetch = async (...args) => {
  const response = await realFetch(...args);
  if (/\/api\/tasks\/[^/?]+$/.test(String(args[0]))) {
    response.clone().json().then((t) => window.__polls.push(`${(performance.now() / 1000).toFixed(1)}:${t.status}`));
  }
  return response;
};
"""

LONG_TASK_RECORDER = """
window.__longTasks = [];
new PerformanceObserver((list) => { for (const entry of list.getEntries()) window.__longTasks.push(entry.duration); })
  .observe({type: "longtask", buffered: true});
"""


def code_task(name: str, code: str, **extra: object) -> dict:
    return {"name": name, "task_type": "immediate", "function_code": code, "function_name": "main", **extra}


def test_a_wrong_token_is_refused_and_the_right_one_signs_in(page: Page, http: httpx.Client) -> None:
    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("API token").fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("This token was refused.")
    expect(page.get_by_role("navigation", name="Main")).to_be_hidden()

    page.get_by_label("API token").fill(TOKEN)
    page.get_by_label("API token").press("Enter")  # the keyboard is enough
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.locator("#status-counts")).to_be_visible()
    expect(page.locator(".uplot")).to_be_visible()  # the runs-per-minute chart
    assert TOKEN not in page.url
    assert page.evaluate("sessionStorage.getItem('taskmesh.token')") == TOKEN


def test_a_code_task_submitted_through_the_form_goes_pending_running_succeeded_live(page: Page) -> None:
    sign_in(page)
    page.add_init_script(STATUS_RECORDER)
    page.goto("/#/submit")
    page.get_by_label("Name", exact=True).fill("from the form")
    page.get_by_label("Code", exact=True).fill(CODE_SLOW_HELLO)
    page.evaluate("window.__notReloaded = true")
    page.get_by_role("button", name="Submit").click()

    expect(page.locator("#task-status")).to_have_attribute("data-status", "succeeded", timeout=60_000)
    statuses = page.evaluate("window.__statuses")
    assert page.evaluate("window.__notReloaded") is True
    page.wait_for_function("window.__polls.some((poll) => poll.endsWith(':succeeded'))")
    answered = ["pending"]  # the submit's reply, then every poll the page made
    for poll in page.evaluate("window.__polls"):
        if poll.split(":", 1)[1] != answered[-1]:
            answered.append(poll.split(":", 1)[1])
    # The page shows each state the API gave it, in order, live. Normally that is pending → (queued →)
    # running → succeeded; on a loaded machine the store has been seen to answer "queued" for a whole
    # 4 s run (its RunStarted applied late), which no page can show as running.
    assert statuses == answered, (statuses, page.evaluate("window.__polls"))
    assert statuses[0] == "pending" and statuses[-1] == "succeeded"
    expect(page.locator("#result")).to_contain_text("42")
    expect(page.locator("#log")).to_contain_text("hello from the dashboard")
    expect(page.locator("pre.code .hljs-keyword").first).to_be_visible()  # the spec is highlighted


def test_log_lines_of_a_running_task_appear_as_they_arrive(page: Page, http: httpx.Client) -> None:
    task = http.post("/api/tasks", json=code_task("talks", CODE_TALKS)).json()
    sign_in(page)
    page.goto(f"/#/tasks/{task['id']}")
    log = page.locator("#log")
    expect(log).to_contain_text("line 2", timeout=60_000)
    assert "line 6" not in log.inner_text()  # lines are shown as they come, not at the end
    expect(log).to_contain_text("line 6")
    expect(page.locator("#log-status")).to_contain_text("ended: succeeded")
    text = log.inner_text()
    assert "line 3\n  continued" in text  # multi-line output is kept
    assert [text.index(f"line {i}") for i in range(1, 7)] == sorted(text.index(f"line {i}") for i in range(1, 7))
    expect(log.locator(".stderr")).to_contain_text("to stderr")
    expect(log.locator(".a-red")).to_have_text("red alert")  # ANSI colour, escape codes gone
    assert "\x1b" not in log.inner_text()
    with page.expect_download() as download:
        page.get_by_role("button", name="Download").click()
    saved = Path(download.value.path()).read_text()
    assert saved.count("continued") == 6 and "to stderr" in saved


def test_a_run_with_a_mebibyte_of_output_stays_responsive(page: Page, http: httpx.Client) -> None:
    task = http.post("/api/tasks", json=code_task("chatty", CODE_MEBIBYTE)).json()
    assert http.get(f"/api/tasks/{task['id']}/wait", params={"wait": 60}).json()["status"] == "succeeded"
    sign_in(page)
    page.add_init_script(LONG_TASK_RECORDER)
    opened = time.monotonic()
    page.goto(f"/#/tasks/{task['id']}")
    expect(page.locator("#log-status")).to_contain_text("ended: succeeded", timeout=60_000)
    expect(page.locator("#log")).to_contain_text("line 15999 ")
    shown_s = time.monotonic() - opened
    assert page.evaluate("PerformanceObserver.supportedEntryTypes.includes('longtask')")
    started = time.monotonic()
    page.get_by_role("button", name="Jump to end").click()
    page.get_by_label("Follow").uncheck()
    assert time.monotonic() - started < 2, "the page answered slowly with 1 MiB of output"
    longest = page.evaluate("Math.max(0, ...window.__longTasks)")
    print(f"1 MiB log: all shown after {shown_s:.1f} s, longest main-thread task {longest:.0f} ms")
    assert longest < 1500, f"the main thread was blocked for {longest:.0f} ms"
    assert page.evaluate("document.querySelectorAll('#log .block').length") >= 15  # rendered in blocks


def test_the_task_list_filters_by_name_prefix_and_paginates(page: Page, http: httpx.Client) -> None:
    for index in range(5):
        http.post(
            "/api/tasks", json=code_task(f"paged-{index}", CODE_SLEEPS, task_type="delayed", delay_seconds=3600)
        ).raise_for_status()
    http.post(
        "/api/tasks", json=code_task("unrelated", CODE_SLEEPS, task_type="delayed", delay_seconds=3600)
    ).raise_for_status()
    sign_in(page)
    page.goto("/#/tasks?limit=2")
    page.get_by_label("Name starts with").fill("paged-")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"#/tasks\?name=paged-&limit=2$"))
    rows = page.locator("#task-table tbody tr")
    names = rows.locator("td:nth-child(2)")
    for index, expected in enumerate((["paged-4", "paged-3"], ["paged-2", "paged-1"], ["paged-0"])):
        if index:
            page.get_by_role("button", name="Next").click()
        expect(names).to_have_text(expected)  # newest first, each once
    expect(page.get_by_role("button", name="Next")).to_be_disabled()
    page.get_by_role("button", name="Previous").click()
    expect(names).to_have_text(["paged-2", "paged-1"])

    page.goto("/#/tasks?name=paged-&status=pending")  # a shared link opens the same view
    expect(page.get_by_label("Status")).to_have_value("pending")
    expect(rows).to_have_count(5)
    page.get_by_label("Select every task on this page").check()
    page.get_by_role("button", name="Cancel selected").click()
    expect(page.locator("#confirm")).to_contain_text("Cancel 5 tasks?")
    page.locator("#confirm-ok").click()
    expect(page.get_by_text("No task matches.")).to_be_visible()  # none is pending any more
    assert {t["status"] for t in http.get("/api/tasks", params={"name": "paged-"}).json()["tasks"]} == {"cancelled"}

    page.goto("/#/tasks?name=paged-")
    expect(rows).to_have_count(5)
    page.get_by_label("Select every task on this page").check()
    page.get_by_role("button", name="Delete selected").click()
    page.locator("#confirm-ok").click()
    expect(page.get_by_text("No task matches.")).to_be_visible()
    assert http.get("/api/tasks", params={"name": "paged-"}).json()["tasks"] == []


def test_a_schedule_made_in_the_form_is_paused_resumed_and_triggered_and_its_ledger_shows_it(
    page: Page, http: httpx.Client
) -> None:
    sign_in(page)
    page.goto("/#/submit")
    page.get_by_label("Name", exact=True).fill("yearly report")
    page.get_by_label("Code", exact=True).fill("def main():\n    return 'report'\n")
    page.get_by_label("scheduled").check()
    page.get_by_label("Cron expression").fill("0 9 1 1 *")
    page.get_by_label("Time zone").fill("Europe/Berlin")
    fires = page.locator("#cron-preview li")
    expect(fires).to_have_count(5)
    expect(fires.first).to_contain_text("-01-01 09:00:00+01:00")  # shown in the schedule's zone
    page.get_by_role("button", name="Submit").click()

    expect(page.get_by_role("heading", name="yearly report")).to_be_visible()
    status = page.locator("#schedule-status")
    expect(status).to_have_text("active")
    page.get_by_role("button", name="Pause yearly report").click()
    expect(status).to_have_text("paused")
    page.get_by_role("button", name="Resume yearly report").click()
    expect(status).to_have_text("active")
    expect(page.get_by_text("No slot yet.")).to_be_visible()
    page.get_by_role("button", name="Trigger yearly report now").click()
    expect(page.locator("#ledger li")).to_have_count(1)
    expect(page.locator("#ledger li").first.locator(".badge")).to_have_text("succeeded", timeout=60_000)


def test_a_running_task_is_cancelled_from_its_page(page: Page, http: httpx.Client) -> None:
    task = http.post("/api/tasks", json=code_task("sleeper", CODE_SLEEPS)).json()
    sign_in(page)
    page.goto(f"/#/tasks/{task['id']}")
    expect(page.locator("#task-status")).to_have_attribute("data-status", "running", timeout=60_000)
    page.get_by_role("button", name="Cancel", exact=True).click()
    page.locator("#confirm-ok").click()
    expect(page.locator("#task-status")).to_have_attribute("data-status", "cancelled")
    expect(page.get_by_role("button", name="Cancel", exact=True)).to_have_count(0)
    assert http.get(f"/api/tasks/{task['id']}").json()["status"] == "cancelled"


def test_a_failed_task_shows_its_traceback_and_can_be_run_again(page: Page, http: httpx.Client) -> None:
    task = http.post("/api/tasks", json=code_task("breaks", CODE_FAILS)).json()
    sign_in(page)
    page.goto(f"/#/tasks/{task['id']}")
    expect(page.locator("#task-status")).to_have_attribute("data-status", "failed", timeout=60_000)
    error = page.get_by_role("region", name="Error")
    expect(error).to_contain_text("ValueError")
    expect(error.locator("pre.traceback")).to_contain_text("line 3, in main")
    page.get_by_role("button", name="Re-run with the same spec").click()
    expect(page).not_to_have_url(re.compile(task["id"]))
    expect(page.get_by_role("heading", name="breaks")).to_be_visible()
    again = page.url.rsplit("/", 1)[1]
    assert http.get(f"/api/tasks/{again}").json()["spec"]["function_code"] == CODE_FAILS
    page.get_by_role("link", name="Overview").click()
    failures = page.get_by_role("region", name="Failures in the last hour")
    expect(failures.locator(f'a[href="#/tasks/{task["id"]}"]')).to_have_text("breaks")


def test_secrets_in_a_spec_are_masked_on_its_page(page: Page, http: httpx.Client) -> None:
    spec = {
        "name": "webhook",
        "task_type": "delayed",
        "delay_seconds": 3600,
        "api_url": "https://example.com/hook",
        "method": "POST",
        "headers": {"Authorization": "Bearer hunter2", "X-Trace": "visible-value"},
        "data": {"api_key": "s3cr3t-key", "rows": 3},
    }
    task = http.post("/api/tasks", json=spec).json()
    sign_in(page)
    page.goto(f"/#/tasks/{task['id']}")
    spec_view = page.get_by_role("region", name="Spec")
    expect(spec_view).to_contain_text("POST https://example.com/hook")
    expect(spec_view).to_contain_text("visible-value")
    text = spec_view.inner_text()
    assert "hunter2" not in text and "s3cr3t-key" not in text and text.count("••••••") == 2


def test_a_field_error_from_the_api_is_shown_next_to_its_field(page: Page) -> None:
    sign_in(page)
    page.goto("/#/submit")
    page.get_by_label("Code", exact=True).fill("def main(:\n    pass\n")
    page.get_by_role("button", name="Submit").click()
    code_field = page.locator('.field[data-field="function_code"]')
    expect(code_field.locator(".field-error")).to_contain_text("syntax")
    expect(page.get_by_label("Code", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Code", exact=True)).to_be_focused()

    page.get_by_label("Code", exact=True).fill("def main():\n    pass\n")
    page.get_by_label("kwargs (JSON object)").fill("{not json")
    page.get_by_role("button", name="Submit").click()
    expect(page.locator('.field[data-field="kwargs"] .field-error')).to_contain_text("not valid JSON")

    page.get_by_label("HTTP request").check()  # the API-task form: its fields are checked by the API too
    expect(page.get_by_label("Code", exact=True)).to_be_hidden()
    page.get_by_label("URL").fill("ftp://example.com/file")
    page.get_by_role("button", name="Submit").click()
    expect(page.locator('.field[data-field="api_url"] .field-error')).to_contain_text("http")
    expect(page.get_by_label("URL")).to_be_focused()

    page.get_by_label("URL").fill("http://127.0.0.1:9/never-called")
    flow = page.locator("details", has=page.get_by_text("Flow control", exact=True))
    flow.locator("summary").click()
    page.get_by_label("Rate limit").fill("fast")
    flow.locator("summary").click()  # folded again: the error must unfold it to be seen
    page.get_by_role("button", name="Submit").click()
    expect(page.locator('.field[data-field="rate_limit"] .field-error')).to_be_visible()
    expect(page.get_by_label("Rate limit")).to_be_focused()


def test_the_limits_page_shows_who_waits_on_a_key_and_an_operator_limit_set_there_lets_it_start(
    page: Page, http: httpx.Client
) -> None:
    key = f"dash-{time.monotonic_ns()}"  # the stack is shared by the module's tests
    flow = {"concurrency_key": key, "max_concurrency": 1}
    first = http.post("/api/tasks", json=code_task("holder", CODE_SLEEPS, **flow)).json()
    second = http.post("/api/tasks", json=code_task("waiter", CODE_SLEEPS, **flow)).json()
    try:
        sign_in(page)
        page.goto(f"/#/tasks/{second['id']}")
        expect(page.locator("#waiting-reason")).to_have_text(f"concurrency:{key}", timeout=60_000)
        page.locator("#waiting-reason").click()
        row = page.locator(f'#limit-table tr[data-key="{key}"]')
        expect(row.locator('[data-cell="running"]')).to_have_text("1 / 1", timeout=60_000)
        expect(row.locator('[data-cell="waiting"]')).to_have_text("1")
        expect(row.locator('[data-cell="source"]')).to_have_text("task")

        form = page.locator("#limit-form")
        form.get_by_label("Key").fill(key)
        form.get_by_label("Rate limit").fill("fast")
        form.get_by_role("button", name="Save").click()
        expect(form.locator('.field[data-field="rate_limit"] .field-error')).to_contain_text("rate")

        form.get_by_label("Rate limit").fill("")
        form.get_by_label("Max concurrency").fill("2")
        form.get_by_role("button", name="Save").click()
        expect(row.locator('[data-cell="source"]')).to_have_text("operator")
        expect(row.locator('[data-cell="running"]')).to_have_text("2 / 2", timeout=60_000)
        expect(row.locator('[data-cell="waiting"]')).to_have_text("0")
        page.goto(f"/#/tasks/{second['id']}")
        expect(page.locator("#task-status")).to_have_attribute("data-status", "running", timeout=60_000)
        expect(page.locator("#waiting-reason")).to_have_count(0)
    finally:
        for task in (first, second):
            http.post(f"/api/tasks/{task['id']}/cancel")


def test_without_tokens_the_dashboard_opens_without_signing_in(chromium: Browser, open_stack: Stack) -> None:
    context = chromium.new_context(viewport={"width": 1280, "height": 800}, base_url=open_stack.base_url)
    try:
        page = context.new_page()
        page.goto("/")
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
        page.get_by_role("link", name="Tasks").click()
        expect(page.get_by_text("No task matches.")).to_be_visible()
    finally:
        context.close()


def test_the_api_reference_renders_the_openapi_document_at_phone_width(page: Page) -> None:
    sign_in(page)
    page.set_viewport_size({"width": 390, "height": 800})
    page.goto("/")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    page.get_by_role("link", name="API").click()
    expect(page.locator(".opblock-summary-path", has_text="/api/cron/preview")).to_be_visible()
    expect(page.locator(".opblock").first).to_be_visible()

    page.goto("/#/runners")
    expect(page.locator("#runner-table tbody tr")).to_have_count(1)
    expect(page.get_by_role("region", name="Dead letters")).to_contain_text("None.")
