"""``python -m tests.wheelhouse``: fetch the wheels the dependency tests install (a set-up step).

Tests never reach a public index: they serve this directory on 127.0.0.1 as a package index.
The wheels are fetched once (by ``make test``) for the sandbox image's Python version.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PACKAGES = ["six==1.17.0", "numpy==2.2.6", "pandas==2.2.3", "scikit-learn==1.6.1", "requests==2.32.3"]
"""The seed pins pandas==1.5.0 / numpy==1.24.0 / requests==2.28.0; pandas 1.5.0 has no wheel for
Python 3.11+, so tests use current releases (the seed's code runs unchanged on them)."""
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"]
ROOT = Path(__file__).resolve().parent.parent


def target_dir() -> Path:
    return Path(os.environ.get("TASKMESH_TEST_WHEELHOUSE", ROOT / ".taskmesh" / "wheelhouse"))


def sandbox_python() -> str:
    """``major.minor`` of the sandbox image the runner will use (the image discovery of the runner)."""
    image = os.environ.get("TASKMESH_SANDBOX_IMAGE")
    if not image:
        for label in ("org.taskmesh.sandbox", "org.taskmesh.recipe"):
            found = subprocess.run(
                ["docker", "images", "--filter", f"label={label}", "--format", "{{.Repository}}:{{.Tag}}"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.split()
            if found:
                image = found[0]
                break
    image = image or "python:3.12-slim"
    version = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            image,
            "python3",
            "-c",
            "import sys; print('%d.%d' % sys.version_info[:2])",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if version.returncode != 0:
        raise SystemExit(f"tests.wheelhouse: cannot run the sandbox image {image}: {version.stderr.strip()}")
    return version.stdout.strip()


def main() -> None:
    directory = target_dir()
    try:
        python = sandbox_python()
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"tests.wheelhouse: no Docker engine ({exc}); the sandbox tests will say so", file=sys.stderr)
        return
    stamp = directory / f".complete-{python}-{'-'.join(PACKAGES)}"
    if stamp.exists():
        print(f"tests.wheelhouse: {directory} is ready (Python {python})")
        return
    directory.mkdir(parents=True, exist_ok=True)
    abi = "cp" + python.replace(".", "")
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--only-binary",
        ":all:",
        "--python-version",
        python,
        "--implementation",
        "cp",
        "--abi",
        abi,
        "--abi",
        "none",
        "--abi",
        "abi3",
        "--dest",
        str(directory),
    ]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    subprocess.run(command + PACKAGES, check=True)
    stamp.write_text("ok")
    print(f"tests.wheelhouse: wheels for Python {python} in {directory}")


if __name__ == "__main__":
    main()
