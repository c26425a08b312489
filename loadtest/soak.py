"""Soak: a long steady load at half the peak rate through Envoy; memory and p99 per window.

``python -m loadtest.soak`` measures the peak (unlimited ghz for ``--peak-seconds``), then
runs consecutive ghz windows at half of it for ``--duration`` seconds, sampling the RSS of
the server's process tree and of Envoy after each window, while a random worker is killed
(SIGKILL) every ``--kill-interval`` seconds (30 by default; 0 never). It passes when no
request fails, RSS grows less than 5% from the end of the first (warm-up) window to the
end, and no window's p99 exceeds 1.5 times the median window p99. Each window also shows
the p99 Envoy itself recorded (its request-time histogram read at the window's ends, so a
window's share may be off by one stats flush, 5 s): ghz shares the machine's cores, and
where its p99 jumps and Envoy's does not, the time was ghz's own. A benchmark, not a CI
test: ten minutes by default.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import threading
from pathlib import Path
from typing import Any

import psutil

from loadtest import envoy_stats
from loadtest.chaos.stack import Gateway, Instance, port_block, prepare_repository
from loadtest.ghz import GhzRun, LoadResult, run_ghz
from loadtest.runner import machine_description

__all__ = ["main", "soak"]

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "loadtest" / "data" / "oip.json"
CALL = "inference.GRPCInferenceService.ModelInfer"
RSS_LIMIT = 0.05
P99_SPREAD = 1.5


def _rss_mib(pid: int) -> float:
    total = 0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
    return total / 2**20


def _window(address: str, out: Path, name: str, seconds: float, rps: int | None) -> LoadResult:
    run = GhzRun(address=address, call=CALL, data_file=DATA, concurrency=16, connections=2,
                 duration_s=seconds, rps=rps)  # fmt: skip
    return run_ghz(run, out, name)


def _killer(server: Instance, interval: float, stop: threading.Event, kills: list[int]) -> None:
    """SIGKILL a random worker every ``interval`` seconds until ``stop`` is set."""
    rng = random.Random(0)
    while not stop.wait(interval):
        pids = server.worker_pids()
        if pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills.append(1)


def soak(
    repository: Path, out: Path, duration: float, window: float, workers: int,
    rps: int | None, peak_seconds: float, kill_interval: float = 0.0,
) -> dict[str, Any]:  # fmt: skip
    base = port_block(workers)
    server = Instance(repository, workers, base, out / "logs" / "server.log")
    gateway = Gateway(base, workers, out / "logs" / "envoy.log")
    try:
        server.start()
        gateway.start()
        assert gateway.proc is not None
        peak = None
        seen = envoy_stats.read(gateway.admin)
        if rps is None:
            measured = _window(gateway.address, out, "peak", peak_seconds, None)
            peak = round(measured.rps, 1)
            rps = max(1, int(peak / 2))
            # the first window's Envoy figures start once the peak's answers are all in
            seen = envoy_stats.settled(gateway.admin, seen.count + measured.count)
        windows = []
        stop = threading.Event()
        kills: list[int] = []
        killer = threading.Thread(target=_killer, args=(server, kill_interval, stop, kills))
        if kill_interval:
            killer.start()
        for i in range(max(1, round(duration / window))):
            load = _window(gateway.address, out, f"window-{i:02d}", window, rps)
            now = envoy_stats.read(gateway.admin)
            at_envoy, seen = (now - seen).quantile(0.99), now
            windows.append({
                "window": i + 1, "sent": load.count, "ok": load.ok, "failed": load.count - load.ok,
                "rps": round(load.rps, 1), "p50_ms": round(load.latency_ms.get("p50", 0), 2),
                "p99_ms": round(load.latency_ms.get("p99", 0), 2),
                "envoy_p99_ms": None if at_envoy is None else round(at_envoy, 2),
                "server_rss_mib": round(_rss_mib(server.pid), 1),
                "envoy_rss_mib": round(_rss_mib(gateway.proc.pid), 1),
            })  # fmt: skip
            print(json.dumps(windows[-1]), flush=True)
        stop.set()
        if kill_interval:
            killer.join()
    finally:
        gateway.stop()
        server.stop()
    result = _verdict(windows, peak, rps, duration, window)
    result["kills"] = len(kills)
    return result


def _verdict(
    windows: list[dict[str, Any]], peak: float | None, rps: int, duration: float, window: float
) -> dict[str, Any]:
    first, last = windows[0], windows[-1]
    growth = (last["server_rss_mib"] - first["server_rss_mib"]) / first["server_rss_mib"]
    envoy_growth = (last["envoy_rss_mib"] - first["envoy_rss_mib"]) / first["envoy_rss_mib"]
    p99s = [w["p99_ms"] for w in windows]
    median = round(statistics.median(p99s), 2)
    failed = sum(w["failed"] for w in windows)
    at_envoy = [w["envoy_p99_ms"] for w in windows if w.get("envoy_p99_ms") is not None]
    ok = growth < RSS_LIMIT and max(p99s) <= P99_SPREAD * median and failed == 0
    return {
        "duration_s": duration, "window_s": window, "peak_rps": peak, "rps": rps,
        "server_rss_growth": round(growth, 4), "envoy_rss_growth": round(envoy_growth, 4),
        "p99_median_ms": median, "p99_max_ms": max(p99s), "failed": failed,
        "envoy_p99_median_ms": round(statistics.median(at_envoy), 2) if at_envoy else None,
        "envoy_p99_max_ms": max(at_envoy) if at_envoy else None,
        "verdict": "pass" if ok else "FAIL", "windows": windows,
        "machine": machine_description(),
    }  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"{result['duration_s']:g} s at {result['rps']} RPS (peak {result['peak_rps'] or '-'}); "
        f"server RSS growth {result['server_rss_growth']:.1%}, Envoy "
        f"{result['envoy_rss_growth']:.1%}; p99 median {result['p99_median_ms']} ms, max "
        f"{result['p99_max_ms']} ms (at Envoy: median {result.get('envoy_p99_median_ms')} ms, "
        f"max {result.get('envoy_p99_max_ms')} ms); workers killed {result.get('kills', 0)}; "
        f"failed {result['failed']}: **{result['verdict']}**",
        "",
        "| window | sent | failed | RPS | p50 ms | p99 ms | p99 at Envoy ms | server RSS MiB "
        "| Envoy RSS MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for w in result["windows"]:
        lines.append(
            f"| {w['window']} | {w['sent']} | {w['failed']} | {w['rps']} | {w['p50_ms']} | "
            f"{w['p99_ms']} | {w.get('envoy_p99_ms', '-')} | {w['server_rss_mib']} | "
            f"{w['envoy_rss_mib']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of soak")
    parser.add_argument("--window", type=float, default=60.0, help="seconds per ghz window")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rps", type=int, default=None, help="default: half the measured peak")
    parser.add_argument("--peak-seconds", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=ROOT / "loadtest" / "results" / "soak")
    parser.add_argument("--model-repository", type=Path, default=None)
    parser.add_argument(
        "--kill-interval", type=float, default=30.0,
        help="SIGKILL a random worker every this many seconds during the soak (0: never)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    out = args.out.resolve()
    repository = args.model_repository or prepare_repository(out / "logs" / "train")
    result = soak(repository.resolve(), out, args.duration, args.window, args.workers,
                  args.rps, args.peak_seconds, args.kill_interval)  # fmt: skip
    (out / "soak.json").write_text(json.dumps(result, indent=1))
    text = markdown(result)
    (out / "soak.md").write_text(text + "\n")
    print("\n" + text)
    return 0 if result["verdict"] == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
