"""How the baseline (and the raw engine measurement) runs a container: dependency-free, shared with the harness."""

SANDBOX_FLAGS = [
    "--network",
    "none",
    "--read-only",
    "--user",
    "65534",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--pids-limit",
    "64",
    "--memory",
    "512m",
    "--cpus",
    "0.5",
]
"""The same hardening as Taskmesh's sandboxes (ENVIRONMENT.md §5: it costs 1–7 ms)."""

CONTAINER_LABEL = "org.taskmesh.bench=1"
"""Every container the benchmark itself starts carries it, so leftovers can be removed by label."""
