#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: kms_attestation_policy
short_description: Bind a KMS key to an image's NitroTPM measurements, one key policy statement per image
version_added: 0.1.0
description:
  - Adds (or, with O(state=absent), removes) one statement in a KMS key policy that lets O(principals) run
    O(actions) only with a NitroTPM attestation document whose PCRs equal the image's reference measurements.
  - "The statement conditions C(StringEqualsIgnoreCase) on C(kms:RecipientAttestation:NitroTPMPCR<n>) with one
    lowercase 96-hex value per PCR, never a list, so values of different images cannot be combined."
  - "Ownership: the module owns exactly the statements whose C(Sid) starts with C(AttestableAMI-). The rest of
    the Sid is O(image), with every character outside C([A-Za-z0-9-]) written as C(_) and two hex digits per
    UTF-8 byte (C(_) itself as C(_5f)); for example C(AttestableAMI-ami-0123456789abcdef0). Statements without
    that prefix are never changed, reordered or dropped."
  - Owned statements are kept in authorization order; a new or changed image statement goes to the end of the
    policy, and beyond O(keep) owned statements the oldest are removed (rolling keys forward without an outage).
  - The policy written must still let everyone who administers the key now (C(kms:PutKeyPolicy) without
    attestation) administer it; otherwise the module refuses. It never sets C(BypassPolicyLockoutSafetyCheck).
  - The policy is re-read right before it is written; if it changed meanwhile the merge is done again on the new
    policy. KMS offers no conditional write, so a change landing in the last round trip can still be lost.
  - Statements not owned by the module that let the same principals run the same operations without
    attestation (such as the default account-root statement) are reported as warnings, or fail with O(strict=true).
author:
  - Attestable AMI maintainers (@attestable)
