"""Docker sandboxes: one fresh, locked-down container per run, removed afterwards, always.

Default lockdown: network none, memory with no extra swap, CPU quota, pids limit, read-only root
filesystem with a small tmpfs /tmp, user nobody, every capability dropped, no-new-privileges,
tini as PID 1, no log driver, no host path but the read-only requirement set.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from docker.types import LogConfig, Ulimit
from nats.aio.client import Client

from proto.control import SandboxStatus
from proto.runs import Execution, OutcomeStatus, RunError, RunTimings
from proto.tasks import TaskSpec
from services.runner.http_task import judge_response, redacted
from services.runner.outcome import failed
from services.runner.output import RunOutput
from services.runner.sandbox.channel import FRAME_MARGIN_BYTES, STDERR, Channel, ResultScanner
from services.runner.sandbox.deps import DependencyCache, DependencyInstallFailed, DepsConfig
from services.runner.sandbox.egress_proxy import EgressProxy
from services.runner.sandbox.engine import Engine, EngineUnavailable
from services.runner.sandbox.images import resolve_image, still_resolves
from services.runner.sandbox.network import HostFirewall, SandboxNetwork, ensure_network
from services.runner.sandbox.pool import Sandbox, Shape, WarmPool
from services.runner.sandbox.reaper import LABEL_INSTANCE, LABEL_MANAGED, LABEL_RUN, LABEL_RUNNER, reap_orphans
from services.runner.settings import RunnerSettings

log = logging.getLogger(__name__)

BOOTSTRAP = (Path(__file__).with_name("bootstrap.py")).read_text()
EXIT_WAIT_SECONDS = 5.0


class SandboxAddressUnknown(Exception):
    """The sandbox's address on the sandbox network could not be read, so its task's list cannot apply."""


@dataclass(frozen=True)
class SandboxJob:
    """One attempt to run in a sandbox, with limits already resolved against the operator's."""

    task_id: str
    run_id: str
    attempt: int
    spec: TaskSpec
    timeout_seconds: float
    memory_mb: int
    cpus: float
    network: bool
    environment: dict[str, str] = field(default_factory=dict)
    """Environment variables of the user's code (its secrets): sent with the payload, never a container setting."""


class _Frame(msgspec.Struct):
    ok: bool
    result: Any = None
    error: dict[str, Any] | None = None
    reason: str = ""


_frame_decoder = msgspec.json.Decoder(_Frame)


