# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The image_publish role end to end against moto: upload, register, copy, share, manifest written."""
import hashlib
import json

ACCOUNT = "210987654321"

PLAY = """
- hosts: localhost
  gather_facts: false
  roles:
    - role: attestable.ami.image_publish
      vars:
        image_publish_manifest_path: "{{ manifest }}"
        image_publish_regions: [eu-west-1]
        image_publish_launch_permissions: ["%s"]
        image_publish_tags: {Project: attestable}
        image_publish_workers: 2
        image_publish_aws_region: us-east-1
        image_publish_aws_endpoint_url: "{{ endpoint }}"
""" % ACCOUNT


def pcr(text):
    return hashlib.sha384(text.encode()).hexdigest()


def test_role_publishes_and_records_the_amis(run_playbook, aws_proxy, aws, sparse_image, tmp_path, read_back):
    measurements = {"HashAlgorithm": "SHA384", "PCR4": pcr("4"), "PCR7": pcr("7"), "PCR12": pcr("12"),
                    "engines": ["nitro-tpm-pcr-compute"], "boot_mode": "standard"}
    manifest_path = tmp_path / "manifest.json"
    manifest_path.write_text(json.dumps({
        "schema_version": 1,
        "image": {"name": "attestable-al2023", "version": "1.0.0", "architecture": "arm64",
                  "disk": sparse_image["path"], "disk_sha256": sparse_image["sha256"]},
        "measurements": measurements,
    }))
    run = run_playbook(PLAY, extra_vars={"manifest": str(manifest_path), "endpoint": aws_proxy.url})
    assert run.rc == 0, run.stdout

    manifest = json.loads(manifest_path.read_text())
    snapshot = manifest["snapshot"]
    assert snapshot["region"] == "us-east-1"
    assert snapshot["image_sha256"] == sparse_image["sha256"]
    assert snapshot["volume_size"] == 1
    data = read_back(aws.client("ebs"), snapshot["snapshot_id"], sparse_image["size"])[0]
    assert hashlib.sha256(data).hexdigest() == sparse_image["sha256"]

    amis = manifest["amis"]
    assert set(amis) == {"us-east-1", "eu-west-1"}
    for region, image_id in amis.items():
        ec2 = aws.client("ec2", region)
        image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
        assert image["Name"] == "attestable-al2023-1.0.0-" + sparse_image["sha256"][:12]  # no UKI digest: the disk's
        tags = dict((t["Key"], t["Value"]) for t in image["Tags"])
        assert tags["attestable:PCR4"] == measurements["PCR4"] and tags["attestable:PCR12"] == measurements["PCR12"]
        assert tags["attestable:SnapshotId"] == snapshot["snapshot_id"]
        perms = ec2.describe_image_attribute(ImageId=image_id, Attribute="launchPermission")["LaunchPermissions"]
        assert perms == [{"UserId": ACCOUNT}]
    register = aws_proxy.calls("RegisterImage")
    assert len(register) == 1 and register[0]["Architecture"] == "arm64" and register[0]["TpmSupport"] == "v2.0"

    # The manifest held the disk digest, so the image was read once (no hashing pass) - and a rerun changes nothing.
    aws_proxy.clear()
    again = run_playbook(PLAY, extra_vars={"manifest": str(manifest_path), "endpoint": aws_proxy.url})
    assert again.rc == 0, again.stdout
    assert json.loads(again.stdout)["stats"]["localhost"]["changed"] == 0
    assert aws_proxy.block_puts() == [] and aws_proxy.calls("RegisterImage") == []
    assert json.loads(manifest_path.read_text()) == manifest


def test_role_without_measurements_stops_before_uploading(run_playbook, aws_proxy, sparse_image, tmp_path):
    manifest_path = tmp_path / "manifest.json"
    manifest_path.write_text(json.dumps({"schema_version": 1, "image": {"name": "x-image", "version": "1.0.0",
                                                                        "disk": sparse_image["path"]}}))
    run = run_playbook(PLAY, extra_vars={"manifest": str(manifest_path), "endpoint": aws_proxy.url})
    assert run.rc != 0
    assert "reference measurements" in run.task("attestable.ami.image_publish : Check that the disk, the AMI name and the measurements are known")["msg"]
    assert aws_proxy.requests == []


