# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One of the three user-style descriptions, tests/descriptions/enclave (a minimal enclave node: sshd and getty
masked, its edit-boot hook signs the UKI with sbsign before it is measured), built for real as a bring-your-own
folder through attestable.ami.build_and_publish with the local profile (this machine is the builder, a moto server
over HTTP is AWS, KIWI NG builds, OVMF + swtpm boot the disk to userspace).

What the user would change to build it here, and only that: the repository URL (this machine reaches Debian through
its own mirror, plain http with apt's signature checks), the erofs compression (the folder asks for lzma, which
Debian 12's mkfs.erofs 1.5 cannot do: the role's default lz4hc instead) and the Secure Boot signing key, which the hook reads from
ENCLAVE_SB_KEY/ENCLAVE_SB_CERT on the builder (a throw-away key made here, passed as image_build_environment).
The UKI the firmware boots is read from the disk's ESP with mtools and measured again with pcr_compute: it must be
the signed one, and its PCRs the ones the manifest, the measured boot and the AMI tags carry.
"""
import hashlib
import json
import os
import socket
import subprocess
import time

import boto3
import pytest

import playbook_runner
from byo_testlib import LOCAL_PROFILE, copy_folder, failures, run_pipeline, tree_state

HERE = os.path.dirname(os.path.abspath(__file__))
ENCLAVE = os.path.join(HERE, "..", "..", "descriptions", "enclave", "description")


def _sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _esp_file(disk, name, dest):
    table = json.loads(subprocess.run(["sfdisk", "--json", disk], capture_output=True, text=True, check=True).stdout)
    sector = table["partitiontable"].get("sectorsize", 512)
    [start] = [p["start"] for p in table["partitiontable"]["partitions"]
               if p["type"].upper() == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"]
    subprocess.run(["mcopy", "-n", "-i", "%s@@%d" % (disk, start * sector), "::/EFI/BOOT/" + name, dest],
                   check=True, capture_output=True, env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
    return dest


@pytest.fixture(scope="module")
def enclave_build(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("kiwi-ng system build needs root")
    pytest.importorskip("kiwi")
    import debian_uefi_build

    if not debian_uefi_build.vfat_available():
        pytest.skip("no vfat driver and no /sbin/mount.vfat: run scripts/bootstrap.sh")
    for tool in ("sbsign", "sbverify", "openssl", "mcopy", "sfdisk"):
        if subprocess.run(["sh", "-c", "command -v " + tool], capture_output=True, check=False).returncode:
            pytest.skip("%s is not installed (scripts/bootstrap.sh installs it)" % tool)
    from kiwi_testlib import debian_mirror
    from moto.server import ThreadedMotoServer

    workdir = tmp_path_factory.mktemp("byo-enclave")
    folder = copy_folder(ENCLAVE, str(workdir / "enclave"))
    kiwi_file = os.path.join(folder, "appliance.kiwi")
    with open(kiwi_file) as handle:
        text = handle.read()
    assert '<source path="https://deb.debian.org/debian">' in text
    assert 'erofscompression="lzma,level=9"' in text
    with open(kiwi_file, "w") as handle:
        handle.write(text.replace('<source path="https://deb.debian.org/debian">', '<source path="%s">' % debian_mirror())
                     .replace('erofscompression="lzma,level=9"', 'erofscompression="lz4hc,level=12"'))
    keys = workdir / "keys"
    keys.mkdir()
    subprocess.run(["openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                    "/CN=enclave test db key/", "-keyout", str(keys / "db.key"), "-out", str(keys / "db.crt")],
                   check=True, capture_output=True)
    before = tree_state(folder)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = "http://127.0.0.1:%d" % port
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    artifacts = workdir / "artifacts"
    try:
        started = time.time()
        for attempt in range(2):
            extra = {"attestable_description_src": folder, "attestable_artifacts_dir": str(artifacts),
                     "image_build_poll_interval": 10,
                     "image_build_environment": {"ENCLAVE_SB_KEY": str(keys / "db.key"),
                                                 "ENCLAVE_SB_CERT": str(keys / "db.crt")}}
            proc, results = run_pipeline(workdir, extra, env=env, profile=LOCAL_PROFILE)
            # Another build on this machine may hold KIWI's shared apt cache lock: wait for it once.
            if proc.returncode != 0 and "Could not get lock" in json.dumps(failures(results)) and attempt == 0:
                time.sleep(60)
                continue
            break
        seconds = time.time() - started
        assert proc.returncode == 0, json.dumps(failures(results), indent=1)[-6000:] + proc.stderr[-2000:]
        ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                           aws_secret_access_key="testing")
        images = ec2.describe_images(Owners=["self"])["Images"]
    finally:
        server.stop()
    return {"folder": folder, "before": before, "results": results, "artifacts": artifacts, "images": images,
            "seconds": seconds, "workdir": workdir, "cert": str(keys / "db.crt")}


@pytest.mark.slow
def test_the_enclave_boots_its_signed_uki_and_its_measurements_are_the_published_ones(enclave_build):
    results, artifacts, workdir = enclave_build["results"], enclave_build["artifacts"], enclave_build["workdir"]
    built = results["Check on the KIWI build"][-1]
    assert built["finished"] and built["changed"]
    checked = results["Validate the description on the controller before a builder is used"][-1]
    assert checked["attestable"] is True

    manifest = json.loads((artifacts / "manifest.json").read_text())
    image, measurements = manifest["image"], manifest["measurements"]
    # The UKI the ESP boots (read with mtools, not the collection's FAT reader) carries the user's signature,
    # and it is the one the pipeline measured and recorded.
    uki = _esp_file(built["disk"], "BOOTX64.EFI", str(workdir / "esp-bootx64.efi"))
    signed = subprocess.run(["sbverify", "--cert", enclave_build["cert"], uki], capture_output=True, text=True,
                            check=False)
    assert signed.returncode == 0, signed.stdout + signed.stderr
    assert _sha256(uki) == image["uki_sha256"]

    proc, computed, _data = playbook_runner.run("""
    - hosts: localhost
      gather_facts: false
      tasks:
        - name: compute
          attestable.ami.pcr_compute:
            images: ["{{ uki }}"]
            engine: python
    """, workdir, extra_vars={"uki": uki})
    assert proc.returncode == 0, proc.stdout[-3000:]
    pcrs = computed["compute"][-1]["measurements"]
    assert {"PCR4", "PCR7", "PCR12"} <= set(pcrs)
    assert {k: measurements[k] for k in pcrs} == pcrs
    assert "measured-boot" in measurements["engines"]
    # moto's state is per process: AMIs of other tests' moto servers in this pytest run are listed too.
    [ami] = [i for i in enclave_build["images"] if i["ImageId"] == manifest["amis"]["us-east-1"]]
    tags = {t["Key"]: t["Value"] for t in ami.get("Tags", [])}
    for pcr in ("PCR4", "PCR7", "PCR12"):
        assert tags["attestable:%s" % pcr] == pcrs[pcr], tags


@pytest.mark.slow
def test_the_enclave_image_has_ssh_masked_and_the_folder_is_unchanged(enclave_build):
    assert tree_state(enclave_build["folder"]) == enclave_build["before"]
    built = enclave_build["results"]["Check on the KIWI build"][-1]
    image_root = os.path.join(os.path.dirname(built["disk"]), "build", "image-root")
    for unit in ("ssh.service", "sshd.service", "getty.target"):
        assert os.readlink(os.path.join(image_root, "etc", "systemd", "system", unit)) == "/dev/null", unit
    print("enclave build through build_and_publish: %.0f s" % enclave_build["seconds"])