options:
  key_id:
    description:
      - The KMS key, as key id, key ARN or alias (C(alias/NAME)). A multi-Region replica has its own policy;
        name it with its own region.
    type: str
    required: true
  image:
    description:
      - The image the statement is for, an AMI id or name (at most 128 characters). It names the statement
        (see the ownership rule above).
      - When O(measurements) is not given and O(state=present), O(image) must be an AMI id in the module's region
        whose tags C(attestable:HashAlgorithm) and C(attestable:PCR<n>) hold the measurements (as
        P(attestable.ami.image_register#module) writes them).
    type: str
    required: true
  measurements:
    description:
      - The reference measurements, as P(attestable.ami.pcr_compute#module) returns them
        (a dict with C(HashAlgorithm=SHA384) and C(PCR4), C(PCR7), C(PCR12), 96 hex characters each).
      - An optional C(boot_mode) key (V(standard) or V(secure_boot)) is used when O(boot_mode) is not set.
    type: dict
  boot_mode:
    description:
      - How instances of the image boot; decides the default O(pcrs) and what is refused.
      - When not set, C(measurements.boot_mode) is used; without it, V(secure_boot) when the measured PCR7
        differs from the standard-boot constant, else V(standard).
    type: str
    choices: [standard, secure_boot]
  pcrs:
    description:
      - The PCRs to bind (C(PCR0) to C(PCR23)).
      - Default V([PCR4, PCR12]) for standard boot and V([PCR7]) for Secure Boot (add C(PCR4) and C(PCR12) to
        bind one exact image under Secure Boot too).
      - A standard-boot binding must include C(PCR4), and C(PCR12) unless O(allow_missing_pcr12=true)
        (advisory GHSA-xrv8-2pf5-f3q7); a Secure Boot binding must include C(PCR7).
    type: list
    elements: str
  allow_missing_pcr12:
    description:
      - Accept a standard-boot binding without C(PCR12). Whoever can change the instance's UEFI data can then
        inject a kernel command line (disabling dm-verity, for one) without changing PCR4.
    type: bool
    default: false
  principals:
    description:
      - IAM role or user ARNs (or an account's C(:root) ARN) allowed to use the key from an attested instance.
      - Required with O(state=present).
    type: list
    elements: str
  actions:
    description:
      - The operations granted. Only operations whose request carries a NitroTPM attestation document can be
        bound, namely V(kms:Decrypt), V(kms:DeriveSharedSecret), V(kms:GenerateDataKey), V(kms:GenerateDataKeyPair).
      - V(kms:GenerateRandom) is refused; it is not an operation on a key, so no key policy can grant it.
    type: list
    elements: str
    default: [kms:Decrypt, kms:GenerateDataKey]
  keep:
    description:
      - How many image statements owned by this module the key keeps (the one for O(image) included);
        the oldest beyond that are removed. V(0) keeps all.
    type: int
    default: 2
  strict:
    description:
      - Fail, instead of warning, when other statements let the same principals run the same operations
        without attestation.
    type: bool
    default: false
  state:
    description:
      - V(present) adds or updates the image's statement; V(absent) removes it (other statements stay).
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - attestable.ami.attributes
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
notes:
  - Use the P(attestable.ami.kms_attestation_allows#filter) filter to check the resulting policy.
  - The weakness check looks at the key policy only; IAM policies, grants and SCPs are not inspected.
"""

EXAMPLES = r"""
- name: Let the app role decrypt only from instances of the new image, keeping the previous one
  attestable.ami.kms_attestation_policy:
    key_id: alias/app-secrets
    image: ami-0123456789abcdef0
    measurements: "{{ pcr.measurements }}"
    principals:
      - arn:aws:iam::111122223333:role/AppInstanceRole
    keep: 2
    region: eu-west-1

- name: Bind a key to an AMI's measurements read from its tags, failing on weak policies
  attestable.ami.kms_attestation_policy:
    key_id: arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab
    image: ami-0123456789abcdef0
    principals:
      - arn:aws:iam::111122223333:role/AppInstanceRole
    strict: true

- name: Retire an image from a key
  attestable.ami.kms_attestation_policy:
    key_id: alias/app-secrets
    image: ami-0fedcba9876543210
    state: absent
"""

RETURN = r"""
key_id:
  description: The key's id.
  returned: always
  type: str
  sample: 1234abcd-12ab-34cd-56ef-1234567890ab
key_arn:
  description: The key's ARN.
  returned: always
  type: str
region:
  description: The key's region.
  returned: always
  type: str
  sample: eu-west-1
image:
  description: The image identifier (O(image)).
  returned: always
  type: str
statement_id:
  description: The Sid of the statement owned for O(image).
  returned: always
  type: str
  sample: AttestableAMI-ami-0123456789abcdef0
statement:
  description: The statement for O(image) (absent with O(state=absent)).
  returned: when O(state=present)
  type: dict
removed_statement_ids:
  description: Sids of owned statements removed (the image's own with O(state=absent), the oldest beyond O(keep)).
  returned: always
  type: list
  elements: str
policy:
  description: The key policy after the change (or as it would be, in check mode).
  returned: always
  type: dict
weaknesses:
  description: Statements that let the same principals run the same operations without attestation.
  returned: when O(state=present)
  type: list
  elements: str
measurements:
  description: The measurements bound (from O(measurements) or the AMI's tags).
  returned: when O(state=present)
  type: dict
boot_mode:
  description: The boot mode the binding was checked for.
  returned: when O(state=present)
  type: str
pcrs:
  description: The PCRs bound.
  returned: when O(state=present)
  type: list
  elements: str
"""

import json

try:
    import botocore
except ImportError:
    pass  # handled by AnsibleAWSModule

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry
from ansible_collections.amazon.aws.plugins.module_utils.tagging import boto3_tag_list_to_ansible_dict

from ansible_collections.attestable.ami.plugins.module_utils import kms_policy

TAG_PREFIX = "attestable:"


def describe_key(module, kms):
    key_id = module.params["key_id"]
    try:
        return kms.describe_key(aws_retry=True, KeyId=key_id)["KeyMetadata"]
    except is_boto3_error_code("NotFoundException"):
        module.fail_json(msg="key_id %r: no such KMS key in region %s" % (key_id, module.region))
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:  # pylint: disable=duplicate-except
        module.fail_json_aws(e, msg="key_id %r: cannot describe the KMS key" % key_id)


def measurements_from_ami(module):
    image = module.params["image"]
    if not image.startswith("ami-"):
        module.fail_json(msg="measurements are required when image %r is not an AMI id (only an AMI's tags can "
                             "supply them)" % image)
    ec2 = module.client("ec2", retry_decorator=AWSRetry.jittered_backoff())
    try:
        images = ec2.describe_images(aws_retry=True, ImageIds=[image])["Images"]
    except is_boto3_error_code(["InvalidAMIID.NotFound", "InvalidAMIID.Malformed"]):
        images = []
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:  # pylint: disable=duplicate-except
        module.fail_json_aws(e, msg="image %r: cannot describe the AMI" % image)
    if not images:
        module.fail_json(msg="image %r: no such AMI in region %s to read measurements from; give measurements"
                             % (image, module.region))
    tags = boto3_tag_list_to_ansible_dict(images[0].get("Tags", []))
    measurements = dict((k[len(TAG_PREFIX):], v) for k, v in tags.items() if k.startswith(TAG_PREFIX))
    if "HashAlgorithm" not in measurements:
        module.fail_json(msg="image %r has no %sHashAlgorithm/%sPCR<n> tags (written by image_register); give "
                             "measurements" % (image, TAG_PREFIX, TAG_PREFIX))
    return dict((k, v) for k, v in measurements.items() if k == "HashAlgorithm" or k.startswith("PCR"))


def plan_statement(module):
    """Validate the inputs for state=present and build the image's statement (no AWS calls unless tags are read)."""
    params = module.params
    principals = kms_policy.normalize_principals(params["principals"])
    actions = kms_policy.normalize_actions(params["actions"])
    if params["keep"] < 0:
        raise kms_policy.PolicyError("keep must be 0 (keep all) or a positive number, got %d" % params["keep"])
    kms_policy.statement_id(params["image"])
    measurements = params["measurements"]
    if measurements is None:
        measurements = measurements_from_ami(module)
    measurements = kms_policy.prepare_measurements(measurements)
    boot_mode = kms_policy.resolve_boot_mode(params["boot_mode"], measurements)
    pcrs = kms_policy.normalize_pcr_names(params["pcrs"] or kms_policy.DEFAULT_PCRS[boot_mode])
    kms_policy.check_binding(boot_mode, pcrs, measurements, params["allow_missing_pcr12"])
    if boot_mode == "standard" and "PCR12" not in pcrs:
        module.warn("binding image %s without PCR12 (allow_missing_pcr12=true): %s"
                    % (params["image"], kms_policy.ADVISORY))
    statement = kms_policy.build_statement(params["image"], measurements, pcrs, principals, actions)
    facts = dict(measurements=measurements, boot_mode=boot_mode, pcrs=pcrs, statement=statement)
    return statement, principals, actions, facts


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            key_id=dict(type="str", required=True),
            image=dict(type="str", required=True),
            measurements=dict(type="dict"),
            boot_mode=dict(type="str", choices=["standard", "secure_boot"]),
            pcrs=dict(type="list", elements="str"),
            allow_missing_pcr12=dict(type="bool", default=False),
            principals=dict(type="list", elements="str"),
            actions=dict(type="list", elements="str", default=list(kms_policy.DEFAULT_ACTIONS)),
            keep=dict(type="int", default=2),
            strict=dict(type="bool", default=False),
            state=dict(type="str", choices=["present", "absent"], default="present"),
        ),
        required_if=[("state", "present", ["principals"])],
        supports_check_mode=True,
    )
    params = module.params
    present = params["state"] == "present"
    try:
        sid = kms_policy.statement_id(params["image"])
        statement, principals, actions, facts = plan_statement(module) if present else (None, [], [], {})
    except kms_policy.PolicyError as exc:
        module.fail_json(msg=str(exc))

    kms = module.client("kms", retry_decorator=AWSRetry.jittered_backoff())
    metadata = describe_key(module, kms)
    key_arn = metadata["Arn"]

    def read():
        try:
            return kms.get_key_policy(aws_retry=True, KeyId=key_arn, PolicyName="default")["Policy"]
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            module.fail_json_aws(e, msg="key_id %r: cannot read the key policy" % params["key_id"])

    def write(text):
        try:
            kms.put_key_policy(aws_retry=True, KeyId=key_arn, PolicyName="default", Policy=text)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            module.fail_json_aws(e, msg="key_id %r: cannot write the key policy" % params["key_id"])

    found = []

    def transform(current):
        merged = kms_policy.merge(current, sid, statement, params["keep"] if present else 0)
        if merged.changed:
            kms_policy.check_lockout(current, merged.policy)
        if present:
            del found[:]
            found.extend(kms_policy.weaknesses(merged.policy, principals, actions))
            if found and params["strict"]:
                raise kms_policy.PolicyError("strict: refusing to rely on attestation for key %s: %s"
                                             % (key_arn, "; ".join(found)))
        return merged

    try:
        outcome = kms_policy.apply(read, write, transform, check_mode=module.check_mode)
    except kms_policy.PolicyError as exc:
        module.fail_json(msg="key_id %r: %s" % (params["key_id"], exc), key_arn=key_arn)

    for message in found:
        module.warn(message)
    result = dict(
        changed=outcome.merged.changed,
        key_id=metadata["KeyId"],
        key_arn=key_arn,
        region=key_arn.split(":")[3],
        image=params["image"],
        statement_id=sid,
        removed_statement_ids=outcome.merged.removed,
        policy=outcome.after,
    )
    if present:
        result.update(facts)
        result["weaknesses"] = list(found)
    if module._diff:
        result["diff"] = dict(before=json.dumps(outcome.before, indent=2) + "\n",
                              after=json.dumps(outcome.after, indent=2) + "\n",
                              before_header="%s (key policy)" % key_arn, after_header="%s (key policy)" % key_arn)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
