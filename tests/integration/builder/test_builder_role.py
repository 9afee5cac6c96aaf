# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The builder role against a real moto server over HTTP: launch, inventory, teardown, injected failures.

moto runs no machines, so nothing answers on its instances' addresses: the tests switch off waiting for the
connection and installing packages (builder_wait_for_connection / builder_install_packages), except where an
unanswered wait is the failure being injected. What moto stores (instance, volume, security group, key pair,
tags) is read back with boto3 and compared with what the role was asked for.
"""
import json
import os
import stat

import boto3
import pytest

AL2023_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-%s"
BUILDER_TAGS = {"project": "attestable-tests"}
EC2_TRUST = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


def run_instances(ec2, run_id):
    """Every instance tagged with this run id, whatever its state."""
    found = ec2.describe_instances(Filters=[{"Name": "tag:attestable:RunId", "Values": [run_id]}])
    return [i for r in found["Reservations"] for i in r["Instances"]]


def leftovers(ec2):
    """What a run must not leave behind: live instances, key pairs, security groups other than the default."""
    instances = [i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
                 if i["State"]["Name"] != "terminated"]
    keys = [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]]
    groups = [g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"]
    return {"instances": instances, "key_pairs": keys, "security_groups": groups}


NOTHING_LEFT = {"instances": [], "key_pairs": [], "security_groups": []}


def tag_dict(resource):
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def root_volume(ec2, instance):
    volumes = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [instance["InstanceId"]]}])
    assert len(volumes["Volumes"]) == 1
    return volumes["Volumes"][0]


def role_task(result, name):
    """The result of a task of the role (the json callback prefixes the role's name)."""
    return result.task("attestable.ami.builder : " + name)


def no_traceback(result):
    assert "Traceback" not in result.stdout + result.stderr


def test_launch_adds_to_inventory_and_teardown_removes_everything(
        run_playbook, builder_playbook, builder_vars, ec2, ssm, tmp_path):
    extra = dict(builder_vars, builder_tags=BUILDER_TAGS, builder_key_parent_dir=str(tmp_path))
    launched = run_playbook(builder_playbook("launch.yml"), extra_vars=extra)
    assert launched.rc == 0, launched.stdout[-4000:]
    res = launched.task("Show the builder resources")["builder_resources"]
    run_id = res["run_id"]
    name = "attestable-builder-" + run_id

    # The instance: the AMI the public SSM parameter names (moto serves AWS's public parameters), x86_64.
    expected_ami = ssm.get_parameter(Name=AL2023_PARAMETER % "x86_64")["Parameter"]["Value"]
    assert ec2.describe_images(ImageIds=[expected_ami])["Images"][0]["Architecture"] == "x86_64"
    [instance] = run_instances(ec2, run_id)
    assert instance["InstanceId"] == res["instance_id"]
    assert instance["State"]["Name"] == "running"
    assert instance["ImageId"] == expected_ami
    assert instance["InstanceType"] == "m7i.large"
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert instance["MetadataOptions"]["HttpEndpoint"] == "enabled"
    assert tag_dict(instance) == dict(BUILDER_TAGS, **{"Name": name, "attestable:RunId": run_id,
                                                       "attestable:Role": "builder"})

    volume = root_volume(ec2, instance)
    assert (volume["Size"], volume["VolumeType"], volume["Encrypted"]) == (30, "gp3", True)
    assert volume["Attachments"][0]["Device"] == "/dev/xvda"
    assert [(m["DeviceName"], m["Ebs"]["VolumeId"], m["Ebs"]["DeleteOnTermination"])
            for m in instance["BlockDeviceMappings"]] == [("/dev/xvda", volume["VolumeId"], True)]

    # The security group admits SSH from the controller's /32 only.
    assert [g["GroupId"] for g in instance["SecurityGroups"]] == [res["security_group_id"]]
    group = ec2.describe_security_groups(GroupIds=[res["security_group_id"]])["SecurityGroups"][0]
    assert group["GroupName"] == name
    assert [(p["IpProtocol"], p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]], p["Ipv6Ranges"])
            for p in group["IpPermissions"]] == [("tcp", 22, 22, ["198.51.100.7/32"], [])]
    assert tag_dict(group)["attestable:RunId"] == run_id

    # The run's own key pair; its private key is on the controller, 0600 in a 0700 directory, and in no output.
    assert instance["KeyName"] == name == res["key_name"]
    [key] = ec2.describe_key_pairs(KeyNames=[name])["KeyPairs"]
    assert tag_dict(key)["attestable:RunId"] == run_id
    assert os.path.dirname(res["key_dir"]) == str(tmp_path)
    assert stat.S_IMODE(os.stat(res["key_dir"]).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(res["key_file"]).st_mode) == 0o600
    with open(res["key_file"]) as handle:
        private_key = handle.read()
    assert "PRIVATE KEY" in private_key
    secret_lines = [line for line in private_key.splitlines() if line and "PRIVATE KEY" not in line]
    assert secret_lines and not any(line in launched.stdout + launched.stderr for line in secret_lines)

    # The inventory: a play on the group reaches the instance's public address with the run's key.
    host = launched.task("Show the builder's inventory variables")["msg"]
    assert host["inventory_hostname"] == name == res["host"]
    assert host["groups"] == ["attestable_builder"]
    assert host["ansible_host"] == instance["PublicIpAddress"]
    assert host["ansible_user"] == "ec2-user"
    assert host["ansible_ssh_private_key_file"] == res["key_file"]
    assert "UserKnownHostsFile=%s/known_hosts" % res["key_dir"] in host["ansible_ssh_common_args"]
    assert host["ansible_python_interpreter"] == "/usr/bin/python3"
    assert host["attestable_builder_run_id"] == run_id
    no_traceback(launched)

    # Teardown from the recorded builder_resources, as a later play would: nothing left, the key deleted.
    torn = run_playbook(builder_playbook("teardown.yml"), extra_vars=dict(builder_vars, builder_resources=res))
    assert torn.rc == 0, torn.stdout[-4000:]
    assert leftovers(ec2) == NOTHING_LEFT
    assert [i["State"]["Name"] for i in run_instances(ec2, run_id)] == ["terminated"]
    assert not os.path.exists(res["key_dir"])

    again = run_playbook(builder_playbook("teardown.yml"), extra_vars=dict(builder_vars, builder_resources=res))
    assert again.rc == 0
    assert role_task(again, "Terminate the builder instance of this run")["changed"] is False
    assert role_task(again, "Delete the security groups of this run")["skipped"] is True


