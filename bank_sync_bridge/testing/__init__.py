"""Local stand-ins for the aggregators: real HTTP servers on 127.0.0.1 and their helpers.

The same emulators serve the package's tests, the addon's tests, the demo and the benchmarks.
Both are built on one small framework (:mod:`._server`) and are steered with the same scenario
controls (clock, faults, rate limits, token and consent expiry, operations that change); what
each vendor's API looks like is in ``docs/aggregators.md``.
"""

from .bridge_emulator import BridgeEmulator
from .clock import AdjustableClock
from .linxo_emulator import LinxoEmulator

__all__ = [
    "AdjustableClock",
    "BridgeEmulator",
    "LinxoEmulator",
]