class DockerSandboxes:
    """Runs sandbox jobs; owns the warm pool, the dependency cache and orphan reaping."""

    def __init__(self, settings: RunnerSettings, runner_id: str, nc: Client) -> None:
        self.settings = settings
        self.runner_id = runner_id
        self.nc = nc
        self.engine = Engine(settings.docker_host, threads=settings.effective_code_slots() * 3 + 8)
        self.labels = {LABEL_MANAGED: "1", LABEL_INSTANCE: settings.instance, LABEL_RUNNER: runner_id}
        self.image = settings.sandbox_image
        self.image_id = ""
        self.usable = False
        self.detail = "not checked yet"
        self.deps: DependencyCache | None = None
        self.pool: WarmPool | None = None
        self.network: SandboxNetwork | None = None
        self.proxy = EgressProxy(settings.egress_policy(), known_peers_only=True)
        self.firewall: HostFirewall | None = None
        self.egress_detail = "not set up yet"
        self.active: dict[str, str] = {}  # run id -> container id
        self.started_total = 0
        self.reaped_total = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._removals: set[asyncio.Task[None]] = set()
        # containers of ours the engine would not remove: the reaper skips its own runner's, so they
        # are retried here at every check (container id -> the address admitted to the proxy)
        self._leftovers: dict[str, str | None] = {}
        self._reap_now = asyncio.Event()

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self, stop: asyncio.Event) -> None:
        """Check the engine and image, reap orphans, start the pool; recheck in the background."""
        await self.check()
        if self.usable:
            await self.reap_orphans()
        default = Shape(image=self.image, memory_mb=self.settings.sandbox_memory_mb, cpus=self.settings.sandbox_cpus)
        self.pool = WarmPool(
            self._create,
            self.engine.remove,
            self.settings.pool_size,
            self.settings.pool_max_idle.total_seconds(),
            default if self.settings.pool_size > 0 else None,
            self.settings.pool_max_ready,
        )
        self._tasks = [
            asyncio.create_task(self.pool.run(stop, lambda: self.usable), name="warm-pool"),
            asyncio.create_task(self._watch(stop), name="sandbox-watch"),
        ]

    async def close(self) -> None:
        """Remove pooled and running containers; nothing of ours is left behind."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.proxy.close()
        if self.firewall is not None:
            await self.firewall.remove()
        if self.pool is not None:
            await self.pool.close()
        for container_id in [*self.active.values(), *self._leftovers]:
            try:
                await self.engine.remove(container_id)
            except Exception as exc:  # reaped at the next start
                log.warning("container %s not removed: %s", container_id[:12], exc)
        if self._removals:
            await asyncio.gather(*self._removals, return_exceptions=True)
        self.engine.close()

    def reap_soon(self) -> None:
        """Look for orphans now (called when a run comes back from a runner that stopped)."""
        self._reap_now.set()

    async def _watch(self, stop: asyncio.Event) -> None:
        beats = 0
        while not stop.is_set():
            self._reap_now.clear()
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._reap_now.wait())]
            try:
                await asyncio.wait(waiters, timeout=10.0, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            if stop.is_set():
                return
            was_usable = self.usable
            await self.check()
            beats += 1
            if self.usable and self._leftovers:
                for container_id, admitted in list(self._leftovers.items()):
                    self._leftovers.pop(container_id)
                    self._remove_later(container_id, admitted)
            if self.usable and (not was_usable or self._reap_now.is_set() or beats % 3 == 0):
                await self.reap_orphans()

    async def check(self) -> None:
        """Find out whether sandboxes can start, and say why not in plain words."""
        try:
            await self.engine.ping()
            if not await still_resolves(self.engine, self.image, self.image_id):
                self.image, self.image_id = await resolve_image(self.engine, self.settings.sandbox_image)
            if self.deps is None:
                self.deps = DependencyCache(
                    self.engine,
                    DepsConfig(
                        root=self.settings.deps_dir,
                        volume=self.settings.deps_volume,
                        image=self.image,
                        uv_path=self.settings.uv_path,
                        index_url=self.settings.index_url,
                        find_links=self.settings.find_links,
                        ca_bundle=self.settings.ca_bundle,
                        network=self.settings.builder_network,
                        timeout_seconds=self.settings.install_timeout_seconds,
                        max_bytes=self.settings.deps_cache_max_bytes,
                        labels=self.labels,
                        set_max_bytes=self.settings.deps_set_max_bytes,
                    ),
                )
            if self.network is None:
                try:
                    await self._set_up_egress()
                except Exception as exc:  # networked runs fail clearly until it works; the rest run
                    self.egress_detail = f"egress setup failed: {type(exc).__name__}: {exc}"
                    log.warning("%s", self.egress_detail)
            if not self.usable:
                log.info("sandboxes usable", extra={"image": self.image, "egress": self.egress_detail})
            self.usable, self.detail = True, "ok"
        except EngineUnavailable as exc:
            self._unusable(str(exc))
        except Exception as exc:  # anything else the engine says
            self._unusable(f"sandbox backend error: {type(exc).__name__}: {exc}")

    async def _set_up_egress(self) -> None:
        """The internal network, the egress proxy on it and, when possible, the host firewall."""
        network = await ensure_network(
            self.engine, self.settings.sandbox_network, self.labels, self.settings.egress_proxy_host
        )
        if self.proxy.server is None:
            await self.proxy.start(network.listen)
        self.egress_detail = f"proxy {network.listen}:{self.proxy.address[1]} on {network.name}"
        if not network.internal:
            log.warning("sandbox network %s is not internal: sandboxes can bypass the egress proxy", network.name)
            self.egress_detail += " (not internal)"
        if self.settings.egress_host_firewall:
            firewall = HostFirewall(network, self.proxy.address[1])
            problem = await firewall.install()
            if problem:
                log.warning("host firewall not installed (%s): sandboxes reach this host's open ports", problem)
                self.egress_detail += f"; host firewall off: {problem}"
            else:
                self.firewall = firewall
        self.network = network

    def _proxy_environment(self) -> dict[str, str]:
        host, port = self.proxy.address
        url = f"http://{host}:{port}"
        return {
            "HTTP_PROXY": url,
            "HTTPS_PROXY": url,
            "http_proxy": url,
            "https_proxy": url,
            "NO_PROXY": "",
            "no_proxy": "",
        }

    def _unusable(self, detail: str) -> None:
        if self.usable or detail != self.detail:
            log.warning("sandboxes unavailable: %s", detail)
        self.usable, self.detail = False, detail

    def status(self) -> SandboxStatus:
        return SandboxStatus(
            usable=self.usable, detail=self.detail, image=self.image, pool_ready=self.pool.count() if self.pool else 0
        )

    # --- containers ---------------------------------------------------------------------------

    async def _create(self, shape: Shape, run_id: str = "pool") -> Sandbox:
        """Create, attach and start a container of ``shape``; it then waits for its payload."""
        started = time.perf_counter()
        binds: dict[str, dict[str, str]] = {}
        environment = {
            "HOME": "/tmp",
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "TMPDIR": "/tmp",
        }
        if shape.deps_key is not None:  # its own set only: never the cache's root (other sets, uv's cache)
            binds[shape.deps_host_path or ""] = {"bind": "/deps", "mode": "ro"}
            environment["TASKMESH_DEPS"] = shape.deps_in_sandbox or "/deps"
        if shape.network != "none":
            environment.update(self._proxy_environment())
        host_config = await self.engine.host_config(
            network_mode=shape.network,
            mem_limit=f"{shape.memory_mb}m",
            memswap_limit=f"{shape.memory_mb}m",
            nano_cpus=int(shape.cpus * 1e9),
            pids_limit=self.settings.sandbox_pids_limit,
            read_only=True,
            tmpfs={"/tmp": f"rw,nosuid,nodev,size={self.settings.sandbox_tmpfs_mb}m,mode=1777"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            init=True,
            binds=binds or None,
            log_config=LogConfig(type="none"),
            ulimits=[Ulimit(name="core", soft=0, hard=0), Ulimit(name="nofile", soft=1024, hard=1024)],
        )
        created = await self.engine.call(
            "create_container",
            shape.image,
            command=["python3", "-I", "-u", "-c", BOOTSTRAP],
            stdin_open=True,
            tty=False,
            user=self.settings.sandbox_user,
            working_dir="/tmp",
            environment=environment,
            labels={**self.labels, LABEL_RUN: run_id},
            host_config=host_config,
        )
        container_id = created["Id"]
        try:
            channel = Channel(await self.engine.attach(container_id))
            await self.engine.call("start", container_id)
        except BaseException:
            await self.engine.remove(container_id)
            raise
        self.started_total += 1
        return Sandbox(container_id, channel, shape, start_ms=round((time.perf_counter() - started) * 1000, 3))

    async def _admit(self, sandbox: Sandbox, allow_hosts: list[str]) -> str:
        """Tell the proxy this sandbox's address and its task's ``allow_hosts``; the address."""
        try:
            info = await self.engine.call("inspect_container", sandbox.container_id)
            networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
            address = str((networks.get(self.settings.sandbox_network) or {}).get("IPAddress") or "")
        except Exception as exc:
            raise SandboxAddressUnknown(f"sandbox address unknown, the egress proxy cannot admit it: {exc}") from None
        if not address:
            raise SandboxAddressUnknown(
                "sandbox has no address on the sandbox network: the egress proxy cannot admit it"
            )
        self.proxy.admit(address, allow_hosts)
        return address

    def _remove_later(self, container_id: str, admitted: str | None = None) -> None:
        async def remove() -> None:
            try:
                await self.engine.remove(container_id)
            except Exception as exc:  # retried at the next check
                log.warning("container %s not removed, will retry: %s", container_id[:12], exc)
                self._leftovers[container_id] = admitted
                return  # keep its allow list: the container may still be there
            if admitted is not None:  # only now: no other container had this address before
                self.proxy.release(admitted)

        task = asyncio.create_task(remove())
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    async def reap_orphans(self) -> int:
        """Remove containers of this installation whose runner no longer answers its ping."""
        reaped = await reap_orphans(self.engine, self.nc, self.settings.instance, self.runner_id)
        self.reaped_total += reaped
        return reaped

    # --- runs ---------------------------------------------------------------------------------

    async def run(self, job: SandboxJob, output: RunOutput, cancelled: asyncio.Event) -> Execution:
        """Run ``job`` in a fresh container and return its outcome; the container is removed."""
        if not self.usable or self.deps is None or self.pool is None:
            output.system(f"sandbox unavailable: {self.detail}")
            return failed("sandbox_unavailable", f"sandbox unavailable: {self.detail}")
        if job.network and self.network is None:
            output.system(f"sandbox network unavailable: {self.egress_detail}")
            return failed("sandbox_unavailable", f"sandbox network unavailable: {self.egress_detail}")
        started = time.perf_counter()
        shape = Shape(
            image=self.image,
            network="none" if not job.network else self.settings.sandbox_network,
            memory_mb=job.memory_mb,
            cpus=job.cpus,
        )
        deps_hit, install_ms = None, None
        if job.spec.requirements:
            output.system(f"requirements: {', '.join(job.spec.requirements)}")
            try:
                deps = await self.deps.ensure(job.spec.requirements, self.image_id)
            except DependencyInstallFailed as exc:
                output.system(f"dependency install failed: {exc}")
                return failed("dependency_install_failed", f"dependency install failed: {exc}")
            except EngineUnavailable as exc:
                return failed("sandbox_unavailable", f"sandbox unavailable: {exc}")
            deps_hit, install_ms = deps.cache_hit, deps.install_ms
            output.system(
                "requirements: cached" if deps.cache_hit else f"requirements installed in {install_ms:.0f} ms"
            )
            shape = Shape(
                image=shape.image,
                network=shape.network,
                memory_mb=shape.memory_mb,
                cpus=shape.cpus,
                deps_key=deps.key,
                deps_host_path=deps.host_path,
                deps_in_sandbox=deps.path_in_sandbox,
            )
        sandbox = self.pool.take(shape)
        try:
            if sandbox is None:
                sandbox = await self._create(shape, job.run_id)
            else:
                sandbox.start_ms = 0.0
        except Exception as exc:
            detail = str(exc) if isinstance(exc, EngineUnavailable) else f"{type(exc).__name__}: {exc}"
            output.system(f"container failed to start: {detail}")
            return failed("sandbox_unavailable", f"container failed to start: {detail}")
        self.active[job.run_id] = sandbox.container_id
        admitted = None
        try:
            if job.network:
                admitted = await self._admit(sandbox, job.spec.allow_hosts)
            outcome = await self._execute(sandbox, job, output, cancelled)
        except SandboxAddressUnknown as exc:
            output.system(str(exc))
            outcome = failed("sandbox_unavailable", str(exc))
        finally:
            self.active.pop(job.run_id, None)
            sandbox.channel.close()
            self._remove_later(sandbox.container_id, admitted)
        outcome.deps_cache_hit = deps_hit
        total_ms = round((time.perf_counter() - started) * 1000, 3)
        run_ms = outcome.timings.run_ms if outcome.timings else None
        outcome.timings = RunTimings(
            deps_install_ms=install_ms, start_ms=sandbox.start_ms, run_ms=run_ms, total_ms=total_ms
        )
        return outcome

    def _payload(self, job: SandboxJob, nonce: str) -> bytes:
        """Two lines: the header (the bootstrap's parent process keeps it) and the payload."""
        header = {
            "nonce": nonce,
            "mode": job.spec.kind,
            "result_cap": self.settings.result_cap_bytes,
            "frame_cap": self._frame_cap(),
        }
        spec = job.spec
        payload: dict[str, Any] = {"result_cap": self.settings.result_cap_bytes}
        if spec.kind == "code":
            payload.update(
                mode="code", code=spec.function_code, function=spec.function_name, args=spec.args, kwargs=spec.kwargs
            )
            if job.environment:
                payload["env"] = job.environment
        else:
            body = (
                spec.data
                if isinstance(spec.data, str) or spec.data is None
                else msgspec.json.encode(spec.data).decode()
            )
            headers = dict(spec.headers)
            if (
                spec.data is not None
                and not isinstance(spec.data, str)
                and not any(k.lower() == "content-type" for k in headers)
            ):
                headers["Content-Type"] = "application/json"
            payload.update(
                mode="api",
                body_cap=self.settings.response_body_cap_bytes,
                request={
                    "method": spec.method,
                    "url": spec.api_url,
                    "headers": headers,
                    "body": body,
                    "timeout": job.timeout_seconds,
                    "log_url": redacted(spec.api_url or ""),
                },
            )
        return msgspec.json.encode(header) + b"\n" + msgspec.json.encode(payload) + b"\n"

    def _frame_cap(self) -> int:
        return self.settings.result_cap_bytes + FRAME_MARGIN_BYTES

    async def _execute(
        self, sandbox: Sandbox, job: SandboxJob, output: RunOutput, cancelled: asyncio.Event
    ) -> Execution:
        nonce = secrets.token_hex(16)
        scanner, stderr_end = ResultScanner(nonce, self._frame_cap()), ResultScanner(nonce, self._frame_cap())
        started = time.perf_counter()

        async def read() -> None:
            async for stream, data in sandbox.channel.frames():
                name, which = ("stderr", stderr_end) if stream == STDERR else ("stdout", scanner)
                shown = which.feed(data)
                if shown:
                    output.write(name, shown)  # type: ignore[arg-type]  # name is the channel's stdout or stderr
                if scanner.too_large or stderr_end.too_large or (scanner.done and stderr_end.done):
                    return
            for name, which in (("stdout", scanner), ("stderr", stderr_end)):
                leftover = which.leftover()
                if leftover:
                    output.write(name, leftover)  # type: ignore[arg-type]  # name is the channel's stdout or stderr

        reader = asyncio.create_task(read())
        stopper = asyncio.create_task(cancelled.wait())
        try:
            await sandbox.channel.send(self._payload(job, nonce))
            done, _ = await asyncio.wait(
                {reader, stopper}, timeout=job.timeout_seconds, return_when=asyncio.FIRST_COMPLETED
            )
        except OSError as exc:
            done = set()
            reader.cancel()
            output.system(f"sandbox channel failed: {exc}")
            return await self._died(sandbox, output, started)
        finally:
            stopper.cancel()
        run_ms = round((time.perf_counter() - started) * 1000, 3)
        if reader in done:
            if reader.exception() is not None:
                output.system(f"sandbox channel failed: {reader.exception()}")
            if scanner.result is not None:
                return self._from_frame(scanner.result, job, run_ms, output)
            if scanner.too_large or stderr_end.too_large:
                return await self._frame_too_large(sandbox, output, run_ms)
            return await self._died(sandbox, output, started)
        reader.cancel()
        sandbox.channel.close()  # unread output must not hold up the engine's kill (its attach copy blocks)
        await self.engine.remove(sandbox.container_id)
        if cancelled.is_set():
            output.system("cancelled: container killed")
            return Execution(
                status="cancelled",
                error=RunError(type="cancelled", message="cancelled while running"),
                timings=RunTimings(run_ms=run_ms),
            )
        output.system(f"timed out after {job.timeout_seconds:g} s: container killed")
        return Execution(
            status="timed_out",
            timings=RunTimings(run_ms=run_ms),
            error=RunError(
                type="timed_out", message=f"still running after the {job.timeout_seconds:g} s timeout; killed"
            ),
        )

    def _from_frame(self, raw: bytes, job: SandboxJob, run_ms: float, output: RunOutput) -> Execution:
        try:
            frame = _frame_decoder.decode(raw)
        except msgspec.MsgspecError as exc:
            return Execution(
                status="failed",
                exit_code=0,
                timings=RunTimings(run_ms=run_ms),
                error=RunError(type="runner_error", message=f"unreadable result frame: {exc}"),
            )
        timings = RunTimings(run_ms=run_ms)
        if frame.ok and job.spec.kind == "api":
            outcome = judge_response(frame.result, frame.reason, job.spec.expected_status)
            outcome.exit_code, outcome.timings = 0, timings
            return outcome
        if frame.ok:
            return Execution(status="succeeded", result=frame.result, exit_code=0, timings=timings)
        error = frame.error or {}
        error_type = error.get("type", "exception")
        status: OutcomeStatus = "timed_out" if error_type == "timed_out" else "failed"
        if error.get("traceback"):
            output.write("stderr", error["traceback"].encode())
        return Execution(
            status=status,
            exit_code=0,
            timings=timings,
            error=RunError(
                type=error_type,
                message=str(error.get("message", "failed"))[:4000],
                exc_type=error.get("exc_type"),
                traceback=(error.get("traceback") or None),
            ),
        )

    async def _frame_too_large(self, sandbox: Sandbox, output: RunOutput, run_ms: float) -> Execution:
        """The result frame outgrew its cap: stop reading it, kill the container, say so."""
        sandbox.channel.close()  # the engine's attach copy would block on the unread rest, and the kill with it
        await self.engine.remove(sandbox.container_id)
        cap = self._frame_cap()
        output.system(f"result frame larger than {cap} bytes: container killed")
        return Execution(
            status="failed",
            timings=RunTimings(run_ms=run_ms),
            error=RunError(
                type="result_too_large",
                message=(
                    f"the sandbox sent a result frame larger than {cap} bytes "
                    f"(the result limit is {self.settings.result_cap_bytes} bytes); killed"
                ),
            ),
        )

    async def _died(self, sandbox: Sandbox, output: RunOutput, started: float) -> Execution:
        """The process ended without a result: find out how (OOM, signal, exit code)."""
        run_ms = round((time.perf_counter() - started) * 1000, 3)
        try:
            status = await asyncio.wait_for(self.engine.call("wait", sandbox.container_id), EXIT_WAIT_SECONDS)
            state = (await self.engine.call("inspect_container", sandbox.container_id))["State"]
        except Exception as exc:
            return Execution(
                status="failed",
                timings=RunTimings(run_ms=run_ms),
                error=RunError(
                    type="runner_error", message=f"sandbox ended and its state is unknown: {type(exc).__name__}"
                ),
            )
        code = int(status.get("StatusCode", state.get("ExitCode", -1)))
        timings = RunTimings(run_ms=run_ms)
        if state.get("OOMKilled"):
            output.system(f"killed: out of memory (limit {sandbox.shape.memory_mb} MB)")
            return Execution(
                status="failed",
                exit_code=code,
                timings=timings,
                error=RunError(
                    type="oom_killed",
                    message=f"out of memory: the sandbox exceeded its {sandbox.shape.memory_mb} MB limit",
                ),
            )
        if code > 128:
            output.system(f"killed by signal {code - 128}")
            return Execution(
                status="failed",
                exit_code=code,
                timings=timings,
                error=RunError(
                    type="signal", signal=code - 128, message=f"the sandbox process was killed by signal {code - 128}"
                ),
            )
        output.system(f"exited with code {code} without a result")
        return Execution(
            status="failed",
            exit_code=code,
            timings=timings,
            error=RunError(
                type="exit_code", message=f"the sandbox process exited with code {code} before returning a result"
            ),
        )

    async def kill(self, run_id: str) -> bool:
        """Kill the container of ``run_id`` if this runner has it."""
        container_id = self.active.get(run_id)
        if container_id is None:
            return False
        await self.engine.remove(container_id)
        return True