@pytest.mark.parametrize("arch", ["arm64", "aarch64"])  # the same machine, named as EC2 or as the kernel names it
def test_arm64_over_ssm_opens_no_port_and_creates_no_key(
        run_playbook, builder_playbook, builder_vars, ec2, ssm, moto_server, arch):
    iam = boto3.client("iam", endpoint_url=moto_server, region_name="us-east-1")
    profile = "attestable-builder-ssm-" + arch
    iam.create_instance_profile(InstanceProfileName=profile)
    iam.create_role(RoleName=profile, AssumeRolePolicyDocument=EC2_TRUST)
    iam.add_role_to_instance_profile(InstanceProfileName=profile, RoleName=profile)
    extra = dict(builder_vars, builder_architecture=arch, builder_connection="ssm", builder_volume_size=50,
                 builder_ssm_bucket="builder-transfer", builder_iam_instance_profile=profile)
    del extra["builder_ssh_cidr"]
    launched = run_playbook(builder_playbook("launch.yml"), extra_vars=extra)
    assert launched.rc == 0, launched.stdout[-4000:]
    res = launched.task("Show the builder resources")["builder_resources"]

    [instance] = run_instances(ec2, res["run_id"])
    assert instance["ImageId"] == ssm.get_parameter(Name=AL2023_PARAMETER % "arm64")["Parameter"]["Value"]
    assert ec2.describe_images(ImageIds=[instance["ImageId"]])["Images"][0]["Architecture"] == "arm64"
    assert instance["InstanceType"] == "m7g.large"
    assert instance["IamInstanceProfile"]["Arn"].endswith("/" + profile)
    assert "KeyName" not in instance
    assert root_volume(ec2, instance)["Size"] == 50
    group = ec2.describe_security_groups(GroupIds=[res["security_group_id"]])["SecurityGroups"][0]
    assert group["IpPermissions"] == []
    assert ec2.describe_key_pairs()["KeyPairs"] == []

    host = launched.task("Show the builder's inventory variables")["msg"]
    assert host["groups"] == ["attestable_builder"]
    assert host["ansible_connection"] == "amazon.aws.aws_ssm"
    assert host["ansible_aws_ssm_instance_id"] == instance["InstanceId"]
    assert host["ansible_aws_ssm_bucket_name"] == "builder-transfer"

    torn = run_playbook(builder_playbook("teardown.yml"), extra_vars=dict(builder_vars, builder_resources=res))
    assert torn.rc == 0, torn.stdout[-4000:]
    assert leftovers(ec2) == NOTHING_LEFT


