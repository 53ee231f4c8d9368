"""Human-readable tables of benchmark results."""

from __future__ import annotations

from typing import Any


def table_head(columns: str) -> list[str]:
    """A markdown table's header and separator lines, from its column names joined by ``" | "``."""
    return [f"| {columns} |", "|" + "---|" * (columns.count("|") + 1)]


def format_headline(result: dict[str, Any]) -> str:
    if result.get("headline") is None:
        return result.get("status", "n/a")
    return f"{result['headline']:.2f}"


def results_table(results: dict[str, Any]) -> str:
    rows = table_head("benchmark | metric | value | questions | q/min | note")
    for name, result in results["benchmarks"].items():
        timing = result.get("timing") or {}
        questions = result.get("questions", timing.get("questions", ""))
        rows.append(
            f"| {name} | {result['headline_name']} | {format_headline(result)} | {questions} "
            f"| {timing.get('questions_per_minute', '')} | {result.get('note', '')} |"
        )
    return "\n".join(rows)


def print_results(results: dict[str, Any]) -> None:
    runtime = results.get("runtime", {})
    label = ", ".join(
        f"{k}={v}" for k, v in runtime.items() if k in ("runtime", "lm", "vision", "dtype", "model_id")
    )
    print(f"results for {label or 'run'}")
    print(results_table(results))
