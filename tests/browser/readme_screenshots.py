"""Make the README's screenshots (docs/img/) from a real stack: ``python -m tests.browser.readme_screenshots``."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import Page, sync_playwright

from tests.browser.conftest import CHROMIUM, TOKEN
from tests.support import Stack

OUT = Path(__file__).resolve().parents[2] / "docs" / "img"
ETL = """import sys, time
def main(rows=3):
    for i in range(rows):
        print(f"\\x1b[32mloaded\\x1b[0m batch {i}: {1000 * (i + 1)} rows", flush=True)
        time.sleep(0.2)
    print("warning: 2 rows skipped (bad date)", file=sys.stderr)
    return {"rows": 1000 * rows, "skipped": 2}
"""
FAILS = "def main():\n    raise ValueError('the source file is empty')\n"


def seed(client: httpx.Client) -> str:
    """A few finished tasks, a failure and a schedule; the id of the task to show."""
    shown = ""
    for index in range(4):
        task = client.post(
            "/api/tasks",
            json={
                "name": f"nightly-etl-{index}",
                "task_type": "immediate",
                "function_code": ETL,
                "function_name": "main",
                "kwargs": {"rows": 3 + index},
            },
        ).json()
        assert "id" in task, task
        shown = shown or task["id"]
    client.post(
        "/api/tasks",
        json={"name": "import-invoices", "task_type": "immediate", "function_code": FAILS, "function_name": "main"},
    )
    client.post(
        "/api/scheduled-tasks",
        json={
            "name": "weekly-report",
            "task_type": "scheduled",
            "function_code": "def main():\n    return 'ok'\n",
            "function_name": "main",
            "cron_expression": "0 9 * * 1",
            "timezone": "Europe/Berlin",
        },
    )
    client.get(f"/api/tasks/{shown}/wait", params={"wait": 60})
    time.sleep(4)  # the others finish too
    return shown


def shoot(page: Page, url: str, name: str, ready: str) -> None:
    page.goto(url)
    page.locator(ready).first.wait_for()
    time.sleep(1.5)
    page.screenshot(path=str(OUT / name))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as root:
        stack = Stack(Path(root), env_extra={"TASKMESH_API_TOKENS": TOKEN}).start()
        try:
            with httpx.Client(
                base_url=stack.base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
            ) as client:
                task_id = seed(client)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
                for scheme, size, shots in (
                    ("light", {"width": 1280, "height": 800}, [("/#/", "dashboard-overview.png", ".uplot")]),
                    (
                        "dark",
                        {"width": 1280, "height": 800},
                        [(f"/#/tasks/{task_id}", "dashboard-task.png", "#log .stdout")],
                    ),
                    (
                        "light",
                        {"width": 390, "height": 800},
                        [("/#/tasks", "dashboard-tasks-phone.png", "#task-table tbody tr")],
                    ),
                ):
                    context = browser.new_context(viewport=size, color_scheme=scheme, base_url=stack.base_url)
                    context.add_init_script(f"sessionStorage.setItem('taskmesh.token', {TOKEN!r})")
                    page = context.new_page()
                    for url, name, ready in shots:
                        shoot(page, url, name, ready)
                    context.close()
                browser.close()
        finally:
            stack.stop()
    print(f"screenshots in {OUT}")


if __name__ == "__main__":
    main()
