"""OpenVINO's usage reports, off in depthcli's processes.

Why: OpenVINO's model conversion (and NNCF's quantisation) report usage to Google Analytics
through `openvino_telemetry` unless the user opted out with its `opt_in_out` tool; depthcli sends
nothing anywhere and does not want to do so on the user's behalf. Each report also forks a
process that waits up to 3 s for the network: converting the tiny test model took 9.4-15.0 s
wall and 9.7-10.7 s of CPU with them, 2.8 s and 2.9 s without (2-core EPYC, no route out).
"""

from __future__ import annotations

from typing import Any

_done = False


def _no_report(self: Any, message: Any) -> None:
    """What a report does here: nothing."""


def usage_reports_off() -> None:
    """Make every OpenVINO usage report of this process a no-op (idempotent; nothing to do
    where `openvino_telemetry` is not installed)."""
    global _done
    if _done:
        return
    try:
        from openvino_telemetry.backend import backend_ga4
    except ImportError:
        _done = True
        return
    # The one place every report goes through (conversion, NNCF, any tool in the process).
    backend_ga4.GA4Backend.send = _no_report
    _done = True
