# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Teardown of a builder run against a moto server over HTTP: it removes exactly one run's resources.

The runs' resources are made here with boto3 as the role tags them (attestable:RunId, attestable:Role=builder;
some with the attestable:run-id, attestable:role spelling of older releases),
so that each test sees teardown alone. The recording proxy (tests/integration/aws_proxy.py) answers
DependencyViolation where AWS does and moto does not: a security group whose instance's network interface is
still being released.
"""
import os

import pytest

from test_builder_role import NOTHING_LEFT, leftovers, no_traceback, role_task, run_instances

AL2023_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"


NEW_KEYS = ("attestable:RunId", "attestable:Role")
LEGACY_KEYS = ("attestable:run-id", "attestable:role")  # written by releases before the tag keys were unified


def make_run(ec2, ssm, run_id, prefix="attestable-builder", keys=NEW_KEYS):
    """An instance, security group and key pair tagged as the role tags a run's resources."""
    name = "%s-%s" % (prefix, run_id)
    tags = [{"Key": keys[0], "Value": run_id}, {"Key": keys[1], "Value": "builder"},
            {"Key": "Name", "Value": name}]
    group = ec2.create_security_group(GroupName=name, Description="test run " + run_id,
                                      TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}])["GroupId"]
    ec2.create_key_pair(KeyName=name, TagSpecifications=[{"ResourceType": "key-pair", "Tags": tags}])
    image = ssm.get_parameter(Name=AL2023_PARAMETER)["Parameter"]["Value"]
    instance = ec2.run_instances(ImageId=image, InstanceType="m7i.large", MinCount=1, MaxCount=1, KeyName=name,
                                 SecurityGroupIds=[group],
                                 TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])["Instances"][0]
    return {"instance_id": instance["InstanceId"], "group_id": group, "key_name": name}


def key_dir(parent, run_id, suffix="k3y_d1r0", prefix="attestable-builder"):
    """A directory named as the role's launch names a run's private key directory."""
    path = os.path.join(str(parent), "%s-%s.%s" % (prefix, run_id, suffix))
    os.mkdir(path, 0o700)
    with open(os.path.join(path, "id_ed25519"), "w") as handle:
        handle.write("not a real key\n")
    return path


def teardown_playbook(run_playbook, builder_vars, run_id, parent, endpoint=None, **extra):
    extra_vars = {"builder_run_id": run_id, "builder_key_parent_dir": str(parent),
                  "builder_aws_region": builder_vars["builder_aws_region"],
                  "builder_aws_endpoint_url": endpoint or builder_vars["builder_aws_endpoint_url"]}
    extra_vars.update(extra)
    return run_playbook(os.path.join("playbooks", "builder_teardown.yml"), extra_vars=extra_vars)


def live(ec2):
    return sorted(i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
                  if i["State"]["Name"] != "terminated")


@pytest.mark.parametrize("run_id", ["*", "2026*", "run-?", "../attestable-builder-other", "-x", " other-run"],
                         ids=["star", "prefix-wildcard", "question-mark", "path", "leading-dash", "leading-space"])
def test_teardown_playbook_refuses_a_run_id_that_is_a_pattern(
        run_playbook, builder_vars, ec2, ssm, tmp_path, run_id):
    other = make_run(ec2, ssm, "other-run")
    other_dir = key_dir(tmp_path, "other-run")
    unrelated = os.path.join(str(tmp_path), "unrelated-data.keepme")
    os.mkdir(unrelated)

    result = teardown_playbook(run_playbook, builder_vars, run_id, tmp_path)
    assert result.rc != 0
    refused = result.task("Check that builder_run_id names one run")
    assert refused["failed"] is True
    assert "is not a run id" in refused["msg"] and "Nothing was removed" in refused["msg"]
    # Another run's instance, group, key pair and key directory, and an unrelated directory, are all still there.
    assert live(ec2) == [other["instance_id"]]
    assert leftovers(ec2)["security_groups"] == [other["group_id"]]
    assert leftovers(ec2)["key_pairs"] == [other["key_name"]]
    assert os.path.isdir(other_dir) and os.path.isdir(unrelated)
    no_traceback(result)


def test_role_teardown_refuses_a_recorded_run_id_that_is_a_pattern(
        run_playbook, builder_playbook, builder_vars, ec2, ssm, tmp_path):
    # builder_resources handed to the teardown entry point (e.g. from an earlier playbook run) with a pattern.
    other = make_run(ec2, ssm, "other-run")
    other_dir = key_dir(tmp_path, "other-run")
    aws = {"region": builder_vars["builder_aws_region"], "profile": "",
           "endpoint_url": builder_vars["builder_aws_endpoint_url"]}
    resources = {"run_id": "*", "mode": "ec2", "aws": aws}
    result = run_playbook(builder_playbook("teardown.yml"), extra_vars=dict(
        builder_vars, builder_resources=resources, builder_key_parent_dir=str(tmp_path)))
    assert result.rc != 0
    refused = role_task(result, "Check that the run id is a run id, not a pattern")
    assert refused["failed"] is True and 'run id "*"' in refused["msg"]
    assert live(ec2) == [other["instance_id"]]
    assert os.path.isdir(other_dir)


