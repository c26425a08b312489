"""Server-side latency percentiles over time, from Prometheus, as a PNG for the report.

The curve comes from the same histogram the dashboards read
(``pronto_request_duration_seconds``), so a reader of ``docs/benchmarks.md`` sees what
Grafana would show, without Grafana.
"""

from __future__ import annotations

from pathlib import Path

from loadtest.monitor.prometheus import PrometheusAPI

__all__ = ["QUANTILES", "latency_series", "render_latency_png"]

QUANTILES = (0.5, 0.95, 0.99)


def latency_series(
    api: PrometheusAPI, start: float, end: float, window: str = "5s", step: float = 1.0
) -> dict[str, list[tuple[float, float]]]:
    """``{"p50": [(seconds since start, ms), ...], ...}`` over all methods and models."""
    out: dict[str, list[tuple[float, float]]] = {}
    for q in QUANTILES:
        expr = (
            f"histogram_quantile({q}, sum by (le) "
            f"(rate(pronto_request_duration_seconds_bucket[{window}])))"
        )
        points: list[tuple[float, float]] = []
        for series in api.query_range(expr, start, end, step):
            last = None
            for ts, value in series["values"]:
                t = float(ts) - start
                if last is not None and t - last > 1.5 * step:
                    points.append((t, float("nan")))  # no server then: break the line
                points.append((t, float(value) * 1000.0))  # NaN without traffic, also a break
                last = t
        out[f"p{round(q * 100)}"] = points
    return out


def render_latency_png(
    api: PrometheusAPI,
    start: float,
    end: float,
    path: Path,
    title: str,
    marks: list[tuple[float, str]] | None = None,
) -> Path:
    """Write the p50/p95/p99 curves to ``path``; ``marks`` are labelled vertical lines."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    series = latency_series(api, start, end)
    fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
    for name, points in series.items():
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, label=name, linewidth=1.5)
    for at, label in marks or []:
        ax.axvline(at - start, color="grey", linestyle=":", linewidth=1)
        ax.annotate(
            label,
            (at - start, 1),
            xycoords=("data", "axes fraction"),
            fontsize=8,
            rotation=90,
            va="top",
            ha="right",
            color="grey",
        )
    ax.axhline(25, color="red", linestyle="--", linewidth=1, label="SLO (25 ms)")
    ax.set_yscale("log")
    ax.set_xlabel("seconds")
    ax.set_ylabel("server latency (ms, 5 s window)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