def test_rebuild_of_the_same_version_gets_its_own_ami_name(run_playbook, aws_proxy, aws, sparse_image, tmp_path):
    # Issue 13 item 9: builds are not reproducible, so a second build of the same description (same name and
    # version, other UKI and disk) must not collide with the first build's AMI.
    def manifest(path, uki_sha256, disk, disk_sha256):
        path.write_text(json.dumps({
            "schema_version": 1,
            "image": {"name": "attestable-al2023", "version": "1.0.0", "architecture": "x86_64", "disk": disk,
                      "disk_sha256": disk_sha256, "uki": "/tmp/kiwi.efi", "uki_sha256": uki_sha256},
            "measurements": {"HashAlgorithm": "SHA384", "PCR4": pcr(uki_sha256), "PCR7": pcr("7"),
                             "PCR12": "0" * 96},
        }))
        return str(path)

    first_uki, second_uki = hashlib.sha256(b"build 1").hexdigest(), hashlib.sha256(b"build 2").hexdigest()
    first = run_playbook(PLAY, extra_vars={"endpoint": aws_proxy.url, "manifest": manifest(
        tmp_path / "first.json", first_uki, sparse_image["path"], sparse_image["sha256"])})
    assert first.rc == 0, first.stdout
    with open(sparse_image["path"], "r+b") as handle:  # the second build's disk differs
        handle.seek(7)
        handle.write(b"\x02")
    second_sha = hashlib.sha256(open(sparse_image["path"], "rb").read()).hexdigest()
    second = run_playbook(PLAY, extra_vars={"endpoint": aws_proxy.url, "manifest": manifest(
        tmp_path / "second.json", second_uki, sparse_image["path"], second_sha)})
    assert second.rc == 0, second.stdout

    names = {}
    for path in ("first.json", "second.json"):
        amis = json.loads((tmp_path / path).read_text())["amis"]
        image = aws.client("ec2").describe_images(ImageIds=[amis["us-east-1"]])["Images"][0]
        names[path] = image["Name"]
    assert names == {"first.json": "attestable-al2023-1.0.0-" + first_uki[:12],
                     "second.json": "attestable-al2023-1.0.0-" + second_uki[:12]}


def test_name_collision_says_what_to_change(run_playbook, aws_proxy, aws, sparse_image, tmp_path):
    pinned = PLAY.replace("image_publish_workers: 2", "image_publish_workers: 2\n        image_publish_name: pinned-name-1.0")
    measurements = {"HashAlgorithm": "SHA384", "PCR4": pcr("a"), "PCR7": pcr("7"), "PCR12": "0" * 96}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"schema_version": 1, "image": {"name": "x", "version": "1", "disk": sparse_image["path"]},
                                "measurements": measurements}))
    assert run_playbook(pinned, extra_vars={"endpoint": aws_proxy.url, "manifest": str(path)}).rc == 0
    existing = aws.image_ids()
    path.write_text(json.dumps({"schema_version": 1, "image": {"name": "x", "version": "1", "disk": sparse_image["path"]},
                                "measurements": dict(measurements, PCR4=pcr("b"))}))
    clash = run_playbook(pinned, extra_vars={"endpoint": aws_proxy.url, "manifest": str(path)})
    assert clash.rc != 0
    msg = clash.task("attestable.ami.image_publish : Register the AMI, copy it to the other regions and share it")["msg"]
    snapshot_id = clash.task("attestable.ami.image_publish : Upload the disk image to an EBS snapshot")["snapshot_id"]
    assert "An AMI named 'pinned-name-1.0' already exists in us-east-1" in msg
    assert "image_publish_name" in msg
    assert "'pinned-name-1.0-%s'" % snapshot_id[len("snap-"):] in msg
    assert aws.image_ids() == existing