def test_teardown_removes_exactly_its_run_and_not_a_run_whose_id_extends_it(
        run_playbook, builder_vars, ec2, ssm, tmp_path):
    # Run "r1" and run "r1.x": a prefix or glob match on "r1" would reach the second run's key directory.
    mine = make_run(ec2, ssm, "r1")
    other = make_run(ec2, ssm, "r1.x")
    mine_dir = key_dir(tmp_path, "r1")
    other_dir = key_dir(tmp_path, "r1.x")
    other_prefix_dir = key_dir(tmp_path, "r1", prefix="other-tool")  # same run id, another tool's prefix

    result = teardown_playbook(run_playbook, builder_vars, "r1", tmp_path)
    assert result.rc == 0, result.stdout[-4000:]
    assert [i["State"]["Name"] for i in run_instances(ec2, "r1")] == ["terminated"]
    assert live(ec2) == [other["instance_id"]]
    assert leftovers(ec2)["security_groups"] == [other["group_id"]]
    assert leftovers(ec2)["key_pairs"] == [other["key_name"]]
    assert mine["group_id"] != other["group_id"]
    assert not os.path.exists(mine_dir)
    assert os.path.isdir(other_dir) and os.path.isdir(other_prefix_dir)


def test_teardown_removes_a_run_tagged_by_an_older_release(run_playbook, builder_vars, ec2, ssm, tmp_path):
    # A builder leaked by a release that still wrote attestable:run-id / attestable:role: found and removed too;
    # another run (current keys) whose id extends it stays.
    mine = make_run(ec2, ssm, "r2", keys=LEGACY_KEYS)
    other = make_run(ec2, ssm, "r2.x")
    result = teardown_playbook(run_playbook, builder_vars, "r2", tmp_path)
    assert result.rc == 0, result.stdout[-4000:]
    state = dict((i["InstanceId"], i["State"]["Name"]) for r in ec2.describe_instances()["Reservations"]
                 for i in r["Instances"])
    assert state[mine["instance_id"]] == "terminated"
    assert live(ec2) == [other["instance_id"]]
    assert leftovers(ec2)["security_groups"] == [other["group_id"]]
    assert leftovers(ec2)["key_pairs"] == [other["key_name"]]


def test_teardown_waits_out_dependency_violation_and_leaves_nothing(
        run_playbook, builder_vars, ec2, ssm, aws_proxy, tmp_path):
    # AWS answers DependencyViolation to DeleteSecurityGroup until the terminated instance's ENI is released.
    run = make_run(ec2, ssm, "20261129T200226Z-a1b2c3")
    key_dir(tmp_path, "20261129T200226Z-a1b2c3")
    rule = aws_proxy.inject(r"Action=DeleteSecurityGroup$", [(400, "DependencyViolation")] * 3)

    result = teardown_playbook(run_playbook, builder_vars, "20261129T200226Z-a1b2c3", tmp_path,
                               endpoint=aws_proxy.url, builder_teardown_retry_delay=1)
    assert result.rc == 0, result.stdout[-4000:]
    assert rule.hits == 3
    deletes = aws_proxy.calls("DeleteSecurityGroup")
    assert [d["GroupId"] for d in deletes] == [run["group_id"]] * 4
    # The instance was terminated (and waited for) before the first attempt to delete its group.
    actions = [r["params"].get("Action") for r in aws_proxy.requests]
    assert actions.index("TerminateInstances") < actions.index("DeleteSecurityGroup")
    assert leftovers(ec2) == NOTHING_LEFT
    assert os.listdir(str(tmp_path)) == []
    no_traceback(result)


def test_teardown_gives_up_on_dependency_violation_after_the_bounded_retries(
        run_playbook, builder_vars, ec2, ssm, aws_proxy, tmp_path):
    run = make_run(ec2, ssm, "stuck-run")
    aws_proxy.inject(r"Action=DeleteSecurityGroup$", [(400, "DependencyViolation")], forever=True)
    result = teardown_playbook(run_playbook, builder_vars, "stuck-run", tmp_path, endpoint=aws_proxy.url,
                               builder_teardown_retries=2, builder_teardown_retry_delay=0)
    assert result.rc != 0
    assert len(aws_proxy.calls("DeleteSecurityGroup")) == 3
    assert "DependencyViolation" in role_task(result, "Delete the security groups of this run")["msg"] + str(
        role_task(result, "Delete the security groups of this run").get("results", ""))
    assert leftovers(ec2)["security_groups"] == [run["group_id"]]
