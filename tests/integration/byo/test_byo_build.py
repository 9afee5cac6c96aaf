# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A bring-your-own description built for real through attestable.ami.build_and_publish with the local profile
(playbooks/vars/local.yml, `make demo`'s path): this machine is the builder (existing mode), a moto server over
HTTP is AWS, KIWI NG builds the disk, OVMF + swtpm boot it, veritysetup checks its root.

The user's folder: a Debian UEFI description started from the image_description role's Debian rendering (as a
user starts from AWS's sample), with its edit-boot hook replaced by one modelled on AWS's sample hook, which only
moves the UKI inside the ESP: no copy beside the disk, no veritytab, no measurements. So kiwi_build must read the
UKI from the built disk's ESP (uki_source=esp). The folder also holds a user file in root/, which KIWI copies and
nothing may remove. One build for the module (minutes on 2 cores); every test reads its results.
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

RENDER = """
- name: Render the Debian flavour, the start of the user's own description
  hosts: localhost
  gather_facts: false
  roles:
    - role: attestable.ami.image_description
"""

# Modelled on edit_boot_install.sh of AWS's al2023/attestable-image-example: the firmware boots the UKI directly.
AWS_STYLE_HOOK = r"""#!/bin/bash
# My edit-boot hook: boot the UKI directly from the removable-media path. It leaves nothing beside the disk.
set -euo pipefail
disk=$1
boot_device=$2
base=${boot_device%p[0-9]*}
esp=
for part in "$base"p[0-9]*; do
    if [ "$(blkid -o value -s TYPE "$part" 2>/dev/null || true)" = vfat ]; then
        esp=$part
        break
    fi
done
if [ -z "$esp" ]; then
    echo "edit_boot_install.sh: no EFI system partition beside $boot_device ($disk)" >&2
    exit 1
fi
mnt=$(mktemp -d "$PWD/tmp/esp.XXXXXX")
mount "$esp" "$mnt"
shopt -s nullglob
set -- "$mnt"/EFI/Linux/*.efi
[ "$#" -eq 1 ] || { echo "edit_boot_install.sh: expected one UKI, found $#" >&2; umount "$mnt"; exit 1; }
mkdir -p "$mnt/EFI/BOOT"
mv "$1" "$mnt/EFI/BOOT/BOOTX64.EFI"
rm -rf "$mnt/EFI/Linux" "$mnt/EFI/systemd" "$mnt/loader"
sync "$mnt"
umount "$mnt"
rmdir "$mnt"
"""


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _esp_boot_loader_with_mtools(disk, dest):
    """EFI/BOOT/BOOTX64.EFI read from the disk's ESP with sfdisk and mtools: independent of the collection's reader."""
    table = json.loads(subprocess.run(["sfdisk", "--json", disk], capture_output=True, text=True, check=True).stdout)
    esp_type = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    sector = table["partitiontable"].get("sectorsize", 512)
    starts = [p["start"] for p in table["partitiontable"]["partitions"] if p["type"].upper() == esp_type]
    assert len(starts) == 1, table
    subprocess.run(["mcopy", "-n", "-i", "%s@@%d" % (disk, starts[0] * sector), "::/EFI/BOOT/BOOTX64.EFI", dest],
                   check=True, capture_output=True, env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
    listing = subprocess.run(["mdir", "-/", "-b", "-i", "%s@@%d" % (disk, starts[0] * sector), "::/EFI"],
                             check=True, capture_output=True, text=True,
                             env=dict(os.environ, MTOOLS_SKIP_CHECK="1")).stdout
    return dest, listing


@pytest.fixture(scope="module")
def byo_build(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("kiwi-ng system build needs root")
    pytest.importorskip("kiwi")
    import debian_uefi_build

    if not debian_uefi_build.vfat_available():
        pytest.skip("no vfat driver and no /sbin/mount.vfat: run scripts/bootstrap.sh")
    from kiwi_testlib import debian_mirror
    from moto.server import ThreadedMotoServer

    workdir = tmp_path_factory.mktemp("byo-build")
    rendered = str(workdir / "rendered")
    proc, _results, _data = playbook_runner.run(RENDER, workdir, extra_vars={
        "image_description_distribution": "debian", "image_description_name": "my-debian-appliance",
        "image_description_dest": rendered, "image_description_debian_mirror": debian_mirror()})
    assert proc.returncode == 0, proc.stdout[-4000:]
    user_folder = copy_folder(rendered, str(workdir / "my-description"))
    with open(os.path.join(user_folder, "edit_boot_install.sh"), "w") as handle:
        handle.write(AWS_STYLE_HOOK)
    os.makedirs(os.path.join(user_folder, "root", "etc", "my-appliance"))
    with open(os.path.join(user_folder, "root", "etc", "my-appliance", "settings.conf"), "w") as handle:
        handle.write("role=appliance\n")
    before = tree_state(user_folder)

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
            proc, results = run_pipeline(workdir, {"attestable_description_src": user_folder,
                                                   "attestable_artifacts_dir": str(artifacts),
                                                   "image_build_poll_interval": 10},
                                         env=env, profile=LOCAL_PROFILE)
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
    return {"user_folder": user_folder, "before": before, "results": results, "artifacts": artifacts,
            "images": images, "seconds": seconds, "workdir": workdir}


@pytest.mark.slow
def test_the_uki_comes_from_the_esp_and_its_measurements_are_the_published_ones(byo_build):
    results, artifacts = byo_build["results"], byo_build["artifacts"]
    built = results["Check on the KIWI build"][-1]
    assert built["finished"] and built["changed"]
    # The hook left nothing beside the disk: kiwi_build read the ESP's removable-media boot loader.
    assert built["uki_source"] == "esp"
    disk = built["disk"]
    assert built["uki"] == os.path.splitext(disk)[0] + ".efi"
    assert not os.path.exists(os.path.splitext(disk)[0] + ".veritytab")
    assert built["veritytab"]["source"] == "log"

    manifest = json.loads((artifacts / "manifest.json").read_text())
    image, measurements = manifest["image"], manifest["measurements"]
    assert image["uki_source"] == "esp"
    # The UKI the ESP boots, read here with mtools (not the collection's FAT reader), is the one measured.
    independent, listing = _esp_boot_loader_with_mtools(disk, str(byo_build["workdir"] / "esp-bootx64.efi"))
    assert "/EFI/Linux" not in listing, listing  # the user's hook moved it
    assert _sha256(independent) == image["uki_sha256"] == _sha256(str(artifacts / "uki.efi"))

    # pcr_compute of that UKI = the manifest's measurements = the firmware's (measured boot) = the AMI tags.
    proc, computed, _data = playbook_runner.run("""
    - hosts: localhost
      gather_facts: false
      tasks:
        - name: compute
          attestable.ami.pcr_compute:
            images: ["{{ uki }}"]
            engine: python
    """, byo_build["workdir"], extra_vars={"uki": independent})
    assert proc.returncode == 0, proc.stdout[-3000:]
    pcrs = computed["compute"][-1]["measurements"]
    assert {"PCR4", "PCR7", "PCR12"} <= set(pcrs)
    assert {k: measurements[k] for k in pcrs} == pcrs
    assert "measured-boot" in measurements["engines"]
    assert [i["ImageId"] for i in byo_build["images"]] == [manifest["amis"]["us-east-1"]]
    tags = {t["Key"]: t["Value"] for t in byo_build["images"][0].get("Tags", [])}
    for pcr in ("PCR4", "PCR7", "PCR12"):
        assert tags["attestable:%s" % pcr] == pcrs[pcr], tags


@pytest.mark.slow
def test_the_users_folder_is_unchanged_and_its_overlay_is_in_the_image(byo_build):
    assert tree_state(byo_build["user_folder"]) == byo_build["before"]
    results = byo_build["results"]
    # Nothing rendered: the role that renders never ran, and the pipeline built the user's folder.
    assert "Render appliance.kiwi" not in results
    checked = results["Validate the description on the controller before a builder is used"][-1]
    assert checked["attestable"] is True and checked["_host"] == "localhost"

    assert checked["description"]["config_file"] == os.path.join(byo_build["user_folder"], "appliance.kiwi")
    assert {r["path"] for r in checked["references"]} >= {"edit_boot_install.sh"}
    # KIWI copied the user's root/ file into the image root it built from.
    built = results["Check on the KIWI build"][-1]
    image_root = os.path.join(os.path.dirname(built["disk"]), "build", "image-root")
    with open(os.path.join(image_root, "etc", "my-appliance", "settings.conf")) as handle:
        assert handle.read() == "role=appliance\n"
    print("bring-your-own build through build_and_publish: %.0f s" % byo_build["seconds"])
