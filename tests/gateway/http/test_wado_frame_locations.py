"""Frames served from instance locations kept in memory: a replaced or added instance is never served stale."""

from __future__ import annotations

import copy

import numpy as np
from dicomweb_client.api import DICOMwebClient

from tests.conftest import storescu
from tests.factory import ct_series, write_files


def test_a_replaced_instance_is_served_as_replaced_and_an_added_one_at_once(tmp_path) -> None:
    from tests.gateway_process import GatewayProcess

    gateway = GatewayProcess(tmp_path / "gw", {"PACSGW_INGEST_ON_DUPLICATE": "replace"})
    gateway.start()
    try:
        series = ct_series(3, size=64)
        first, second, later = series
        assert storescu(gateway.dicom_port, write_files([first, second], tmp_path / "v1")).returncode == 0
        gateway.wait_idle()
        client = DICOMwebClient(url=f"{gateway.base_url}/dicom-web", headers=gateway.auth_headers)

        def frame(ds) -> bytes:
            [body] = client.retrieve_instance_frames(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, frame_numbers=[1])
            return body

        assert frame(first) == first.PixelData and frame(second) == second.PixelData  # the series now kept in memory

        replacement = copy.deepcopy(first)  # the same UIDs, another size: another pixel offset and frame length
        replacement.Rows = replacement.Columns = 32
        replacement.ImageComments = "re-sent after a correction " * 8
        replacement.PixelData = np.full((32, 32), 1234, dtype=np.uint16).tobytes()
        assert storescu(gateway.dicom_port, write_files([replacement, later], tmp_path / "v2")).returncode == 0
        gateway.wait_idle()
        assert frame(first) == replacement.PixelData
        assert frame(later) == later.PixelData and frame(second) == second.PixelData
    finally:
        gateway.kill()
