# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`make demo`'s job (scripts/demo.sh) end to end: the README's first command must keep working.

Real parts throughout: KIWI NG builds the Debian flavour of the attestable description into a UEFI disk on this
machine (the builder), OVMF + swtpm boot it to userspace, veritysetup checks its root, and a moto server over HTTP
is AWS. The artifacts go to a temporary directory instead of artifacts/. The second run, against the same
endpoint, must build and publish nothing and report no change.
"""
import hashlib
import json
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DEMO = os.path.join(ROOT, "scripts", "demo.sh")


def _demo(endpoint, artifacts, *args, json_output=False):
    env = dict(os.environ, AWS_ENDPOINT_URL=endpoint)
    if json_output:
        env.update(ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_CALLBACK_RESULT_FORMAT="json", ANSIBLE_SHOW_CUSTOM_STATS="true")
    return subprocess.run([DEMO, "-e", "attestable_artifacts_dir=%s" % artifacts] + list(args), cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False, timeout=3600)


def _json_documents(text):
    """The json callback prints one document per playbook; demo.sh runs four."""
    decoder, position, documents = json.JSONDecoder(), 0, []
    while text.find("{", position) >= 0:
        document, position = decoder.raw_decode(text, text.index("{", position))
        documents.append(document)
    return documents


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _summary(stdout):
    """The lines of the run's last task, the summary (the default callback prints its msg as a JSON list)."""
    task = stdout[stdout.rindex("TASK [Summary]"):]
    body = task[task.index("{"):task.index("PLAY RECAP")]
    return "\n".join(json.loads(body)["msg"]) + "\n"


@pytest.mark.slow
def test_demo_builds_boots_publishes_and_authorizes(moto_server, tmp_path):
    artifacts = tmp_path / "artifacts"
    proc = _demo(moto_server, artifacts)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]

    manifest = json.loads((artifacts / "manifest.json").read_text())
    image, measurements = manifest["image"], manifest["measurements"]
    # A KIWI UEFI disk of the Debian flavour, its UKI fetched and hashed, its root hash from the UKI's initrd.
    assert image["disk"].startswith(str(artifacts / "build" / "image")) and image["disk"].endswith(".raw")
    assert image["disk_sha256"] == _sha256(image["disk"])
    assert image["uki_sha256"] == _sha256(artifacts / "uki.efi")
    assert re.match(r"^[0-9a-f]{64}$", image["root_hash"])
    assert image["tool_versions"]["kiwi"] == image["kiwi_version"]
    assert any(p["name"].startswith("linux-image") for p in image["packages"])
    # Prediction = what the firmware measured (the measured boot is one of the agreeing engines), standard boot.
    predicted = json.loads((artifacts / "pcr_measurements.json").read_text())["Measurements"]
    assert {k: measurements[k] for k in predicted} == predicted
    assert predicted["PCR12"] == "0" * 96
    assert measurements["engines"][0] == "python" and "measured-boot" in measurements["engines"]
    assert measurements["boot_mode"] == "standard"
    # Published and authorized against the moto server.
    assert sorted(manifest["amis"]) == ["eu-west-1", "us-east-1"]
    assert manifest["snapshot"]["snapshot_id"].startswith("snap-")
    assert manifest["snapshot"]["image_sha256"] == image["disk_sha256"]
    assert [entry["image"] for entry in manifest["kms"]] == [manifest["amis"]["us-east-1"]]
    assert (artifacts / "kiwi-build.log").stat().st_size > 0

    # One summary, at the end, with what the README promises.
    summary = _summary(proc.stdout)
    for pcr in ("PCR4", "PCR7", "PCR12"):
        assert re.search(r"%s: +predicted %s\n +measured  %s\n" % (pcr, predicted[pcr], predicted[pcr]), summary), summary
    assert "UKI sha256:        %s" % image["uki_sha256"] in summary
    assert "root hash:         %s (verified against the UKI's veritytab: yes)" % image["root_hash"] in summary
    assert re.search(r"userspace reached: yes \(\d+(\.\d+)? s\)", summary), summary
    assert "tamper (a) flipped erofs byte: boot_failed=verity (refused)" in summary
    assert "tamper (b) injected PCR12: denied by the key policy" in summary
    assert "us-east-1: %s" % manifest["amis"]["us-east-1"] in summary and "eu-west-1: " in summary
    assert "statement %s" % manifest["kms"][0]["statement_id"] in summary
    assert ("simulator:         allowed instance booted from the image (the PCRs the firmware measured)\n"
            "                   denied  the same image with an injected kernel command line (non-zero PCR12)\n"
            "                   denied  the instance role without an attestation document\n"
            "                   denied  the key administrators\n") in summary

    # Again, against the same endpoint: nothing is built, published or authorized again, nothing changes.
    again = _demo(moto_server, artifacts, "-e", "demo_tamper_boot=false", json_output=True)
    assert again.returncode == 0, again.stdout[-6000:] + again.stderr[-2000:]
    changed = [task["task"]["name"] for data in _json_documents(again.stdout) for play in data["plays"]
               for task in play["tasks"] if any(result.get("changed") for result in task["hosts"].values())]
    assert changed == []
    assert json.loads((artifacts / "manifest.json").read_text()) == manifest
    # What an AWX workflow passes to the next job (set_stats): build_and_publish's, then authorize's manifest.
    stats = [data["global_custom_stats"] for data in _json_documents(again.stdout) if data.get("global_custom_stats")]
    built = [s for s in stats if "attestable_amis" in s][0]
    assert built["attestable_amis"] == manifest["amis"] and built["attestable_snapshot"] == manifest["snapshot"]
    assert built["attestable_measurements"]["boot_mode"] == "standard"
    assert built["attestable_manifest"]["image"]["uki_sha256"] == manifest["image"]["uki_sha256"]
    assert [s for s in stats if "attestable_kms" in s][0]["attestable_manifest"] == manifest
