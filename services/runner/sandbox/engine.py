"""The Docker engine, reached through the docker SDK's low-level client on worker threads.

The SDK is blocking (requests over the engine's socket); every call runs on a dedicated thread
pool so the event loop never waits on it. The attach socket of a container is taken out of the
SDK and driven by the event loop directly.

On a Unix socket the SDK keeps one connection pool per URL, and every container has URLs of its
own (``/containers/<id>/start``, ``…/attach``): each call of a run opened a new connection, and
the pools of the last 25 URLs were closed as they aged out. Here the calls share one pool per
socket, so a run's calls reuse kept-alive connections.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.transport.unixconn import UnixHTTPAdapter
from docker.utils import kwargs_from_env

log = logging.getLogger(__name__)


class EngineUnavailable(Exception):
    """The engine cannot be used; the message says why, in the words of the seed's troubleshooting."""


def explain(exc: BaseException, where: str) -> str:
    """Turn a connection failure into advice a person can act on."""
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    if isinstance(exc, PermissionError) or "permission denied" in lowered:
        return (
            f"permission denied on the Docker socket at {where}: run the runner as a user in the "
            "'docker' group (sudo usermod -aG docker $USER) or as root"
        )
    if (
        isinstance(exc, FileNotFoundError)
        or "no such file" in lowered
        or "connection refused" in lowered
        or "connection aborted" in lowered
        or "filenotfounderror" in lowered
    ):
        return (
            f"Docker not running: cannot connect to the Docker engine at {where} "
            "(start it, e.g. 'sudo systemctl start docker', then check 'docker ps')"
        )
    return f"Docker engine at {where} not usable: {text}"


class _OnePoolPerSocket(UnixHTTPAdapter):
    """The SDK's Unix-socket adapter with one connection pool for every URL (see the module doc)."""

    def get_connection(self, url: str | bytes, proxies: Any = None) -> Any:
        return super().get_connection(f"http+unix://{self.socket_path}", proxies)


def _share_one_pool(client: docker.APIClient) -> None:
    adapter = client.get_adapter(client.base_url)
    if type(adapter) is not UnixHTTPAdapter:  # TCP, TLS or SSH: the SDK's own pooling stays
        return
    shared = _OnePoolPerSocket(
        f"http+unix://{adapter.socket_path}", timeout=adapter.timeout, max_pool_size=adapter.max_pool_size
    )
    client.mount("http+docker://", shared)
    client._custom_adapter = shared  # type: ignore[attr-defined]  # private in the SDK: its get_adapter falls back to it
    adapter.close()


class Engine:
    """Async facade over ``docker.APIClient``."""

    remove_retry_delays: tuple[float | None, ...] = (0.2, 0.5, 1.0, 2.0, None)
    """Waits between attempts at removing a container the engine failed to remove; None: give up."""

    def __init__(self, base_url: str | None, threads: int) -> None:
        self.base_url = base_url
        self.where = base_url or kwargs_from_env().get("base_url") or "unix:///var/run/docker.sock"
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="docker")
        self._threads = threads
        self._client: docker.APIClient | None = None

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run ``APIClient.<method>(*args, **kwargs)`` on a worker thread."""
        client = await self.client()
        function = functools.partial(getattr(client, method), *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, function)

    async def client(self) -> docker.APIClient:
        if self._client is None:

            def make() -> docker.APIClient:
                options = kwargs_from_env()
                if self.base_url:
                    options["base_url"] = self.base_url
                client = docker.APIClient(version="auto", timeout=60, max_pool_size=self._threads, **options)
                _share_one_pool(client)
                return client

            try:
                self._client = await asyncio.get_running_loop().run_in_executor(self._executor, make)
            except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
                raise EngineUnavailable(explain(exc.__cause__ or exc, self.where)) from exc
        return self._client

    async def host_config(self, **options: Any) -> dict[str, Any]:
        """``APIClient.create_host_config``: built here, it asks the engine nothing (no thread needed)."""
        client = await self.client()
        config: dict[str, Any] = client.create_host_config(**options)
        return config

    async def ping(self) -> None:
        """Raise EngineUnavailable unless the engine answers."""
        try:
            await self.call("ping")
        except EngineUnavailable:
            raise
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
            self._client = None
            raise EngineUnavailable(explain(_root(exc), self.where)) from exc

    async def attach(self, container_id: str) -> socket.socket:
        """The raw, non-blocking attach socket (stdin + stdout + stderr, multiplexed)."""
        wrapped = await self.call(
            "attach_socket", container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
        )
        raw: socket.socket = getattr(wrapped, "_sock", wrapped)
        raw.setblocking(False)
        return raw

    async def remove(self, container_id: str) -> None:
        """Kill and remove a container; gone already is fine.

        A forced removal that meets the container while it is exiting fails with a 500 ("could not
        kill running container ... is not running"); moments later the same call succeeds, so server
        errors are retried a few times before they are given up on.
        """
        for delay in self.remove_retry_delays:
            try:
                await self.call("remove_container", container_id, force=True, v=True)
                return
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if exc.status_code == 409:  # removal already in progress
                    return
                if delay is None or exc.status_code is None or exc.status_code < 500:
                    raise
            await asyncio.sleep(delay)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _root(exc: BaseException) -> BaseException:
    seen = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        nxt = seen.__cause__ or seen.__context__
        if nxt is None or nxt is seen:
            break
        seen = nxt
    return seen


def is_missing_image(exc: BaseException) -> bool:
    return isinstance(exc, docker.errors.ImageNotFound) or (
        isinstance(exc, docker.errors.APIError) and exc.status_code == 404 and "image" in str(exc).lower()
    )