def test_failure_inside_the_role_after_launch_leaves_nothing(
        run_playbook, builder_playbook, builder_vars, ec2, tmp_path):
    # Injected failure: the role waits for SSH on an instance that exists in moto but that nothing answers for.
    extra = dict(builder_vars, builder_wait_for_connection=True, builder_connect_timeout=3, ansible_timeout=3,
                 builder_key_parent_dir=str(tmp_path))
    failed = run_playbook(builder_playbook("launch.yml"), extra_vars=extra)
    assert failed.rc != 0
    res = role_task(failed, "Remember the builder instance")["ansible_facts"]["builder_resources"]
    report = role_task(failed, "Report the failure that stopped the builder set-up")
    assert report["failed"] is True
    # Whichever wait gives up first (some networks accept any TCP connection, then SSH times out).
    assert ('"Wait for the builder\'s SSH port"' in report["msg"]
            or '"Wait until Ansible can run modules on the builder"' in report["msg"])
    assert res["run_id"] in report["msg"]

    # The instance, key pair and security group had been created, and are gone again.
    assert [i["State"]["Name"] for i in run_instances(ec2, res["run_id"])] == ["terminated"]
    assert res["key_name"] and res["security_group_id"]
    assert leftovers(ec2) == NOTHING_LEFT
    assert os.listdir(str(tmp_path)) == []
    no_traceback(failed)


def test_failure_in_a_later_build_step_is_torn_down_by_always(
        run_playbook, builder_playbook, builder_vars, ec2, tmp_path):
    failed = run_playbook(builder_playbook("fail_after_launch.yml"),
                          extra_vars=dict(builder_vars, builder_key_parent_dir=str(tmp_path)))
    assert failed.rc != 0
    assert failed.task("Fail the way a build step would")["msg"] == "injected build failure after launch"
    res = failed.task("Show the builder resources")["builder_resources"]
    assert [i["State"]["Name"] for i in run_instances(ec2, res["run_id"])] == ["terminated"]
    assert leftovers(ec2) == NOTHING_LEFT
    assert os.listdir(str(tmp_path)) == []


def test_keep_names_what_it_keeps_and_the_teardown_playbook_removes_it(
        run_playbook, builder_playbook, builder_vars, ec2, tmp_path):
    # Injected failure: installing packages on a builder that cannot be reached (SSH to moto's made-up address;
    # ansible_timeout keeps it short). "Unreachable" must become an ordinary, rescuable failure.
    extra = dict(builder_vars, builder_keep=True, builder_install_packages=True, ansible_timeout=3,
                 builder_key_parent_dir=str(tmp_path))
    failed = run_playbook(builder_playbook("launch.yml"), extra_vars=extra)
    assert failed.rc != 0
    assert role_task(failed, "Check that the builder answered while installing")["failed"] is True
    assert "could not be reached to install packages" in role_task(
        failed, "Report the failure that stopped the builder set-up")["msg"]
    res = role_task(failed, "Remember the builder instance")["ansible_facts"]["builder_resources"]
    assert role_task(failed, "Mark the builder as torn down")["ansible_facts"]["builder_resources"]["torn_down"] is False
    kept = role_task(failed, "Say which builder resources are kept")["msg"]
    for resource in (res["instance_id"], res["key_name"], res["security_group_id"], res["key_file"], res["run_id"]):
        assert resource in kept
    assert leftovers(ec2) == {"instances": [res["instance_id"]], "key_pairs": [res["key_name"]],
                              "security_groups": [res["security_group_id"]]}
    assert os.path.exists(res["key_file"])

    # Later, from nothing but the run id the message gave: the collection's teardown playbook.
    torn = run_playbook(os.path.join("playbooks", "builder_teardown.yml"),
                        extra_vars={"builder_run_id": res["run_id"], "builder_key_parent_dir": str(tmp_path),
                                    "builder_aws_region": builder_vars["builder_aws_region"],
                                    "builder_aws_endpoint_url": builder_vars["builder_aws_endpoint_url"]})
    assert torn.rc == 0, torn.stdout[-4000:]
    assert leftovers(ec2) == NOTHING_LEFT
    assert os.listdir(str(tmp_path)) == []


