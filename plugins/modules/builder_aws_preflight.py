#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Used by the builder role: amazon.aws has no module for DescribeInstanceTypeOfferings, SimulatePrincipalPolicy
# or GetEbsEncryptionByDefault. It only reads; it creates nothing.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: builder_aws_preflight
short_description: Check, before a builder is launched, where its instance type runs and what its instance profile may do
description:
  - Reads where O(instance_type) is offered (DescribeInstanceTypeOfferings, location type availability-zone) and
    returns the candidate O(subnets) in those zones, in launch order.
  - When O(instance_profile) is given, checks that it exists and has a role, and (with O(required_actions)) that the
    role may perform each action, by IAM's policy simulator (SimulatePrincipalPolicy) or, where that is not
    available, by reading the role's inline and attached policies. When the account encrypts new EBS volumes by
    default (GetEbsEncryptionByDefault), O(encryption_actions) are required too.
  - A check that IAM or EC2 refuses (AccessDenied) is reported as a warning and skipped; a profile that does not
    exist or a role that lacks an action fails the module.
  - Read-only; supports check mode.
version_added: 0.1.0
author:
  - Attestable AMI maintainers (@attestable)
options:
  instance_type:
    description: The builder's instance type.
    type: str
    required: true
  subnets:
    description: Candidate subnets (as returned by M(amazon.aws.ec2_vpc_subnet_info)); each needs C(subnet_id) and C(availability_zone).
    type: list
    elements: dict
    required: true
  instance_profile:
    description: Instance profile name or ARN to check (empty skips the IAM checks).
    type: str
    default: ""
  required_actions:
    description: Actions the instance profile's role must be allowed (empty checks only that the profile exists).
    type: list
    elements: str
    default: []
  encryption_actions:
    description: Actions also required when the account encrypts new EBS volumes by default (checked only with O(required_actions)).
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - attestable.ami.attributes
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
attributes:
  check_mode:
    support: full
    details: Only reads; the same checks run in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
"""

EXAMPLES = r"""
- name: Check the launch before creating anything
  attestable.ami.builder_aws_preflight:
    instance_type: m7i.large
    subnets: "{{ found_subnets.subnets }}"
    instance_profile: attestable-builder
    required_actions: [ebs:StartSnapshot, ebs:PutSnapshotBlock, ebs:CompleteSnapshot]
"""

RETURN = r"""
subnets:
  description: The candidate subnets in zones that offer the instance type, sorted by zone and id (all of them when the offerings could not be read).
  returned: always
  type: list
  elements: dict
offered_zones:
  description: Zones of the region that offer the instance type (null when the offerings could not be read).
  returned: always
  type: list
  elements: str
instance_profile:
  description: The checked instance profile (name, arn, roles), or null.
  returned: always
  type: dict
ebs_encryption_by_default:
  description: Whether the account encrypts new EBS volumes by default (null when not read).
  returned: always
  type: bool
permissions:
  description: How the role's permissions were checked (method simulate, policies, unverified or skipped) and which actions.
  returned: always
  type: dict
