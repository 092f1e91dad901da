"""EMR link benchmark: how long after a study becomes stable its ImagingStudy is in the EMR's FHIR server.

A real FHIR R4 server (the Medplum test peer) holds one Patient and one
ServiceRequest per study; the gateway (product defaults but for
``fhir.stable_seconds``) receives each study with DCMTK ``storescu``, one study
at a time. For each study:

- *external lag*: from the moment the study is stable as seen from outside
  (every instance indexed, i.e. spool empty, plus ``stable_seconds``) until a
  search finds its ImagingStudy with every instance (polled every 20 ms); an
  upper bound, since the study turned stable a little before the spool emptied;
- *gateway lag*: the gateway's own ``pacsgw_emr_publication_lag_seconds``
  (from the study's last change plus ``stable_seconds`` to the EMR accepting
  the ImagingStudy), its mean over the run.

Target (product issue): under 2 s. Run from the repository root:
``.venv/bin/python bench/emr_fhir.py [--studies 5] [--instances 20] [--stable-seconds 5] [--no-record]``;
a line goes to the "EMR link" section of ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as ``python bench/emr_fhir.py``: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine  # noqa: E402
from tests.conftest import storescu  # noqa: E402
from tests.factory import Patient, ct_series, write_files  # noqa: E402
from tests.gateway_process import GatewayProcess  # noqa: E402
from tests.peers.fhir import run_fhir_server  # noqa: E402
from tests.peers.test_fhir_peer import call, search  # noqa: E402

TARGET_SECONDS = 2.0
MRN_SYSTEM = "urn:oid:1.2.826.0.1.3680043.10.1.1"
ACCESSION_SYSTEM = "urn:oid:1.2.826.0.1.3680043.10.1.2"
README = Path(__file__).resolve().parent / "README.md"
SECTION = "## EMR link"
SUBSECTION = "### FHIR publication lag: `bench/emr_fhir.py`"


def _create(base: str, resource: dict[str, Any]) -> str:
    reply = call("POST", f"{base}/{resource['resourceType']}", resource)
    if reply.status != 201:
        raise RuntimeError(f"FHIR server refused a {resource['resourceType']}: {reply.status}")
    return f"{resource['resourceType']}/{reply.body['id']}"


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def measure_publication_lag(
    studies: int = 5, instances: int = 20, stable_seconds: float = 5.0, workdir: Path | None = None
) -> dict[str, Any]:
    """Publication lag of ``studies`` studies of ``instances`` CT slices each; seconds, per study and summarised."""
    with tempfile.TemporaryDirectory(prefix="bench-emr-", dir=workdir) as tmp_name:
        tmp = Path(tmp_name)
        with run_fhir_server(tmp / "fhir") as base:
            gateway = GatewayProcess(tmp / "gw", {
                "PACSGW_FHIR_BASE_URL": base, "PACSGW_FHIR_STABLE_SECONDS": str(stable_seconds),
                "PACSGW_FHIR_PATIENT_IDENTIFIER_SYSTEMS": f"*={MRN_SYSTEM}", "PACSGW_FHIR_ACCESSION_SYSTEM": ACCESSION_SYSTEM,
                "PACSGW_FHIR_PUBLIC_WADO_URL": "http://pacs.bench.local/dicom-web",
            }, product_defaults=True)  # fmt: skip
            gateway.start()
            lags = []
            try:
                for n in range(studies):
                    mrn, accession = f"MRN-BENCH-{n}", f"ACC-BENCH-{n}"
                    subject = _create(base, {"resourceType": "Patient", "identifier": [{"system": MRN_SYSTEM, "value": mrn}]})
                    _create(base, {
                        "resourceType": "ServiceRequest", "status": "active", "intent": "order", "subject": {"reference": subject},
                        "identifier": [{"system": ACCESSION_SYSTEM, "value": accession}],
                    })  # fmt: skip
                    series = ct_series(instances, size=256, patient=Patient(patient_id=mrn), accession=accession, seed=n)
                    result = storescu(gateway.dicom_port, write_files(series, tmp / f"study{n}"))
                    if result.returncode != 0:
                        raise RuntimeError(f"storescu failed: {result.stderr}")
                    gateway.wait_idle()
                    stable_at = time.monotonic() + stable_seconds
                    query = {"identifier": f"urn:dicom:uid|urn:oid:{series[0].StudyInstanceUID}"}
                    deadline = stable_at + 60
                    while time.monotonic() < deadline:
                        found = search(base, "ImagingStudy", **query)
                        if found and found[0].get("numberOfInstances") == instances:
                            break
                        time.sleep(0.02)
                    else:
                        raise RuntimeError(f"study {n} not published within 60 s of becoming stable")
                    lags.append(max(time.monotonic() - stable_at, 0.0))
                metrics = gateway.get("/metrics")[1]
            finally:
                gateway.stop()
    count = _metric(metrics, "pacsgw_emr_publication_lag_seconds_count")
    internal = _metric(metrics, "pacsgw_emr_publication_lag_seconds_sum") / count if count else None
    return {
        "studies": studies, "instances": instances, "stable_seconds": stable_seconds, "lags": lags,
        "median": statistics.median(lags), "max": max(lags), "gateway_mean": internal,
        "target": TARGET_SECONDS, "met": max(lags) < TARGET_SECONDS,
    }  # fmt: skip


def summary_line(result: dict[str, Any]) -> str:
    m = machine()
    internal = f"{result['gateway_mean']:.2f} s" if result["gateway_mean"] is not None else "n/a"
    return (
        f"- {dt.date.today().isoformat()}, {m['nproc']} vCPU {m['cpu_model']}: ImagingStudy publication lag after a study "
        f"becomes stable ({result['studies']} studies of {result['instances']} CT instances, stable_seconds "
        f"{result['stable_seconds']:g}): median {result['median']:.2f} s, max {result['max']:.2f} s from outside; "
        f"gateway's own mean {internal}. Target under {result['target']:g} s: {'met' if result['met'] else 'missed'}."
    )


def record(line: str, readme: Path = README) -> None:
    """Add the line at the end of this benchmark's part of the README's "EMR link" section (made when missing)."""
    text = readme.read_text(encoding="utf-8")
    if SUBSECTION not in text:
        intro = f"{SUBSECTION}\n\nStudies sent one at a time; the lag from stable to ImagingStudy found. Target: under 2 s.\n\n"
        if SECTION not in text:
            text = text.rstrip("\n") + f"\n\n{SECTION}\n\n{intro}"
        else:
            cut = text.index(SECTION) + len(SECTION)
            text = text[:cut] + "\n\n" + intro + text[cut:].lstrip("\n")
    start = text.index(SUBSECTION)
    ends = [i for i in (text.find("\n## ", start), text.find("\n### ", start + len(SUBSECTION))) if i >= 0]
    end = min(ends) if ends else len(text)
    body = text[start:end].rstrip("\n")
    part = body + ("\n" if body.splitlines()[-1].startswith("- ") else "\n\n") + line + "\n"
    text = text[:start] + part + ("\n" + text[end:].lstrip("\n") if ends else "")
    readme.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/emr_fhir.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=5)
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--stable-seconds", type=float, default=5.0)
    parser.add_argument("--no-record", action="store_true", help="print only; leave bench/README.md alone")
    args = parser.parse_args(argv)
    result = measure_publication_lag(args.studies, args.instances, args.stable_seconds)
    print("lags (s):", ", ".join(f"{lag:.2f}" for lag in result["lags"]))
    line = summary_line(result)
    print(line)
    if not args.no_record:
        record(line)
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
