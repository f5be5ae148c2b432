"""Module-level functions the client tests send to sandboxes (source capture reads this file)."""

import json
import time
from math import fsum

THRESHOLD = 10
"""A module global that tasks may not read (the decoration-time refusal test)."""


def mean(xs: list[float]) -> float:
    return fsum(xs) / len(xs)


def ratio(a: float, b: float) -> float:
    return a / b


def chatty(lines: int, pause_seconds: float) -> int:
    for number in range(lines):
        print(f"line {number}", flush=True)
        time.sleep(pause_seconds)
    return lines


def sleeper(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


def encode(value: dict[str, int]) -> str:
    return json.dumps(value, sort_keys=True)


def over_threshold(x: int) -> bool:
    return x > THRESHOLD
