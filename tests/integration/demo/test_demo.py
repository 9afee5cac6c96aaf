"""`make demo`'s job (scripts/demo.sh) end to end: the README's first command must keep working.

Real parts throughout (UKI from Debian parts, OVMF + swtpm boot of the disk, a moto server over HTTP for AWS);
the artifacts go to a temporary directory instead of artifacts/demo.
"""
import json
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@pytest.mark.slow
def test_demo_runs_the_pipeline_and_records_it(tmp_path):
    proc = subprocess.run([os.path.join(ROOT, "scripts", "demo.sh"), "-e", "demo_dir=%s" % tmp_path],
                          cwd=ROOT, capture_output=True, text=True, check=False, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    predicted = json.loads((tmp_path / "pcr_measurements.json").read_text())["Measurements"]
    # The manifest carries the prediction that the measured boot proved, the AMIs and the key that trusts them.
    assert {k: manifest["measurements"][k] for k in predicted} == predicted
    assert predicted["PCR12"] == "0" * 96
    assert sorted(manifest["amis"]) == ["eu-west-1", "us-east-1"]
    assert manifest["snapshot"]["snapshot_id"].startswith("snap-")
    assert [entry["image"] for entry in manifest["kms"]] == [manifest["amis"]["us-east-1"]]
    assert (tmp_path / "description" / "appliance.kiwi").is_file()
    assert "may decrypt" in proc.stdout
