# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The policy reading behind the builder's pre-launch permission check (plugins/module_utils/_aws/builder_preflight.py),
used where IAM's policy simulator is not available. Plain Python: no AWS."""
import json
from urllib.parse import quote

import pytest

from ansible_collections.attestable.ami.plugins.module_utils._aws.builder_preflight import (
    action_matches, missing_actions, policy_document, subnets_in_zones)

UPLOAD = ["ebs:StartSnapshot", "ebs:PutSnapshotBlock", "ebs:CompleteSnapshot", "ec2:DescribeSnapshots",
          "ec2:CreateTags", "ec2:DeleteSnapshot"]


def allow(actions, **extra):
    return dict({"Effect": "Allow", "Action": actions, "Resource": "*"}, **extra)


def doc(*statements):
    return {"Version": "2012-10-17", "Statement": list(statements)}


@pytest.mark.parametrize("pattern, action, expected", [
    ("ebs:*", "ebs:PutSnapshotBlock", True),
    ("EBS:putsnapshotblock", "ebs:PutSnapshotBlock", True),
    ("ebs:Put*Block", "ebs:PutSnapshotBlock", True),
    ("ec2:DeleteSnapsho?", "ec2:DeleteSnapshot", True),
    ("*", "kms:CreateGrant", True),
    ("ebs:Start*", "ebs:PutSnapshotBlock", False),
    ("ec2:Delete[S]napshot", "ec2:DeleteSnapshot", False),  # no bracket classes in IAM
    ("ebs:PutSnapshot", "ebs:PutSnapshotBlock", False),
])
def test_action_patterns_follow_iam(pattern, action, expected):
    assert action_matches(pattern, action) is expected


def test_everything_allowed_by_wildcards_and_lists():
    documents = [doc(allow("ebs:*")), doc(allow(["ec2:DescribeSnapshots", "ec2:CreateTags", "ec2:DeleteSnapshot"]))]
    assert missing_actions(documents, UPLOAD) == []


def test_a_missing_action_is_reported_and_a_deny_wins():
    documents = [doc(allow(["ebs:StartSnapshot", "ebs:CompleteSnapshot", "ec2:*"]))]
    assert missing_actions(documents, UPLOAD) == ["ebs:PutSnapshotBlock"]
    denied = documents + [doc({"Effect": "Deny", "Action": "ec2:DeleteSnapshot", "Resource": "*"})]
    assert missing_actions(denied, UPLOAD) == ["ebs:PutSnapshotBlock", "ec2:DeleteSnapshot"]


def test_a_conditional_or_resource_scoped_deny_is_not_taken_as_a_refusal():
    documents = [doc(allow("*"),
                     {"Effect": "Deny", "Action": "ec2:DeleteSnapshot", "Resource": "*",
                      "Condition": {"StringNotEquals": {"aws:ResourceTag/owner": "builder"}}},
                     {"Effect": "Deny", "Action": "ebs:*", "Resource": "arn:aws:ec2:*::snapshot/snap-0123"})]
    assert missing_actions(documents, UPLOAD) == []


def test_not_action_allows_everything_else():
    documents = [doc({"Effect": "Allow", "NotAction": ["iam:*", "ebs:PutSnapshotBlock"], "Resource": "*"})]
    assert missing_actions(documents, UPLOAD) == ["ebs:PutSnapshotBlock"]


def test_policy_documents_are_read_as_iam_returns_them():
    document = doc(allow("ebs:*"))
    assert policy_document(document) == document
    assert policy_document(quote(json.dumps(document))) == document


def test_subnets_are_ordered_by_zone_and_kept_only_where_the_type_is_offered():
    subnets = [{"subnet_id": "subnet-2", "availability_zone": "eu-west-1b"},
               {"subnet_id": "subnet-1", "availability_zone": "eu-west-1c"},
               {"subnet_id": "subnet-3", "availability_zone": "eu-west-1a"}]
    assert [s["subnet_id"] for s in subnets_in_zones(subnets, ["eu-west-1a", "eu-west-1c"])] == ["subnet-3", "subnet-1"]
    assert [s["subnet_id"] for s in subnets_in_zones(subnets, None)] == ["subnet-3", "subnet-2", "subnet-1"]
    assert subnets_in_zones(subnets, []) == []
