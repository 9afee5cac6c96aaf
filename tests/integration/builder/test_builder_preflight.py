# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the builder role checks before it creates anything, against a moto server over HTTP.

The instance type's zones (DescribeInstanceTypeOfferings: moto serves AWS's offerings per zone), the instance
profile the upload from the builder needs and what its role may do (moto has no IAM policy simulator: the role
reads the role's policies instead; where a test needs the simulator's answers, moto's IAM handler gets a
SimulatePrincipalPolicy that answers the decisions the test sets, said there), EBS encryption by default, and
launching in the next subnet when EC2 refuses a zone (the recording proxy answers what moto never does).
"""
import json
import os
import shutil

import pytest

from test_builder_role import EC2_TRUST, NOTHING_LEFT, leftovers, no_traceback, role_task, run_instances

UPLOAD_ACTIONS = ["ebs:StartSnapshot", "ebs:PutSnapshotBlock", "ebs:CompleteSnapshot", "ec2:DescribeSnapshots",
                  "ec2:CreateTags", "ec2:DeleteSnapshot"]
KMS_ACTIONS = ["kms:CreateGrant", "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext", "kms:Decrypt"]
CREATING = ("CreateSecurityGroup", "CreateKeyPair", "ImportKeyPair", "RunInstances")


def profile_with_policy(iam, name, actions, managed=False):
    """An instance profile whose role allows `actions` on every resource (inline, or as a managed policy)."""
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=EC2_TRUST)
    document = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": actions, "Resource": "*"}]})
    if managed:
        arn = iam.create_policy(PolicyName=name + "-upload", PolicyDocument=document)["Policy"]["Arn"]
        iam.attach_role_policy(RoleName=name, PolicyArn=arn)
    else:
        iam.put_role_policy(RoleName=name, PolicyName="upload", PolicyDocument=document)
    iam.create_instance_profile(InstanceProfileName=name)
    iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return name


def created_nothing(ec2, proxy=None):
    assert leftovers(ec2) == NOTHING_LEFT
    assert ec2.describe_instances()["Reservations"] == []
    if proxy is not None:
        assert [a for a in CREATING if proxy.calls(a)] == []


def failure_messages(result):
    return " ".join(r.get("msg", "") for r in result.results.values() if r.get("failed"))


def launch(run_playbook, builder_playbook, builder_vars, endpoint=None, **overrides):
    extra = dict(builder_vars, **overrides)
    if endpoint:
        extra["builder_aws_endpoint_url"] = endpoint
    return run_playbook(builder_playbook("launch.yml"), extra_vars=extra)


def test_upload_from_the_builder_needs_an_instance_profile(run_playbook, builder_playbook, builder_vars, ec2):
    result = launch(run_playbook, builder_playbook, builder_vars, builder_upload_on_builder=True)
    assert result.rc != 0
    message = role_task(result, "Check that the builder gets AWS credentials for the upload")["msg"]
    assert "builder_iam_instance_profile is empty" in message
    for action in UPLOAD_ACTIONS:
        assert action in message
    created_nothing(ec2)
    no_traceback(result)


def test_an_instance_profile_that_does_not_exist_is_refused(
        run_playbook, builder_playbook, builder_vars, ec2, aws_proxy):
    result = launch(run_playbook, builder_playbook, builder_vars, endpoint=aws_proxy.url,
                    builder_upload_on_builder=True, builder_iam_instance_profile="no-such-profile")
    assert result.rc != 0
    assert "builder_iam_instance_profile=no-such-profile: no instance profile named no-such-profile" in \
        failure_messages(result)
    created_nothing(ec2, aws_proxy)


def test_a_role_that_cannot_upload_is_refused_before_launch(
        run_playbook, builder_playbook, builder_vars, ec2, iam, aws_proxy):
    lacking = [a for a in UPLOAD_ACTIONS if a != "ebs:PutSnapshotBlock"]
    profile_with_policy(iam, "builder-no-put", lacking)
    result = launch(run_playbook, builder_playbook, builder_vars, endpoint=aws_proxy.url,
                    builder_upload_on_builder=True, builder_iam_instance_profile="builder-no-put")
    assert result.rc != 0
    message = failure_messages(result)
    assert "may not ebs:PutSnapshotBlock (checked by reading its policies)" in message
    assert "role/builder-no-put" in message
    checked = role_task(result, "Check where the instance type runs and what the instance profile may do, "
                                "before creating anything")
    assert checked["permissions"]["method"] == "policies" and checked["permissions"]["missing"] == [
        "ebs:PutSnapshotBlock"]
    created_nothing(ec2, aws_proxy)


def test_a_role_that_can_upload_launches_and_kms_is_required_when_ebs_encrypts_by_default(
        run_playbook, builder_playbook, builder_vars, ec2, iam, aws_proxy, tmp_path):
    profile_with_policy(iam, "builder-upload", ["ebs:*", "ec2:DescribeSnapshots", "ec2:CreateTags",
                                                "ec2:DeleteSnapshot"], managed=True)
    ec2.enable_ebs_encryption_by_default()
    refused = launch(run_playbook, builder_playbook, builder_vars, endpoint=aws_proxy.url,
                     builder_upload_on_builder=True, builder_iam_instance_profile="builder-upload")
    assert refused.rc != 0
    message = failure_messages(refused)
    for action in KMS_ACTIONS:
        assert action in message
    assert "encrypts EBS by default" in message
    created_nothing(ec2, aws_proxy)

    ec2.disable_ebs_encryption_by_default()
    launched = launch(run_playbook, builder_playbook, builder_vars, endpoint=aws_proxy.url,
                      builder_upload_on_builder=True, builder_iam_instance_profile="builder-upload",
                      builder_key_parent_dir=str(tmp_path))
    assert launched.rc == 0, launched.stdout[-4000:]
    res = launched.task("Show the builder resources")["builder_resources"]
    [instance] = run_instances(ec2, res["run_id"])
    assert instance["IamInstanceProfile"]["Arn"].endswith("/builder-upload")


def test_the_policy_simulator_decides_where_iam_allows_it(
        run_playbook, builder_playbook, builder_vars, ec2, iam, aws_proxy, monkeypatch):
    # moto has no SimulatePrincipalPolicy: this one (in moto's IAM handler, which runs in this process) answers
    # "allowed" for every action but ec2:DeleteSnapshot, as IAM would for a role whose policy misses it.
    from moto.core.responses import ActionResult
    from moto.iam.responses import IamResponse

    def simulate_principal_policy(self):
        actions = [v[0] for k, v in self.querystring.items() if k.startswith("ActionNames.member.")]
        return ActionResult({"IsTruncated": False, "EvaluationResults": [
            {"EvalActionName": a, "EvalResourceName": "*",
             "EvalDecision": "implicitDeny" if a == "ec2:DeleteSnapshot" else "allowed"} for a in actions]})

    monkeypatch.setattr(IamResponse, "simulate_principal_policy", simulate_principal_policy, raising=False)
    profile_with_policy(iam, "builder-simulated", UPLOAD_ACTIONS)  # the policy itself would pass
    result = launch(run_playbook, builder_playbook, builder_vars, endpoint=aws_proxy.url,
                    builder_upload_on_builder=True, builder_iam_instance_profile="builder-simulated")
    assert result.rc != 0
    assert "may not ec2:DeleteSnapshot (checked by IAM's policy simulator)" in failure_messages(result)
    [call] = aws_proxy.calls("SimulatePrincipalPolicy")
    assert call["PolicySourceArn"] == iam.get_role(RoleName="builder-simulated")["Role"]["Arn"]
    assert sorted(v for k, v in call.items() if k.startswith("ActionNames.member.")) == sorted(UPLOAD_ACTIONS)
    created_nothing(ec2, aws_proxy)


def test_a_denied_permission_check_warns_and_goes_on(
        run_playbook, builder_playbook, builder_vars, ec2, iam, aws_proxy, tmp_path):
    profile_with_policy(iam, "builder-unreadable", ["s3:GetObject"])  # would fail if it could be read
    for action in ("SimulatePrincipalPolicy", "ListRolePolicies"):
        aws_proxy.inject(r"Action=%s$" % action, [(403, "AccessDenied")], forever=True)
    result = launch(run_playbook, builder_playbook, builder_vars, endpoint=aws_proxy.url,
                    builder_upload_on_builder=True, builder_iam_instance_profile="builder-unreadable",
                    builder_key_parent_dir=str(tmp_path))
    assert result.rc == 0, result.stdout[-4000:]
    checked = role_task(result, "Check where the instance type runs and what the instance profile may do, "
                                "before creating anything")
    assert checked["permissions"]["method"] == "unverified"
    assert any("Could not check what the role builder-unreadable" in w for w in checked.get("warnings", []))
    assert len(run_instances(ec2, result.task("Show the builder resources")["builder_resources"]["run_id"])) == 1


def _offerings(ec2, instance_type):
    found = ec2.describe_instance_type_offerings(
        LocationType="availability-zone", Filters=[{"Name": "instance-type", "Values": [instance_type]}])
    return set(o["Location"] for o in found["InstanceTypeOfferings"])


def test_the_builder_goes_into_a_zone_that_offers_its_instance_type(
        run_playbook, builder_playbook, builder_vars, ec2, tmp_path):
    subnets = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    zones = set(s["AvailabilityZone"] for s in subnets)
    # The subnet that sorting by id picks; then an instance type (of moto's AWS offerings data) not offered
    # in its zone but in some other zone of the region.
    first_by_id = sorted(subnets, key=lambda s: s["SubnetId"])[0]
    candidates = ["m7i.large", "m7g.large", "c7i.large", "c7g.large", "r7i.large", "m6i.large", "m5.large",
                  "c6in.large", "m7i-flex.large", "i4i.large", "hpc7g.4xlarge", "p5.48xlarge", "m7a.large",
                  "c7a.large", "r7a.large", "inf2.xlarge", "trn1.2xlarge", "g5.xlarge", "x2idn.16xlarge"]
    chosen = None
    for instance_type in candidates:
        offered = _offerings(ec2, instance_type) & zones
        if offered and first_by_id["AvailabilityZone"] not in offered:
            chosen, chosen_zones = instance_type, offered
            break
    if chosen is None:
        # moto's subnet ids are random, so the first subnet's zone differs from run to run: when it offers every
        # candidate, take any type of moto's offerings data that this zone lacks and another zone has.
        by_type = {}
        paginator = ec2.get_paginator("describe_instance_type_offerings")
        for page in paginator.paginate(LocationType="availability-zone"):
            for offer in page["InstanceTypeOfferings"]:
                by_type.setdefault(offer["InstanceType"], set()).add(offer["Location"])
        for instance_type in sorted(by_type):
            offered = by_type[instance_type] & zones
            if offered and first_by_id["AvailabilityZone"] not in offered:
                chosen, chosen_zones = instance_type, offered
                break
    assert chosen, "moto's offerings data has none of the candidate types missing from one zone"

    launched = launch(run_playbook, builder_playbook, builder_vars, builder_instance_type=chosen,
                      builder_key_parent_dir=str(tmp_path))
    assert launched.rc == 0, launched.stdout[-4000:]
    res = launched.task("Show the builder resources")["builder_resources"]
    [instance] = run_instances(ec2, res["run_id"])
    assert instance["InstanceType"] == chosen
    assert instance["Placement"]["AvailabilityZone"] in chosen_zones
    assert res["subnet_id"] == instance["SubnetId"]
    offering = set(s["SubnetId"] for s in subnets if s["AvailabilityZone"] in chosen_zones)
    assert set(res["candidate_subnet_ids"]) == offering


def test_a_subnet_whose_zone_lacks_the_instance_type_is_refused(
        run_playbook, builder_playbook, builder_vars, ec2):
    subnets = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    offered = _offerings(ec2, "m7i.large")
    lacking = [s for s in subnets if s["AvailabilityZone"] not in offered]
    if not lacking:
        pytest.skip("every zone of moto's region offers m7i.large")
    result = launch(run_playbook, builder_playbook, builder_vars, builder_subnet_id=lacking[0]["SubnetId"])
    assert result.rc != 0
    message = failure_messages(result)
    assert "m7i.large is not offered in the availability zone of any candidate subnet" in message
    assert lacking[0]["SubnetId"] in message and sorted(offered)[0] in message
    created_nothing(ec2)


def test_a_zone_that_refuses_the_launch_is_skipped_for_the_next_subnet(
        run_playbook, builder_playbook, builder_vars, ec2, aws_proxy, tmp_path):
    # The first RunInstances is answered as AWS answers a zone without the type ("Unsupported").
    rule = aws_proxy.inject(r"Action=RunInstances$", [(400, "Unsupported")])
    launched = launch(run_playbook, builder_playbook, builder_vars, endpoint=aws_proxy.url,
                      builder_key_parent_dir=str(tmp_path))
    assert launched.rc == 0, launched.stdout[-4000:]
    assert rule.hits == 1
    tried = [c["NetworkInterface.1.SubnetId"] for c in aws_proxy.calls("RunInstances")]
    assert len(tried) == 2 and tried[0] != tried[1]
    res = launched.task("Show the builder resources")["builder_resources"]
    assert res["candidate_subnet_ids"][:2] == tried
    [instance] = run_instances(ec2, res["run_id"])
    assert instance["SubnetId"] == tried[1] == res["subnet_id"]
    no_traceback(launched)


def test_a_launch_error_other_than_capacity_stops_and_removes_what_was_created(
        run_playbook, builder_playbook, builder_vars, ec2, aws_proxy, tmp_path):
    aws_proxy.inject(r"Action=RunInstances$", [(400, "InvalidParameterValue")])
    failed = launch(run_playbook, builder_playbook, builder_vars, endpoint=aws_proxy.url,
                    builder_key_parent_dir=str(tmp_path))
    assert failed.rc != 0
    assert len(aws_proxy.calls("RunInstances")) == 1
    assert "InvalidParameterValue" in role_task(failed, "Report the failure that stopped the builder set-up")["msg"]
    assert leftovers(ec2) == NOTHING_LEFT


def test_a_builder_without_public_address_needs_a_route_out(run_playbook, builder_playbook, builder_vars, ec2):
    result = launch(run_playbook, builder_playbook, builder_vars, builder_address="private")
    assert result.rc != 0
    message = role_task(result, "Check that a builder without a public address has a route out")["msg"]
    assert "builder_private_egress=true" in message and "NAT gateway" in message
    created_nothing(ec2)


def test_ssm_mode_is_refused_with_an_amazon_aws_older_than_10(
        run_playbook, builder_playbook, builder_vars, ec2, tmp_path):
    # A copy of the installed amazon.aws that says it is 9.5.0 (the version constant its lookup reads), first on
    # the collections path: the refusal comes before any AWS call.
    import ansible_collections.amazon.aws as installed
    source = list(installed.__path__)[0]
    target = tmp_path / "collections" / "ansible_collections" / "amazon" / "aws"
    shutil.copytree(source, str(target), ignore=shutil.ignore_patterns("__pycache__", "tests"))
    common = target / "plugins" / "module_utils" / "common.py"
    text = common.read_text()
    assert 'AMAZON_AWS_COLLECTION_VERSION = "' in text
    common.write_text(text.replace('AMAZON_AWS_COLLECTION_VERSION = "', 'AMAZON_AWS_COLLECTION_VERSION = "9.5.0"  # was "', 1))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    extra = dict(builder_vars, builder_connection="ssm", builder_ssm_bucket="b", builder_iam_instance_profile="p")
    result = run_playbook(builder_playbook("launch.yml"), extra_vars=extra, env={
        "ANSIBLE_COLLECTIONS_PATH": "%s:%s" % (tmp_path / "collections", os.path.join(root, ".build", "collections"))})
    assert result.rc != 0
    message = role_task(result, "Check that amazon.aws has the SSM connection plugin")["msg"]
    assert "amazon.aws 10.0.0 and later" in message and "amazon.aws 9.5.0" in message
    created_nothing(ec2)


def test_an_ssm_builder_gets_a_public_address_for_its_route_out(
        run_playbook, builder_playbook, builder_vars, ec2, iam, aws_proxy, tmp_path):
    # In a default VPC the public address is the builder's only route to SSM, dnf and EBS.
    profile_with_policy(iam, "builder-ssm", UPLOAD_ACTIONS)
    extra = dict(builder_connection="ssm", builder_ssm_bucket="transfer", builder_iam_instance_profile="builder-ssm")
    launched = launch(run_playbook, builder_playbook, builder_vars, endpoint=aws_proxy.url, **extra)
    assert launched.rc == 0, launched.stdout[-4000:]
    [call] = aws_proxy.calls("RunInstances")
    assert call["NetworkInterface.1.AssociatePublicIpAddress"] == "true"
    profile = call.get("IamInstanceProfile.Name") or call.get("IamInstanceProfile.Arn", "")
    assert profile.rsplit("/", 1)[-1] == "builder-ssm"
