"""Journey: an administrator bulk-imports an old archive folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pydicom
from pydicom.filewriter import dcmwrite

from tests.factory import ct_series, truncated, write_files


def test_import_folder_reports_imported_duplicates_and_rejections(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    series = ct_series(12, size=32)
    write_files(series, archive / "study1")
    write_files(series[:3], archive / "copy")  # the same instances again
    (archive / "junk").mkdir()
    (archive / "junk" / "notes.txt").write_text("not dicom")
    (archive / "junk" / "cut.dcm").write_bytes(truncated(ct_series(1, size=32)[0]))
    legacy = ct_series(1, size=32)[0]  # an old file written without File Meta Information
    del legacy.file_meta
    with open(archive / "legacy.dcm", "wb") as fh:
        dcmwrite(fh, legacy, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert (archive / "legacy.dcm").read_bytes()[128:132] != b"DICM"
    bundled = Path(os.path.dirname(pydicom.__file__)) / "data" / "test_files" / "CT_small.dcm"
    data_dir = tmp_path / "data"

    result = subprocess.run(
        [sys.executable, "-m", "gateway", "import", "--data-dir", str(data_dir), "--no-progress", str(archive), str(bundled)],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("PACSGW_")},
    )
    assert result.returncode == 2, result.stderr  # some files were rejected
    lines = result.stdout.splitlines()
    assert "imported:   14" in lines  # 12 + legacy + CT_small
    assert "duplicates: 3" in lines
    assert "rejected:   2" in lines
    assert any("truncated dataset" in line for line in lines)
    assert any("not a DICOM file" in line for line in lines)

    again = subprocess.run(
        [sys.executable, "-m", "gateway", "import", "--data-dir", str(data_dir), "--no-progress", str(archive / "study1")],
        capture_output=True, text=True, timeout=120,
    )
    assert again.returncode == 0 and "duplicates: 12" in again.stdout
    objects = [p for p in (data_dir / "objects" / "studies").rglob("*.dcm")]
    assert len(objects) == 14
