"""Fault injection under load: ``python -m loadtest.chaos`` (``make chaos``)."""

from loadtest.chaos.crash_overload import kill_grpc, kill_rest, overload_grpc, overload_rest
from loadtest.chaos.faults import ChaosConfig, FaultResult, hot_reload, rolling_restart, slow

__all__ = ["CRASH", "FAULTS", "OVERLOAD", "ChaosConfig", "FaultResult"]

FAULTS = {
    "kill-rest": kill_rest,
    "kill": kill_grpc,
    "overload-rest": overload_rest,
    "overload-grpc": overload_grpc,
    "rolling": rolling_restart,
    "reload": hot_reload,
    "slow": slow,
}
#: the faults whose tables docs/reliability.md carries, by section
CRASH = ("kill-rest", "kill")
OVERLOAD = ("overload-rest", "overload-grpc")
