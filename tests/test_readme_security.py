"""The commands of the README's Security section, run as a user types them."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

from tests.conftest import storescu
from tests.factory import ct_series, write_files

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _sh_block_after(marker: str) -> list[str]:
    start = README.index(marker, README.index("## Security"))
    block = README.index("```sh\n", start) + len("```sh\n")
    return README[block : README.index("```", block)].splitlines()


def test_the_sqlite_index_is_backed_up_while_the_gateway_runs(start_gateway, tmp_path: Path) -> None:
    gateway = start_gateway({})
    series = ct_series(4, size=32)
    assert storescu(gateway.dicom_port, write_files(series, tmp_path / "ct")).returncode == 0
    gateway.wait_idle()
    (backup := tmp_path / "backup").mkdir()
    [command] = _sh_block_after("**Backups.**")
    typed = command.replace("/var/lib/pacs-gateway", str(gateway.data_dir)).replace("/backup/", f"{backup}/")
    done = subprocess.run(typed, shell=True, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(backup / "index.sqlite") as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.execute("SELECT count(*) FROM instances").fetchone() == (4,)
    assert gateway.get("/health")[0] == 200  # the gateway went on meanwhile
