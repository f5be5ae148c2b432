"""Result rows, the one table, and the JSON file in bench/results/."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    """One figure for both systems, with the goal it is held against."""

    workload: str
    metric: str
    unit: str
    taskmesh: float | None
    celery: float | None = None
    higher_is_better: bool = False
    goal: str = ""
    met: bool | None = None
    note: str = ""
    compare: bool = True
    """False for references measured next to each system (the engine's rate): no ratio."""

    @property
    def ratio(self) -> float | None:
        """How many times better Taskmesh is (> 1: Taskmesh better)."""
        if not self.compare or self.taskmesh is None or self.celery is None or self.taskmesh <= 0 or self.celery <= 0:
            return None
        return self.taskmesh / self.celery if self.higher_is_better else self.celery / self.taskmesh

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": None if self.ratio is None else round(self.ratio, 3)}


@dataclass
class WorkloadResult:
    """The rows of one workload, its raw details, and notes (bottlenecks, failures)."""

    name: str
    rows: list[Row] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    def add(
        self,
        metric: str,
        unit: str,
        taskmesh: float | None,
        celery: float | None = None,
        *,
        higher_is_better: bool = False,
        goal: str = "",
        met: bool | None = None,
        note: str = "",
        compare: bool = True,
    ) -> Row:
        row = Row(self.name, metric, unit, _round(taskmesh), _round(celery), higher_is_better, goal, met, note, compare)
        self.rows.append(row)
        return row


def _round(value: float | None) -> float | None:
    if value is None:
        return None
    return round(value, 3) if abs(value) < 100 else round(value, 1)


def _show(value: float | None) -> str:
    if value is None:
        return "—"
    if value == int(value) and abs(value) >= 100:
        return f"{int(value):,}"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def render_table(results: list[WorkloadResult]) -> str:
    """The one table: Taskmesh, Celery and the ratio per figure, with goals."""
    header = ["workload", "metric", "unit", "Taskmesh", "Celery", "ratio", "goal", "met"]
    lines = [header]
    for result in results:
        if result.error:
            lines.append([result.name, f"FAILED: {result.error[:70]}", "", "", "", "", "", ""])
        for row in result.rows:
            ratio = "—" if row.ratio is None else f"{row.ratio:.2f}×"
            met = "" if row.met is None else ("met" if row.met else "MISSED")
            lines.append(
                [row.workload, row.metric, row.unit, _show(row.taskmesh), _show(row.celery), ratio, row.goal, met]
            )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    numeric = {3, 4, 5}
    out = []
    for number, line in enumerate(lines):
        cells = [cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(line)]
        out.append("  ".join(cells).rstrip())
        if number == 0:
            out.append("  ".join("-" * width for width in widths))
    out.append(
        "ratio: how many times better Taskmesh is (> 1: Taskmesh better) — Taskmesh/Celery for rates, "
        "Celery/Taskmesh for times and sizes."
    )
    return "\n".join(out)


def render_markdown(results: list[WorkloadResult]) -> str:
    """The same table in Markdown, for bench/README.md."""
    out = ["| workload | metric | unit | Taskmesh | Celery | ratio | goal | met |", "|---|---|---|--:|--:|--:|---|---|"]
    for result in results:
        for row in result.rows:
            ratio = "—" if row.ratio is None else f"{row.ratio:.2f}×"
            met = "" if row.met is None else ("met" if row.met else "**missed**")
            out.append(
                f"| {row.workload} | {row.metric} | {row.unit} | {_show(row.taskmesh)} | {_show(row.celery)} "
                f"| {ratio} | {row.goal} | {met} |"
            )
    return "\n".join(out)


def load_json(path: Path) -> tuple[dict, list[WorkloadResult]]:
    """A results file back as its header and WorkloadResults."""
    document = json.loads(path.read_text())
    results = []
    for name, body in document.pop("workloads").items():
        rows = [Row(**{k: v for k, v in row.items() if k != "ratio"}) for row in body["rows"]]
        results.append(WorkloadResult(name, rows, body["details"], body["notes"], body["seconds"], body["error"]))
    return document, results


def results_path(commit: str, today: dt.date | None = None) -> Path:
    """``bench/results/<date>-<commit>.json``; a second run that day gets ``-2``, ``-3``…"""
    stem = f"{(today or dt.date.today()).isoformat()}-{commit}"
    path, number = RESULTS_DIR / f"{stem}.json", 2
    while path.exists():
        path, number = RESULTS_DIR / f"{stem}-{number}.json", number + 1
    return path


def write_json(path: Path, header: dict, results: list[WorkloadResult]) -> None:
    document = {
        **header,
        "workloads": {
            r.name: {
                "rows": [row.as_dict() for row in r.rows],
                "details": r.details,
                "notes": r.notes,
                "seconds": round(r.seconds, 1),
                "error": r.error,
            }
            for r in results
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")


def main() -> None:
    """``python -m bench.report <results.json>``: the Markdown table for bench/README.md."""
    import sys

    header, results = load_json(Path(sys.argv[1]))
    machine = header["machine"]
    print(
        f"`{header['command']}` — {header['date']}, commit {header['git']['commit']}"
        f"{' (dirty tree)' if header['git']['dirty'] else ''}, {machine['cores']} cores, "
        f"{machine['memory_bytes'] / 2**30:.0f} GiB, load average {machine['load_average_start']} → "
        f"{machine.get('load_average_end')}\n"
    )
    print(render_markdown(results))


if __name__ == "__main__":
    main()
