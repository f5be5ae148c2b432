"""Secret names, references in task specs, and their substitution."""

from __future__ import annotations

import pytest

from proto import secrets
from proto.errors import FieldError
from proto.tasks import Limits, TaskSpec, check_spec, secret_references


def api_spec(**extra: object) -> TaskSpec:
    fields: dict = {"api_url": "https://example.com/", **extra}
    return TaskSpec(name="t", task_type="immediate", **fields)


def test_every_field_that_names_a_secret_is_reported_with_the_first_field_that_names_it() -> None:
    spec = api_spec(
        api_url="https://{{ secrets.HOST }}/x?k={{secrets.KEY}}",
        headers={"Authorization": "Bearer {{ secrets.KEY }}", "X": "{{ secrets.OTHER }}"},
        data={"{{ secrets.IN_KEY }}": ["{{ secrets.DEEP }}"]},
    )
    check_spec(spec, Limits())
    assert secret_references(spec) == {
        "HOST": "api_url",
        "KEY": "api_url",
        "OTHER": "headers",
        "IN_KEY": "data",
        "DEEP": "data",
    }


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (api_spec(headers={"A": "{{ secrets.bad-name }}"}), "headers"),
        (api_spec(api_url="https://x/{{ secrets.1X }}"), "api_url"),
        (api_spec(data="{{ secrets. }}"), "data"),
        (api_spec(secrets=["A"]), "secrets"),
    ],
)
def test_a_bad_reference_is_refused_naming_its_field(spec: TaskSpec, field: str) -> None:
    with pytest.raises(FieldError) as caught:
        check_spec(spec, Limits())
    assert caught.value.field == field


def test_a_code_task_declares_its_secrets_by_name() -> None:
    spec = TaskSpec(
        name="c", task_type="immediate", function_code="def f():\n    pass", function_name="f", secrets=["A", "B_2"]
    )
    check_spec(spec, Limits())
    assert secret_references(spec) == {"A": "secrets", "B_2": "secrets"}


def test_substitution_replaces_every_reference_in_strings_and_keys_only() -> None:
    values = {"A": "va", "B": "vb"}.__getitem__
    assert secrets.substitute("x{{secrets.A}}y{{  secrets.B  }}", values) == "xvayvb"
    assert secrets.substitute_all({"{{ secrets.A }}": [1, "{{ secrets.B }}", None]}, values) == {"va": [1, "vb", None]}


@pytest.mark.parametrize("name", ["", "1A", "a-b", "a.b", "a b", "x" * 65, "ä"])
def test_a_name_that_is_no_identifier_is_refused(name: str) -> None:
    with pytest.raises(FieldError):
        secrets.check_name(name)


def test_a_value_is_bounded_in_bytes_not_characters() -> None:
    secrets.check_value("é" * (secrets.MAX_VALUE_BYTES // 2))
    with pytest.raises(FieldError):
        secrets.check_value("é" * (secrets.MAX_VALUE_BYTES // 2 + 1))
