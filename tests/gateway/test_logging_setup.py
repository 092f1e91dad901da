"""What reaches the gateway's log from the libraries it uses."""

from __future__ import annotations

import subprocess
import sys

# pydicom warns "Invalid value for VR UI: '<the value>'" when a received value breaks its VR's rules.
_WARNS_WITH_A_VALUE = """
from gateway.logging_setup import configure_logging
configure_logging("INFO")
from pydicom.dataset import Dataset
ds = Dataset()
ds.StudyInstanceUID = "1.2.NGUYEN.VAN.AN"
"""


def test_library_warnings_reach_the_log_without_the_values_they_quote() -> None:
    result = subprocess.run([sys.executable, "-c", _WARNS_WITH_A_VALUE], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "NGUYEN" not in result.stderr
    assert "WARNING py.warnings: UserWarning at pydicom/" in result.stderr and "text withheld" in result.stderr
