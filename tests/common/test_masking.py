"""What counts as an inline credential, and how it is masked."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from proto import api
from proto.runs import DeadLetter, RunDue
from proto.tasks import TaskSpec
from services.common.masking import masked_reply, masked_result, masked_spec, masked_url

NOW = datetime(2026, 12, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "masked"),
    [
        ("Authorization", True),
        ("proxy-authorization", True),
        ("COOKIE", True),
        ("X-Api-Key", True),
        ("X-Auth-Token", True),
        ("x-client-secret", True),
        ("Db-Password", True),
        ("my-api-key-2", True),
        ("Accept", False),
        ("Content-Type", False),
        ("X-Request-Id", False),
    ],
)
def test_a_header_is_masked_when_its_name_says_it_is_a_credential(name: str, masked: bool) -> None:
    spec = masked_spec(TaskSpec(name="t", task_type="immediate", api_url="http://h/", headers={name: "v4lue"}))
    assert spec.headers[name] == ("***" if masked else "v4lue")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://alice:pw@h:8080/p?q=1#f", "http://alice:***@h:8080/p?q=1#f"),
        ("https://:pw@[::1]/", "https://:***@[::1]/"),
        ("http://alice@h/", "http://alice@h/"),
        ("http://h/p", "http://h/p"),
        ("http://a:b@[::1/", "***"),
    ],
)
def test_only_the_password_of_a_url_is_masked(url: str, shown: str) -> None:
    assert masked_url(url) == shown


def test_set_cookie_is_masked_in_an_api_result_and_a_code_result_is_left_alone() -> None:
    result = {"status_code": 200, "headers": {"Set-Cookie": "s=1", "x": "y"}, "body": None}
    assert masked_result(result)["headers"] == {"Set-Cookie": "***", "x": "y"}
    assert result["headers"]["Set-Cookie"] == "s=1"  # the stored value is not touched
    assert masked_result({"set-cookie": "s=1"}) == {"set-cookie": "s=1"}


def test_a_dead_letters_due_run_is_masked_too() -> None:
    spec = TaskSpec(name="t", task_type="immediate", api_url="http://u:pw@h/", headers={"Authorization": "x"})
    due = RunDue(task_id="t", run_id="r", slot="s", spec=spec, scheduled_for=NOW, queued_at=NOW)
    letter = DeadLetter(task_id="t", run_id="r", attempt=1, deliveries=5, reason="x", at=NOW, due=due)
    shown = masked_reply(api.DeadLetterList(dead_letters=[letter])).dead_letters[0].due.spec
    assert shown.headers == {"Authorization": "***"} and shown.api_url == "http://u:***@h/"
    assert spec.headers == {"Authorization": "x"}