def test_check_mode_plans_the_launch_and_creates_nothing(run_playbook, builder_playbook, builder_vars, ec2, ssm):
    result = run_playbook(builder_playbook("launch.yml"), extra_vars=builder_vars, check=True)
    assert result.rc == 0, result.stdout[-4000:]
    plan = role_task(result, "Say what would be launched (check mode creates nothing)")["msg"]
    assert ssm.get_parameter(Name=AL2023_PARAMETER % "x86_64")["Parameter"]["Value"] in plan
    assert "m7i.large" in plan
    assert leftovers(ec2) == NOTHING_LEFT
    assert ec2.describe_instances()["Reservations"] == []


@pytest.mark.parametrize("overrides, expected", [
    ({"builder_ssh_cidr": ""}, ["builder_ssh_cidr", "controller's public address"]),
    ({"builder_ssh_cidr": "controller.example"}, ["builder_ssh_cidr=controller.example", "203.0.113.7/32"]),
    ({"builder_ssh_cidr": "0.0.0.0/0"}, ["builder_ssh_cidr=0.0.0.0/0", "single IPv4 or IPv6 address"]),
    ({"builder_mode": "cloud"}, ["builder_mode", "ec2, existing"]),
    ({"builder_volume_size": 8}, ["builder_volume_size must be at least 12", "got 8"]),
    ({"builder_connection": "ssm"}, ["builder_ssm_bucket", "builder_iam_instance_profile"]),
    ({"builder_architecture": "arm64", "builder_image_id": "x86_64"}, ["is x86_64", "builder_architecture"]),
], ids=["no-cidr", "bad-cidr", "wide-cidr", "bad-mode", "small-volume", "ssm-without-bucket", "architecture-mismatch"])
def test_bad_input_is_refused_before_anything_is_created(
        run_playbook, builder_playbook, builder_vars, ec2, ssm, overrides, expected):
    overrides = dict(overrides)
    if overrides.get("builder_image_id") == "x86_64":
        overrides["builder_image_id"] = ssm.get_parameter(Name=AL2023_PARAMETER % "x86_64")["Parameter"]["Value"]
    result = run_playbook(builder_playbook("launch.yml"), extra_vars=dict(builder_vars, **overrides))
    assert result.rc != 0
    messages = " ".join(r.get("msg", "") for r in result.results.values() if r.get("failed"))
    for text in expected:
        assert text in messages
    assert leftovers(ec2) == NOTHING_LEFT
    no_traceback(result)


@pytest.mark.parametrize("check", [False, True], ids=["run", "check-mode"])
def test_existing_host_joins_the_builder_group(run_playbook, builder_playbook, check):
    result = run_playbook(builder_playbook("launch.yml"), check=check, extra_vars={
        "builder_mode": "existing", "builder_host": "localhost", "builder_install_packages": False,
        "builder_check_tool_versions": False,
        "builder_host_vars": {"builder_test_marker": "from builder_host_vars"}})
    assert result.rc == 0, result.stdout[-4000:]
    # wait_for_connection does not run in check mode (Ansible skips it there).
    assert role_task(result, "Wait until Ansible can run modules on the builder").get("skipped", False) is check
    res = result.task("Show the builder resources")["builder_resources"]
    assert (res["mode"], res["host"]) == ("existing", "localhost")
    host = result.task("Show the builder's inventory variables")["msg"]
    assert host["inventory_hostname"] == "localhost"
    assert host["groups"] == ["attestable_builder"]
    assert host["builder_test_marker"] == "from builder_host_vars"
    assert host["attestable_builder_run_id"] == res["run_id"]
