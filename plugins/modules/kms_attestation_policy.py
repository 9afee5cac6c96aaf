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
  - "Weaknesses are reported as warnings, or fail with O(strict=true): statements not owned by the module that let
    the same principals run the same operations without attestation (such as the default account-root
    statement); any Allow that lets a recipient operation through without attestation or with the attestation of
    any image, assuming the worst case for conditions on keys other than the PCRs (C(Null), C(StringLike \"*\") or
    C(...IfExists) on PCR keys, unknown keys); C(Principal \"*\") or C(NotPrincipal) allowing a recipient operation,
    whatever its organisation or account conditions; a binding of PCR4 alone, or of the standard-boot PCR7
    without PCR4; an owned statement allowing a recipient operation without the canonical condition."
  - "Hand edits: an owned statement that is not in the form the module writes (an Allow of recipient operations for
    AWS principals, conditioned by C(StringEqualsIgnoreCase) on PCR keys only, one value each), such as a narrowed
    condition or a Deny, is kept as it is with a warning: never replaced, rolled off by O(keep) or removed, unless
    O(force=true)."
  - The boot mode is never inferred from PCR values. It comes from O(boot_mode) or C(measurements.boot_mode); when
    neither states it (for example measurements read from AMI tags), the module refuses.
  - Before writing (and in check mode) the role and user principals of the caller's account are looked up in IAM
    (C(iam:GetRole), C(iam:GetUser)); a principal that does not exist fails the task, since KMS would refuse the
    policy with C(MalformedPolicyDocumentException). Without permission to look them up the module warns and goes
    on. Account roots and principals of other accounts are not looked up.
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
      - Tags are mutable (anyone with C(ec2:CreateTags) on the AMI can rewrite them), so the module always warns
        when it reads measurements from them, refuses when a C(attestable:MeasurementsSHA384) tag does not match
        the measurement tags, checks them against O(expected_measurements_digest) and O(expected_uki_sha256) when
        given, and never takes the boot mode from tags (set O(boot_mode)).
    type: str
    required: true
  measurements:
    description:
      - The reference measurements, as P(attestable.ami.pcr_compute#module) returns them
        (a dict with C(HashAlgorithm=SHA384) and C(PCR4), C(PCR7), C(PCR12), 96 hex characters each).
      - An optional C(boot_mode) key (V(standard) or V(secure_boot), as the manifest's C(measurements.boot_mode)
        holds it) is used when O(boot_mode) is not set.
      - Given measurements always win over the AMI's tags.
    type: dict
  boot_mode:
    description:
      - How instances of the image boot; decides the default O(pcrs) and what is refused.
      - When not set, C(measurements.boot_mode) is used (P(attestable.ami.pcr_compute#module) returns it as
        RV(attestable.ami.pcr_compute#module:boot_mode)). It is never inferred from PCR values nor read from
        tags; when neither states it the module fails and says how to state it.
      - V(secure_boot) is refused when the measured PCR7 equals the standard-boot value
        C(98441c7f...8b77af35), which every instance booted without Secure Boot reports.
    type: str
    choices: [standard, secure_boot]
  pcrs:
    description:
      - The PCRs to bind (C(PCR0) to C(PCR23)).
      - Default V([PCR4, PCR12]) for standard boot and V([PCR7, PCR12]) for Secure Boot (add C(PCR4) to bind one
        exact image under Secure Boot too).
      - A standard-boot binding must include C(PCR4), and C(PCR12) unless O(allow_missing_pcr12=true)
        (advisory GHSA-xrv8-2pf5-f3q7); a Secure Boot binding must include C(PCR7).
    type: list
    elements: str
  expect_nonzero_pcr12:
    description:
      - Accept measurements whose C(PCR12) is not 48 zero bytes. An untampered boot of a UKI with an embedded
        command line extends nothing into PCR12, so by default such measurements are refused (something extended
        PCR12 when the reference was computed).
    type: bool
    default: false
  force:
    description:
      - Replace, roll off or remove owned statements that were edited by hand (see the description). Without it
        they are kept and reported as warnings.
    type: bool
    default: false
  ami_region:
    description:
      - The region of the AMI whose tags are read when O(measurements) is not given (an AMI id names an AMI of
        one region). Default the module's region, which is the key's.
    type: str
  expected_measurements_digest:
    description:
      - When the measurements come from the AMI's tags, the SHA-384 (96 hex) they must hash to together with the
        AMI id; see RV(measurements_digest) for the canonical form. A mismatch fails the task.
      - Keep it where the AMI's tags cannot change it (the manifest, the release notes of the image).
    type: str
  expected_uki_sha256:
    description:
      - When the measurements come from the AMI's tags, the SHA-256 of the image's UKI that its
        C(attestable:UkiSHA256) tag must hold. This catches a mix-up of AMIs, not a deliberate edit of the tags.
    type: str
  check_principals:
    description:
      - Look the principals up in IAM before writing (and in check mode). Set V(false) only where IAM cannot be
        asked.
    type: bool
    default: true
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
  - Use the P(attestable.ami.kms_attestation_allows#filter) filter to check the resulting policy, and
    P(attestable.ami.kms_attestation_binding_failures#filter) to check that the binding refuses what it must.
  - The weakness check looks at the key policy only; IAM policies, grants and SCPs are not inspected.
"""

EXAMPLES = r"""
- name: Let the app role decrypt only from instances of the new image, keeping the previous one
  attestable.ami.kms_attestation_policy:
    key_id: alias/app-secrets
    image: ami-0123456789abcdef0
    measurements: "{{ pcr.measurements }}"
    boot_mode: "{{ pcr.boot_mode }}"
    principals:
      - arn:aws:iam::111122223333:role/AppInstanceRole
    keep: 2
    region: eu-west-1

- name: Bind a key to an AMI's measurements read from its tags, checked against a digest, failing on weak policies
  attestable.ami.kms_attestation_policy:
    key_id: arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab
    image: ami-0123456789abcdef0
    boot_mode: standard
    expected_measurements_digest: "{{ release.measurements_digest }}"
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
measurements_source:
  description: Where the measurements came from, V(measurements) (the option) or V(ami_tags).
  returned: when O(state=present)
  type: str
measurements_digest:
  description:
    - "When O(image) is an AMI id: the SHA-384 (lowercase hex) of the canonical form of the AMI id and the bound
      measurements, i.e. the UTF-8 JSON of C({\"ami_id\": ..., \"HashAlgorithm\": ..., \"PCR<n>\": ...}) with sorted
      keys and no whitespace. This is what the C(attestable:MeasurementsSHA384) tag holds and what
      O(expected_measurements_digest) is compared with."
  returned: when O(state=present) and O(image) is an AMI id
  type: str
kept_hand_edits:
  description: Sids of owned statements edited by hand that were kept as they are (see O(force)).
  returned: always
  type: list
  elements: str
principal_checks:
  description: How each principal was looked up in IAM (C(principal), C(status) = exists, missing, skipped or unchecked, C(detail)).
  returned: when O(state=present)
  type: list
  elements: dict
"""

import json
import re

try:
    import botocore
except ImportError:
    pass  # handled by AnsibleAWSModule

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry
from ansible_collections.amazon.aws.plugins.module_utils.tagging import boto3_tag_list_to_ansible_dict

from ansible_collections.attestable.ami.plugins.module_utils._aws import iam_principals
from ansible_collections.attestable.ami.plugins.module_utils._aws import kms_policy
from ansible_collections.attestable.ami.plugins.module_utils._common import measurements as meas

_AMI_ID = r"^ami-[0-9a-f]{8,17}$"


def describe_key(module, kms):
    key_id = module.params["key_id"]
    try:
        return kms.describe_key(aws_retry=True, KeyId=key_id)["KeyMetadata"]
    except is_boto3_error_code("NotFoundException"):
        module.fail_json(msg="key_id %r: no such KMS key in region %s" % (key_id, module.region))
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:  # pylint: disable=duplicate-except
        module.fail_json_aws(e, msg="key_id %r: cannot describe the KMS key" % key_id)


def measurements_from_ami(module):
    """The measurements in the AMI's tags, cross-checked with the references given; warns that tags are mutable."""
    image = module.params["image"]
    if not image.startswith("ami-"):
        module.fail_json(msg="measurements are required when image %r is not an AMI id (only an AMI's tags can "
                             "supply them)" % image)
    region = module.params["ami_region"] or module.region
    ec2 = module.client("ec2", retry_decorator=AWSRetry.jittered_backoff(), region=region)
    try:
        images = ec2.describe_images(aws_retry=True, ImageIds=[image])["Images"]
    except is_boto3_error_code(["InvalidAMIID.NotFound", "InvalidAMIID.Malformed"]):
        images = []
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:  # pylint: disable=duplicate-except
        module.fail_json_aws(e, msg="image %r: cannot describe the AMI" % image)
    if not images:
        module.fail_json(msg="image %r: no such AMI in region %s to read measurements from; give measurements"
                             % (image, region))
    tags = boto3_tag_list_to_ansible_dict(images[0].get("Tags", []))
    if meas.HASH_ALGORITHM_TAG not in tags:
        module.fail_json(msg="image %r has no %s/%sPCR<n> tags (written by image_register); give "
                             "measurements" % (image, meas.HASH_ALGORITHM_TAG, meas.TAG_PREFIX))
    try:
        measurements, notes = meas.cross_check(image, tags, module.params["expected_measurements_digest"],
                                               module.params["expected_uki_sha256"])
    except meas.TagError as exc:
        module.fail_json(msg=str(exc))
    module.warn("; ".join(notes))
    return measurements


def plan_statement(module):
    """Validate the inputs for state=present and build the image's statement (no AWS calls unless tags are read)."""
    params = module.params
    if params["keep"] < 0:
        raise kms_policy.PolicyError("keep must be 0 (keep all) or a positive number, got %d" % params["keep"])
    kms_policy.normalize_principals(params["principals"])
    kms_policy.normalize_actions(params["actions"])
    kms_policy.statement_id(params["image"])
    measurements, source = params["measurements"], "measurements"
    if measurements is None:
        measurements, source = measurements_from_ami(module), "ami_tags"
    statement, facts = kms_policy.plan_binding(
        params["image"], measurements, params["principals"], params["actions"], boot_mode=params["boot_mode"],
        pcrs=params["pcrs"], allow_missing_pcr12=params["allow_missing_pcr12"],
        expect_nonzero_pcr12=params["expect_nonzero_pcr12"],
        measurements_source="the measurements read from the AMI's tags (tags never state the boot mode)"
        if source == "ami_tags" else "the measurements given")
    if facts["boot_mode"] == "standard" and "PCR12" not in facts["pcrs"]:
        module.warn("binding image %s without PCR12 (allow_missing_pcr12=true): %s"
                    % (params["image"], kms_policy.ADVISORY))
    facts["measurements_source"] = source
    if re.match(_AMI_ID, params["image"]):
        facts["measurements_digest"] = meas.measurements_digest(params["image"], facts["measurements"])
    principals = kms_policy.normalize_principals(params["principals"])
    actions = kms_policy.normalize_actions(params["actions"])
    return statement, principals, actions, facts


def check_principals(module, principals):
    """Look the principals up in IAM; fail when one does not exist, warn when IAM cannot be asked."""
    if not module.params["check_principals"]:
        return []
    try:
        account = module.client("sts").get_caller_identity()["Account"]
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.warn("cannot tell the caller's account to look the principals up in IAM (%s); not checked" % e)
        return []
    iam = module.client("iam", retry_decorator=AWSRetry.jittered_backoff())

    def get_arn(kind, name):
        try:
            if kind == "role":
                return iam.get_role(aws_retry=True, RoleName=name)["Role"]["Arn"]
            return iam.get_user(aws_retry=True, UserName=name)["User"]["Arn"]
        except is_boto3_error_code("NoSuchEntity"):
            return None
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:  # pylint: disable=duplicate-except
            code = getattr(e, "response", {}).get("Error", {}).get("Code", type(e).__name__)
            raise LookupError("IAM answered %s" % code)

    results = iam_principals.check(principals, account, get_arn)
    for result in results:
        if result.status == "unchecked":
            module.warn("principal %s: could not check that it exists (%s); going on" % (result.principal,
                                                                                         result.detail))
    message = iam_principals.missing_message(results)
    checks = [dict(principal=r.principal, status=r.status, detail=r.detail) for r in results]
    if message:
        module.fail_json(msg="image %s: %s; the key policy was not changed" % (module.params["image"], message),
                         principal_checks=checks)
    return checks


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            key_id=dict(type="str", required=True),
            image=dict(type="str", required=True),
            measurements=dict(type="dict"),
            boot_mode=dict(type="str", choices=list(meas.BOOT_MODES)),
            pcrs=dict(type="list", elements="str"),
            allow_missing_pcr12=dict(type="bool", default=False),
            expect_nonzero_pcr12=dict(type="bool", default=False),
            force=dict(type="bool", default=False),
            ami_region=dict(type="str"),
            expected_measurements_digest=dict(type="str"),
            expected_uki_sha256=dict(type="str"),
            check_principals=dict(type="bool", default=True),
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
    principal_checks = check_principals(module, principals) if present else []

    def read():
        try:
            return kms.get_key_policy(aws_retry=True, KeyId=key_arn, PolicyName="default")["Policy"]
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            module.fail_json_aws(e, msg="key_id %r: cannot read the key policy" % params["key_id"])

    def write(text):
        try:
            kms.put_key_policy(aws_retry=True, KeyId=key_arn, PolicyName="default", Policy=text)
        except is_boto3_error_code("MalformedPolicyDocumentException") as e:
            detail = e.response.get("Error", {}).get("Message", "")
            module.fail_json(msg="key_id %r: KMS refused the key policy as malformed (MalformedPolicyDocumentException: "
                                 "%s). The most common cause is a principal that does not exist or that KMS cannot "
                                 "resolve (this policy names %s); check them, or the statement named in the message. "
                                 "The key policy was not changed" % (params["key_id"], detail or "no detail",
                                                                     ", ".join(kms_policy.policy_principals(text))),
                             key_arn=key_arn)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:  # pylint: disable=duplicate-except
            module.fail_json_aws(e, msg="key_id %r: cannot write the key policy" % params["key_id"])

    found = []

    def transform(current):
        merged = kms_policy.merge(current, sid, statement, params["keep"] if present else 0, params["force"])
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

    for message in kms_policy.describe_kept_edits(outcome.merged) + found:
        module.warn(message)
    result = dict(
        changed=outcome.merged.changed,
        key_id=metadata["KeyId"],
        key_arn=key_arn,
        region=key_arn.split(":")[3],
        image=params["image"],
        statement_id=sid,
        removed_statement_ids=outcome.merged.removed,
        kept_hand_edits=[edit[0] for edit in outcome.merged.kept_edits],
        policy=outcome.after,
    )
    if present:
        result.update(facts)
        result["weaknesses"] = list(found)
        result["principal_checks"] = principal_checks
    if module._diff:
        result["diff"] = dict(before=json.dumps(outcome.before, indent=2) + "\n",
                              after=json.dumps(outcome.after, indent=2) + "\n",
                              before_header="%s (key policy)" % key_arn, after_header="%s (key policy)" % key_arn)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
