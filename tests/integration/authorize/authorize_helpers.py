# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers for the authorize tests: KMS keys (with chosen policies) and tagged AMIs in the moto server."""
import json

import boto3

ACCOUNT = "123456789012"  # moto's account
APP_ROLE = "arn:aws:iam::%s:role/AppInstanceRole" % ACCOUNT
ADMIN_ROLE = "arn:aws:iam::%s:role/KeyAdmin" % ACCOUNT
ZERO = "0" * 96
STANDARD_PCR7 = "98441c7f7625d10058c47683aec486ce311c633235eb555593a7ee791121e3578ae72d04ecef661f272d59058b77af35"
ADMIN_STATEMENT = {"Sid": "Allow key administration", "Effect": "Allow", "Principal": {"AWS": ADMIN_ROLE},
                   "Action": ["kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*",
                              "kms:Get*", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion"], "Resource": "*"}
ENCRYPT_STATEMENT = {"Sid": "Let the pipeline encrypt", "Effect": "Allow", "Principal": {"AWS": ADMIN_ROLE},
                     "Action": "kms:Encrypt", "Resource": "*"}
SAFE_POLICY = {"Version": "2012-10-17", "Id": "attestation-test", "Statement": [ADMIN_STATEMENT, ENCRYPT_STATEMENT]}


def measurements(pcr4, pcr7=STANDARD_PCR7, pcr12=ZERO, boot_mode="standard"):
    """pcr_compute's measurements with the boot mode it returns, as the manifest records them (boot_mode=None:
    without it, as the AMI's tags carry them)."""
    result = {"HashAlgorithm": "SHA384", "PCR4": pcr4, "PCR7": pcr7, "PCR12": pcr12}
    if boot_mode:
        result["boot_mode"] = boot_mode
    return result


class Aws(object):
    def __init__(self, url):
        self.url = url

    def client(self, service, region="us-east-1"):
        return boto3.client(service, region_name=region, endpoint_url=self.url)

    def create_role(self, arn):
        """An IAM role (moto's IAM) for a principal ARN such as APP_ROLE, so that the module's IAM check finds it."""
        path, name = ("/" + arn.split(":role/", 1)[1]).rsplit("/", 1)
        trust = {"Version": "2012-10-17",
                 "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Service": "ec2.amazonaws.com"}}]}
        return self.client("iam").create_role(RoleName=name, Path=path + "/", AssumeRolePolicyDocument=json.dumps(trust))

    def create_key(self, policy=None, region="us-east-1", multi_region=False):
        kwargs = {"MultiRegion": multi_region}
        if policy is not None:
            kwargs["Policy"] = json.dumps(policy, indent=2)
        return self.client("kms", region).create_key(**kwargs)["KeyMetadata"]

    def replicate(self, key_id, region, replica_region, policy=None):
        kwargs = {"KeyId": key_id, "ReplicaRegion": replica_region}
        if policy is not None:
            kwargs["Policy"] = json.dumps(policy)
        return self.client("kms", region).replicate_key(**kwargs)["ReplicaKeyMetadata"]

    def policy_text(self, key_id, region="us-east-1"):
        return self.client("kms", region).get_key_policy(KeyId=key_id, PolicyName="default")["Policy"]

    def policy(self, key_id, region="us-east-1"):
        return json.loads(self.policy_text(key_id, region))

    def tagged_ami(self, name, m, region="us-east-1"):
        """An AMI carrying the measurement tags image_register writes."""
        ec2 = self.client("ec2", region)
        image_id = ec2.register_image(
            Name=name, RootDeviceName="/dev/xvda", Architecture="x86_64",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": "snap-0123456789abcdef0"}}],
        )["ImageId"]
        tags = [{"Key": "attestable:" + k, "Value": v} for k, v in m.items()]
        ec2.create_tags(Resources=[image_id], Tags=tags)
        return image_id