"""

try:
    import botocore
    import botocore.parsers
except ImportError:
    pass  # AnsibleAWSModule reports the missing botocore

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

from ansible_collections.attestable.ami.plugins.module_utils._aws.builder_preflight import missing_actions
from ansible_collections.attestable.ami.plugins.module_utils._aws.builder_preflight import policy_document
from ansible_collections.attestable.ami.plugins.module_utils._aws.builder_preflight import subnets_in_zones

DENIED = ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnauthorizedAccess")


@AWSRetry.jittered_backoff()
def all_pages(client, operation, result_key, **params):
    """Every page of a paginated call, the whole walk retried on throttling (a paginator's own calls are not)."""
    return client.get_paginator(operation).paginate(**params).build_full_result()[result_key]


class Preflight(object):
    def __init__(self, module):
        self.module = module
        self.ec2 = module.client("ec2", retry_decorator=AWSRetry.jittered_backoff())

    def offered_zones(self, instance_type):
        try:
            offerings = all_pages(self.ec2, "describe_instance_type_offerings", "InstanceTypeOfferings",
                                  LocationType="availability-zone",
                                  Filters=[{"Name": "instance-type", "Values": [instance_type]}])
            return sorted(set(o["Location"] for o in offerings))
        except is_boto3_error_code(DENIED) as error:  # pylint: disable=duplicate-except
            self.module.warn("Could not read where %s is offered (%s); trying the subnets in order."
                             % (instance_type, error.response["Error"]["Code"]))
            return None

    def encryption_by_default(self):
        try:
            return bool(self.ec2.get_ebs_encryption_by_default(aws_retry=True)["EbsEncryptionByDefault"])
        except is_boto3_error_code(DENIED) as error:
            self.module.warn("Could not read whether EBS encrypts by default (%s); the KMS permissions of the "
                             "builder's role were not checked." % error.response["Error"]["Code"])
            return None

    def profile(self, name_or_arn):
        name = name_or_arn.rsplit("/", 1)[-1]
        iam = self.module.client("iam", retry_decorator=AWSRetry.jittered_backoff())
        try:
            profile = iam.get_instance_profile(InstanceProfileName=name, aws_retry=True)["InstanceProfile"]
        except is_boto3_error_code("NoSuchEntity"):
            self.module.fail_json(msg="builder_iam_instance_profile=%s: no instance profile named %s exists in this "
                                      "account; create it (with a role) or correct the name." % (name_or_arn, name))
        except is_boto3_error_code(DENIED) as error:  # pylint: disable=duplicate-except
            self.module.warn("Could not read the instance profile %s (%s); it was not checked before the launch."
                             % (name, error.response["Error"]["Code"]))
            return None
        roles = [{"name": r["RoleName"], "arn": r["Arn"]} for r in profile.get("Roles", [])]
        if not roles:
            self.module.fail_json(msg="builder_iam_instance_profile=%s has no role: the builder would get no AWS "
                                      "credentials. Add a role to it (iam add-role-to-instance-profile)." % name_or_arn)
        return {"name": profile["InstanceProfileName"], "arn": profile["Arn"], "roles": roles}

    def simulate(self, role_arn, actions):
        # Few retries: where the simulator is unavailable the role's policies are read instead.
        iam = self.module.client("iam", config={"retries": {"max_attempts": 2, "mode": "standard"}})
        decisions = {}
        params = {"PolicySourceArn": role_arn, "ActionNames": actions}
        while True:
            page = iam.simulate_principal_policy(**params)
            for result in page.get("EvaluationResults", []):
                decisions[result["EvalActionName"]] = result["EvalDecision"]
            if not page.get("IsTruncated"):
                break
            params["Marker"] = page["Marker"]
        return [a for a in actions if decisions.get(a) != "allowed"]

    def read_policies(self, role_name):
        iam = self.module.client("iam", retry_decorator=AWSRetry.jittered_backoff())
        documents = []
        for policy_name in all_pages(iam, "list_role_policies", "PolicyNames", RoleName=role_name):
            inline = iam.get_role_policy(RoleName=role_name, PolicyName=policy_name, aws_retry=True)
            documents.append(policy_document(inline["PolicyDocument"]))
        for attached in all_pages(iam, "list_attached_role_policies", "AttachedPolicies", RoleName=role_name):
            policy = iam.get_policy(PolicyArn=attached["PolicyArn"], aws_retry=True)["Policy"]
            version = iam.get_policy_version(PolicyArn=attached["PolicyArn"], VersionId=policy["DefaultVersionId"],
                                             aws_retry=True)
            documents.append(policy_document(version["PolicyVersion"]["Document"]))
        return documents

    def permissions(self, role, actions):
        try:
            return {"method": "simulate", "missing": self.simulate(role["arn"], actions)}
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError,
                botocore.parsers.ResponseParserError) as error:  # an endpoint without the simulator answers junk
            reason = error.response["Error"]["Code"] if isinstance(error, botocore.exceptions.ClientError) else str(error)[:200]
        try:
            return {"method": "policies", "missing": missing_actions(self.read_policies(role["name"]), actions),
                    "simulator_unavailable": reason}
        except is_boto3_error_code(DENIED) as error:
            self.module.warn("Could not check what the role %s of the builder's instance profile may do: the policy "
                             "simulator answered %s and reading its policies %s. Make sure it allows %s."
                             % (role["name"], reason, error.response["Error"]["Code"], ", ".join(actions)))
            return {"method": "unverified", "missing": [], "simulator_unavailable": reason}


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            instance_type=dict(type="str", required=True),
            subnets=dict(type="list", elements="dict", required=True),
            instance_profile=dict(type="str", default=""),
            required_actions=dict(type="list", elements="str", default=[]),
            encryption_actions=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    params = module.params
    checks = Preflight(module)
    result = {"changed": False, "offered_zones": None, "instance_profile": None, "ebs_encryption_by_default": None,
              "permissions": {"method": "skipped", "actions": [], "missing": []}}

    try:
        zones = checks.offered_zones(params["instance_type"])
        result["offered_zones"] = zones
        subnets = subnets_in_zones(params["subnets"], zones)
        if zones is not None:
            if not subnets:
                every = subnets_in_zones(params["subnets"], None)
                module.fail_json(
                    msg="Instance type %s is not offered in the availability zone of any candidate subnet (%s); it is "
                        "offered in %s. Choose builder_subnet_id in one of those zones, or another builder_instance_type."
                        % (params["instance_type"],
                           ", ".join("%s in %s" % (s.get("subnet_id"), s.get("availability_zone")) for s in every),
                           ", ".join(zones) or "no zone of this region"), **result)
        result["subnets"] = subnets

        if params["instance_profile"]:
            profile = checks.profile(params["instance_profile"])
            result["instance_profile"] = profile
            actions = list(params["required_actions"])
            if profile and actions:
                result["ebs_encryption_by_default"] = checks.encryption_by_default()
                if result["ebs_encryption_by_default"]:
                    actions.extend(a for a in params["encryption_actions"] if a not in actions)
                missing = []
                for role in profile["roles"]:
                    found = checks.permissions(role, actions)
                    result["permissions"] = dict(found, actions=actions, role=role["arn"])
                    missing = found["missing"]
                if missing:
                    module.fail_json(
                        msg="The role %s of builder_iam_instance_profile=%s may not %s (checked by %s)%s; the upload "
                            "from the builder needs them. Allow them in the role's policy (see docs/first-run-on-aws.md)."
                            % (result["permissions"]["role"], params["instance_profile"], ", ".join(missing),
                               "IAM's policy simulator" if result["permissions"]["method"] == "simulate"
                               else "reading its policies",
                               " (the account encrypts EBS by default, so the KMS actions are needed too)"
                               if result["ebs_encryption_by_default"] else ""), **result)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
        module.fail_json_aws(error, msg="Checking the builder's launch settings failed")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
