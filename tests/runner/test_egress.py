"""The egress policy of API tasks: link-local and cloud metadata addresses are never reached."""

from __future__ import annotations

import socket

import pytest

from proto.tasks import TaskSpec
from services.runner.egress import EgressDenied, EgressPolicy
from services.runner.http_task import HttpTasks
from services.runner.settings import DEFAULT_BLOCKED_RANGES, RunnerSettings
from tests.runner.output_collector import NullOutput

DEFAULT = EgressPolicy(DEFAULT_BLOCKED_RANGES)


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("169.254.169.254", id="aws-gcp-azure-metadata"),
        pytest.param("169.254.170.2", id="ecs-task-metadata"),
        pytest.param("169.254.0.1", id="ipv4-link-local-low"),
        pytest.param("169.254.255.255", id="ipv4-link-local-high"),
        pytest.param("100.100.100.200", id="alibaba-metadata"),
        pytest.param("fd00:ec2::254", id="aws-ipv6-metadata"),
        pytest.param("fe80::1", id="ipv6-link-local"),
        pytest.param("fe80::1%eth0", id="ipv6-link-local-with-zone"),
        pytest.param("febf:ffff::1", id="ipv6-link-local-high"),
        pytest.param("::ffff:169.254.169.254", id="ipv4-mapped-metadata"),
        pytest.param("::ffff:a9fe:a9fe", id="ipv4-mapped-metadata-in-hex"),
        pytest.param("::ffff:100.100.100.200", id="ipv4-mapped-alibaba-metadata"),
        pytest.param("127.0.0.1", id="loopback"),
        pytest.param("127.9.9.9", id="loopback-high"),
        pytest.param("::1", id="ipv6-loopback"),
        pytest.param("::ffff:127.0.0.1", id="ipv4-mapped-loopback"),
        pytest.param("0.0.0.0", id="this-host"),
        pytest.param("10.1.2.3", id="private-10"),
        pytest.param("172.17.0.1", id="docker-bridge-gateway"),
        pytest.param("192.168.1.1", id="private-192-168"),
        pytest.param("100.64.0.1", id="cgnat"),
        pytest.param("fd12:3456::1", id="unique-local"),
        pytest.param("224.0.0.1", id="multicast"),
    ],
)
def test_the_default_policy_denies_loopback_private_metadata_cgnat_and_link_local_addresses(address: str) -> None:
    assert DEFAULT.permits(address) is False


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("93.184.216.34", id="public-ipv4"),
        pytest.param("2606:4700:4700::1111", id="public-ipv6"),
        pytest.param("169.253.255.255", id="just-below-link-local"),
        pytest.param("172.32.0.1", id="just-above-172-16-12"),
        pytest.param("100.128.0.1", id="just-above-cgnat"),
        pytest.param("169.255.0.0", id="just-above-link-local"),
        pytest.param("fec0::1", id="just-above-ipv6-link-local"),
        pytest.param("::ffff:93.184.216.34", id="ipv4-mapped-public"),
    ],
)
def test_the_default_policy_permits_other_addresses(address: str) -> None:
    assert DEFAULT.permits(address) is True


def test_an_allowed_range_overrides_a_denied_one() -> None:
    policy = EgressPolicy(DEFAULT_BLOCKED_RANGES, allow=["169.254.170.2/32"])

    assert policy.permits("169.254.170.2") is True
    assert policy.permits("::ffff:169.254.170.2") is True
    assert policy.permits("169.254.169.254") is False


def test_an_ipv4_deny_range_also_covers_its_ipv4_mapped_ipv6_form() -> None:
    policy = EgressPolicy(["10.0.0.0/8"])

    assert policy.permits("::ffff:10.9.8.7") is False
    assert policy.permits("::ffff:11.0.0.1") is True


def test_ranges_with_host_bits_set_are_accepted_as_their_network() -> None:
    policy = EgressPolicy(["192.168.1.77/24"])

    assert policy.permits("192.168.1.1") is False
    assert policy.permits("192.168.2.1") is True


def test_an_empty_policy_permits_everything() -> None:
    policy = EgressPolicy([])

    assert policy.permits("169.254.169.254") is True


# --- the socket factory the HTTP client connects through (nothing leaves the machine) -----------


@pytest.mark.parametrize("host", ["169.254.169.254", "::ffff:169.254.169.254", "fe80::1"])
def test_a_socket_to_a_blocked_address_is_refused_before_it_exists(host: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with pytest.raises(EgressDenied, match="blocked by the egress policy"):
        DEFAULT.socket_factory((family, socket.SOCK_STREAM, 6, "", (host, 80)))


def test_a_refusal_is_an_os_error_so_http_clients_report_a_connection_failure() -> None:
    assert issubclass(EgressDenied, OSError)


def test_a_socket_to_a_permitted_address_is_made() -> None:
    sock = DEFAULT.socket_factory((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 80)))
    try:
        assert sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM
    finally:
        sock.close()


