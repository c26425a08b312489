"""Fault injection under load: ``python -m loadtest.chaos`` (``make chaos``)."""

from loadtest.chaos.faults import (
    ChaosConfig,
    FaultResult,
    hot_reload,
    kill_workers,
    rolling_restart,
    slow,
)

__all__ = ["FAULTS", "ChaosConfig", "FaultResult"]

FAULTS = {
    "kill": kill_workers,
    "rolling": rolling_restart,
    "reload": hot_reload,
    "slow": slow,
}
