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
        assert image["Name"] == "attestable-al2023-1.0.0"
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