async def test_an_api_task_to_a_blocked_literal_address_fails_as_egress_denied() -> None:
    tasks = HttpTasks(DEFAULT, max_connections=4, default_timeout=2, max_timeout=5, body_cap_bytes=1000)
    try:
        outcome = await tasks.execute(_spec("http://169.254.169.254/latest/meta-data/"), NullOutput())
    finally:
        await tasks.close()
    assert outcome.status == "failed" and outcome.error is not None
    assert outcome.error.type == "egress_denied"


def _spec(url: str) -> TaskSpec:
    return TaskSpec(name="probe", task_type="immediate", api_url=url)


def test_loopback_is_allowed_only_when_the_setting_says_so() -> None:
    assert RunnerSettings().egress_policy().permits("127.0.0.1") is False
    assert RunnerSettings(egress_allow_loopback=True).egress_policy().permits("127.0.0.1") is True
    assert RunnerSettings(egress_allow_loopback=True).egress_policy().permits("10.0.0.1") is False


def test_host_names_are_denied_or_allowed_whatever_they_resolve_to() -> None:
    policy = EgressPolicy(
        DEFAULT_BLOCKED_RANGES, deny_hosts=["evil.example", "*.bad.example"], allow_hosts=["*.internal.example"]
    )

    assert policy.refusal("evil.example", "93.184.216.34") == "evil.example is a host name the egress policy blocks"
    assert policy.refusal("a.bad.example", "93.184.216.34") is not None
    assert policy.refusal("bad.example", "93.184.216.34") is None  # the wildcard is for subdomains
    assert policy.refusal("index.internal.example", "10.0.0.5") is None
    assert (
        policy.refusal("rebind.example", "10.0.0.5")
        == "rebind.example resolves to 10.0.0.5, which the egress policy blocks"
    )


async def test_an_api_task_reaches_a_host_the_operator_allowed_by_name_and_not_one_denied_by_name() -> None:
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"hello": "local"})

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    outcomes = {}
    for name, policy in (
        ("allowed", EgressPolicy(DEFAULT_BLOCKED_RANGES, allow_hosts=["localhost"])),
        ("default", DEFAULT),
        ("denied", EgressPolicy([], deny_hosts=["localhost"])),
    ):
        tasks = HttpTasks(policy, max_connections=4, default_timeout=5, max_timeout=5, body_cap_bytes=1000)
        try:
            outcomes[name] = await tasks.execute(_spec(f"http://localhost:{port}/hello"), NullOutput())
        finally:
            await tasks.close()
    await runner.cleanup()
    assert outcomes["allowed"].status == "succeeded" and outcomes["allowed"].result["body"] == {"hello": "local"}
    for name in ("default", "denied"):
        assert outcomes[name].status == "failed" and outcomes[name].error is not None
        assert outcomes[name].error.type == "egress_denied", outcomes[name].error
    assert outcomes["denied"].error.message == "localhost is a host name the egress policy blocks"  # type: ignore[union-attr]


async def test_an_api_task_with_allow_hosts_reaches_a_listed_host_and_no_other() -> None:
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"hello": "local"})

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    local_mode = EgressPolicy(DEFAULT_BLOCKED_RANGES, allow=["127.0.0.0/8"])
    cases = {
        "listed": (local_mode, "http://localhost", ["localhost"]),
        "not-listed": (local_mode, "http://127.0.0.1", ["localhost"]),
        "listed-but-blocked": (DEFAULT, "http://localhost", ["localhost"]),
    }
    outcomes = {}
    for name, (policy, base, allow_hosts) in cases.items():
        tasks = HttpTasks(policy, max_connections=4, default_timeout=5, max_timeout=5, body_cap_bytes=1000)
        spec = TaskSpec(name="probe", task_type="immediate", api_url=f"{base}:{port}/hello", allow_hosts=allow_hosts)
        try:
            outcomes[name] = await tasks.execute(spec, NullOutput())
        finally:
            await tasks.close()
    await runner.cleanup()
    assert outcomes["listed"].status == "succeeded" and outcomes["listed"].result["body"] == {"hello": "local"}
    refused = outcomes["not-listed"].error
    assert refused is not None and refused.type == "egress_denied"
    assert refused.message == "127.0.0.1 is not in this task's allow_hosts (localhost)"
    blocked = outcomes["listed-but-blocked"].error
    assert blocked is not None and blocked.type == "egress_denied" and "blocked by the egress policy" in blocked.message
