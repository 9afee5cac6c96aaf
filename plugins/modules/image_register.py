#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: image_register
short_description: Register a NitroTPM/UEFI AMI from a snapshot, record its measurements, copy and share it
version_added: 0.1.0
description:
  - Registers an AMI from an EBS snapshot with UEFI boot, NitroTPM 2.0, ENA and IMDSv2 only, as an attestable
    image needs, and records the reference measurements (the M(attestable.ami.pcr_compute) result) as tags
    C(attestable:HashAlgorithm) and C(attestable:PCR<n>) so that later runs can read them from the AMI.
    The source snapshot is recorded as C(attestable:SnapshotId). Each AMI also gets
    C(attestable:MeasurementsSHA384), the SHA-384 of the canonical measurements and that AMI's id (see
    M(attestable.ami.kms_attestation_policy)'s RV(attestable.ami.kms_attestation_policy#module:measurements_digest)),
    returned per region in RV(measurements_digests) so that a reference can be kept outside the mutable tags.
  - Idempotent by name. An AMI with the same name, snapshot and measurements is kept; one with different content
    is an error that suggests a new name (the old one plus the snapshot id), or removing the old AMI with
    O(state=absent) first. The C(attestable.ami.image_publish) role's default name carries the build's digest,
    so a rebuild gets a new name.
  - Copies the AMI to O(regions) (the copies carry the same tags) and shares the AMI and its copies with exactly
    the accounts, organizations and organizational units in O(launch_permissions).
  - Waits until the images are available; images registered or copied by a run that fails are deregistered,
    and the snapshots CopyImage made for the copies are deleted (the snapshot given in O(snapshot_id) is kept).
  - After copying, reads each copy back and compares its C(BootMode), C(TpmSupport) and C(ImdsSupport) with the
    source's, and its C(UefiData) with O(uefi_data) when given; a copy that lost any of them is an error (and a
    copy made by this run is removed).
  - EC2 is eventually consistent; an AMI just registered or copied, and a snapshot just made, may answer
    C(InvalidAMIID.NotFound) / C(InvalidSnapshot.NotFound) for a while. Reading back, tagging, sharing and
    waiting retry those answers for resources this run made (and for O(snapshot_id)).
author:
  - Attestable AMI maintainers (@attestable)
options:
  name:
    description:
      - Name of the AMI (unique per account and region), also used for its copies.
    type: str
    required: true
  state:
    description:
      - V(present) registers (or keeps) the AMI and its copies; V(absent) deregisters the AMI with this name in
        the region and in O(regions).
    type: str
    choices: [present, absent]
    default: present
  snapshot_id:
    description:
      - The snapshot holding the disk (for example M(attestable.ami.snapshot_upload)'s RV(ignore:snapshot_id)).
      - Required when O(state=present).
    type: str
  architecture:
    description:
      - CPU architecture of the image. V(arm64) and V(aarch64) are the same (EC2 calls it V(arm64)).
    type: str
    choices: [x86_64, arm64, aarch64]
    default: x86_64
  root_device_name:
    description:
      - Device name of the root volume.
    type: str
    default: /dev/xvda
  volume_size:
    description:
      - Size of the root volume in GiB (default the snapshot's size).
    type: int
  volume_type:
    description:
      - EBS volume type of the root volume.
    type: str
    default: gp3
  boot_mode:
    description:
      - Boot mode. NitroTPM needs UEFI.
    type: str
    choices: [uefi]
    default: uefi
  tpm_support:
    description:
      - NitroTPM version.
    type: str
    choices: ['v2.0']
    default: 'v2.0'
  ena_support:
    description:
      - Enable enhanced networking with ENA.
    type: bool
    default: true
  imds_support:
    description:
      - V(v2.0) makes instances launched from the AMI require IMDSv2. V(optional) sends no C(ImdsSupport), so
        instances accept IMDSv1 too.
    type: str
    choices: ['v2.0', optional]
    default: 'v2.0'
  uefi_data:
    description:
      - Base64 UEFI variable store (PK, KEK, db, dbx), needed only for Secure Boot, as python-uefivars writes it
        (C(uefivars -i edk2 -o aws ...)).
      - At most 64,000 characters (EC2's limit). Checked before anything is sent - the magic C(AMZNUEFI), the
        CRC32C over the rest of the blob, version 0, and a zlib header on the payload; the compressed variables
        themselves are not decoded.
    type: str
  description:
    description:
      - Description of the AMI and its copies.
    type: str
  tags:
    description:
      - Tags for the AMI and its copies, besides the C(attestable:) tags this module writes. Existing tags not
        listed are kept unless O(purge_tags=true).
      - Values that are numbers or booleans are written as their text (V(42), V(True)).
    type: dict
    aliases: ['resource_tags']
  purge_tags:
    description:
      - Remove the tags of an existing AMI (and its copies) that neither O(tags) nor this module's C(attestable:)
        tags list (needs C(ec2:DeleteTags)). Tag keys beginning with V(aws:) are never removed.
      - The default keeps tags others have set, unlike amazon.aws's modules.
    type: bool
    default: false
  measurements:
    description:
      - >-
        Reference measurements as M(attestable.ami.pcr_compute) returns them,
        C({"HashAlgorithm": "SHA384", "PCR4": "<96 hex>", "PCR7": ..., "PCR12": ...}); other keys are ignored.
    type: dict
  regions:
    description:
      - Other regions to copy the AMI to. The copies get the same name and tags.
      - With O(state=absent), the regions to deregister the AMI from as well.
    type: list
    elements: str
    default: []
  launch_permissions:
    description:
      - Who may launch the AMI and its copies, exactly. Items are 12-digit account ids, organization ARNs
        (C(arn:aws:organizations::<account>:organization/o-...)) or organizational unit ARNs
        (C(arn:aws:organizations::<account>:ou/o-.../ou-...)). Permissions not listed are removed.
      - Not set, the launch permissions are left as they are. V([]) makes the AMI private again.
    type: list
    elements: str
  delete_snapshots:
    description:
      - With O(state=absent), also delete the snapshots of the deregistered AMIs - only those in each AMI's own
        block device mappings, never one named by a tag (tags can be written by anyone with C(ec2:CreateTags)).
    type: bool
    default: false
  wait:
    description:
      - Wait until the AMI and its copies are C(available).
    type: bool
    default: true
  wait_timeout:
    description:
      - How long to wait for each image, in seconds.
    type: int
    default: 1800
extends_documentation_fragment:
  - attestable.ami.attributes
  - amazon.aws.tags
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
  - RegisterImage keeps C(TpmSupport), C(BootMode), C(ImdsSupport) and C(UefiData) for the life of the AMI, and
    they carry over to copies.
"""

EXAMPLES = r"""
- name: Register the attestable AMI and copy it to a second region
  attestable.ami.image_register:
    name: attestable-al2023-1.0.0
    snapshot_id: "{{ snapshot.snapshot_id }}"
    architecture: x86_64
    measurements: "{{ pcr.measurements }}"
    regions: [eu-central-1]
    launch_permissions:
      - "111122223333"
      - arn:aws:organizations::111122223333:ou/o-exampleorgid/ou-exampleroot-exampleouid
    region: eu-west-1
  register: ami

- name: Remove the AMI everywhere, with its snapshots
  attestable.ami.image_register:
    name: attestable-al2023-1.0.0
    state: absent
    regions: [eu-central-1]
    delete_snapshots: true
    region: eu-west-1
"""

RETURN = r"""
image_id:
  description: The AMI in the module's region.
  returned: when O(state=present), except in check mode when it does not exist yet
  type: str
  sample: ami-0123456789abcdef0
region:
  description: The module's region (where the AMI was registered from the snapshot).
  returned: always
  type: str
  sample: eu-west-1
images:
  description: Region to AMI id, for the module's region and every copy region.
  returned: always
  type: dict
  sample: {"eu-west-1": "ami-0123456789abcdef0", "eu-central-1": "ami-0fedcba9876543210"}
tags:
  description: The tags the AMIs carry (user tags and C(attestable:) tags), besides the per-AMI
    C(attestable:MeasurementsSHA384).
  returned: when O(state=present)
  type: dict
measurements_digests:
  description: Region to the C(attestable:MeasurementsSHA384) value of that region's AMI (the SHA-384 of the
    canonical measurements and the AMI id), for keeping as a reference.
  returned: when O(state=present) and O(measurements) is set, except in check mode for AMIs not made yet
  type: dict
  sample: {"eu-west-1": "3c1b...e9"}
launch_permissions:
  description: Who may launch the AMIs after this run (account ids and ARNs).
  returned: when O(state=present) and O(launch_permissions) is set
  type: list
  elements: str
deleted_snapshots:
  description: Snapshots deleted (O(state=absent) with O(delete_snapshots=true)).
  returned: when O(state=absent)
  type: list
  elements: str
"""

try:
    import botocore.exceptions

    AWS_ERRORS = (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError)
except ImportError:
    AWS_ERRORS = ()  # AnsibleAWSModule reports the missing dependency

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.ec2 import AnsibleEC2Error
from ansible_collections.amazon.aws.plugins.module_utils.ec2 import add_ec2_tags
from ansible_collections.amazon.aws.plugins.module_utils.ec2 import describe_images
from ansible_collections.amazon.aws.plugins.module_utils.ec2 import remove_ec2_tags
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry
from ansible_collections.amazon.aws.plugins.module_utils.tagging import compare_aws_tags
from ansible_collections.amazon.aws.plugins.module_utils.waiters import get_waiter

from ansible_collections.attestable.ami.plugins.module_utils._aws import ami_registration as reg
from ansible_collections.attestable.ami.plugins.module_utils._aws import ebs_upload
from ansible_collections.attestable.ami.plugins.module_utils._common import measurements as measurement_tags

# EC2 is eventually consistent: an AMI just registered or copied answers InvalidAMIID.NotFound for a few seconds,
# a snapshot just completed InvalidSnapshot.NotFound. Calls on resources this run made (and on the given snapshot)
# retry those; amazon.aws's image_available waiter retries InvalidAMIID.NotFound itself.
NEW_IMAGE_RETRY = AWSRetry.jittered_backoff(retries=8, delay=1, max_delay=15,
                                            catch_extra_error_codes=["InvalidAMIID.NotFound",
                                                                     "InvalidAMIID.Unavailable"])
NEW_SNAPSHOT_RETRY = AWSRetry.jittered_backoff(retries=4, delay=1, max_delay=8,
                                               catch_extra_error_codes=["InvalidSnapshot.NotFound"])


class _CleanupFirst(object):
    """The module as amazon.aws's tag helpers see it: their failures go through Publisher.fail, which first
    removes what this run registered or copied."""

    def __init__(self, publisher, region):
        self.publisher = publisher
        self.region = region
        self.check_mode = publisher.module.check_mode

    def fail_json_aws(self, exception, msg):
        self.publisher.fail("%s in %s" % (msg, self.region), exception)


class Publisher(object):
    """One AMI name across regions: look up, register or copy, tag, share, deregister."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.region = module.region
        self.clients = {}
        self.created = []  # (region, image_id, copied) registered or copied by this run, for cleanup
        self.changed = False
        self.before = {}
        self.after = {}

    def ec2(self, region):
        if region not in self.clients:
            self.clients[region] = self.module.client("ec2", region=region,
                                                      retry_decorator=AWSRetry.jittered_backoff())
        return self.clients[region]

    def fail(self, msg, exc=None, **extra):
        self.cleanup()
        if exc is not None:
            self.module.fail_json_aws(exc, msg=msg, **extra)
        self.module.fail_json(msg=msg, **extra)

    def is_new(self, region, image_id):
        return any(r == region and i == image_id for r, i, _copied in self.created)

    def call(self, region, method, image_id=None, **kwargs):
        """An EC2 call; on an image this run made, InvalidAMIID.NotFound is retried (eventual consistency)."""
        client = self.ec2(region)
        if image_id is not None and self.is_new(region, image_id):
            return NEW_IMAGE_RETRY(getattr(client, method))(**kwargs)
        return getattr(client, method)(aws_retry=True, **kwargs)

    def cleanup(self):
        """Deregister what this run registered or copied; a copy's snapshots (made by CopyImage) go too, the
        snapshot the caller gave for the registration stays."""
        for region, image_id, copied in reversed(self.created):
            snapshots = []
            try:
                if copied:
                    snapshots = reg.snapshots_of(self.describe(region, image_id) or {})
                self.call(region, "deregister_image", image_id, ImageId=image_id)
            except AWS_ERRORS:
                self.module.warn("Could not deregister %s in %s after the failure; deregister it (and delete its "
                                 "snapshots) by hand" % (image_id, region))
                continue
            for snapshot_id in snapshots:
                try:
                    self.ec2(region).delete_snapshot(SnapshotId=snapshot_id, aws_retry=True)
                except is_boto3_error_code("InvalidSnapshot.NotFound"):
                    pass
                except AWS_ERRORS:  # pylint: disable=duplicate-except
                    self.module.warn("Could not delete snapshot %s of the deregistered copy %s in %s after the "
                                     "failure; delete it by hand" % (snapshot_id, image_id, region))
        self.created = []

    def describe(self, region, image_id):
        """The DescribeImages entry of one image (None when it does not exist)."""
        images = self.call(region, "describe_images", image_id, ImageIds=[image_id])["Images"]
        return images[0] if images else None

    def find(self, region):
        try:  # amazon.aws's describe_images: every page, retried
            images = describe_images(self.ec2(region), Owners=["self"],
                                     Filters=[{"Name": "name", "Values": [self.params["name"]]}])
        except AnsibleEC2Error as e:
            self.fail("Failed to look up AMI %r in %s" % (self.params["name"], region), e.exception)
        images = [i for i in images if i.get("State") not in ("deregistered",)]
        return images[0] if images else None

    # ---- present

    def check_snapshot(self):
        snapshot_id = self.params["snapshot_id"]
        try:
            snaps = NEW_SNAPSHOT_RETRY(self.ec2(self.region).describe_snapshots)(SnapshotIds=[snapshot_id])["Snapshots"]
        except is_boto3_error_code(["InvalidSnapshot.NotFound", "InvalidSnapshotID.Malformed"]):
            snaps = []
        except AWS_ERRORS as e:  # pylint: disable=duplicate-except
            self.fail("Failed to look up snapshot %s" % snapshot_id, e)
        if not snaps:
            self.fail("snapshot_id: snapshot %s was not found in %s (upload the disk first with "
                      "attestable.ami.snapshot_upload, in the same region)" % (snapshot_id, self.region))
        snap = snaps[0]
        if snap.get("State") == "error":
            self.fail("snapshot_id: snapshot %s is in state 'error'; upload the disk again" % snapshot_id)
        if snap.get("State") != "completed" and not self.module.check_mode:
            self.wait("snapshot_completed", self.region, SnapshotIds=[snapshot_id])
        return snap

    def wait(self, waiter, region, **kwargs):
        delay = 5
        try:
            client = self.ec2(region)
            # amazon.aws's image_available retries InvalidAMIID.NotFound; ours for snapshots InvalidSnapshot.NotFound
            found = (ebs_upload.snapshot_completed_waiter(client) if waiter == "snapshot_completed"
                     else get_waiter(client, waiter))
            found.wait(
                WaiterConfig={"Delay": delay, "MaxAttempts": max(1, self.params["wait_timeout"] // delay)}, **kwargs)
        except botocore.exceptions.WaiterError as e:
            what = ", ".join(kwargs.get("ImageIds", []) + kwargs.get("SnapshotIds", []))
            self.fail("%s in %s did not become %s within %d seconds: %s"
                      % (what, region, "available" if waiter == "image_available" else "completed",
                         self.params["wait_timeout"], e))

    def tags_for(self, image_id, desired):
        """The tags one AMI gets: the shared ones plus the digest of the measurements bound to its id."""
        if not image_id or self.params["measurements"] is None:
            return desired
        return dict(desired, **measurement_tags.digest_tags(image_id, self.params["measurements"]))

    def ensure_tags(self, region, image_id, current, desired):
        """Set missing or different tags (and with purge_tags remove unlisted ones) on one AMI.

        amazon.aws's compare_aws_tags / add_ec2_tags / remove_ec2_tags on the tags DescribeImages already
        returned: ensure_ec2_tags would read them again with DescribeTags (another call and IAM action)."""
        desired = self.tags_for(image_id, desired)
        to_set, to_unset = compare_aws_tags(current, desired, purge_tags=self.params["purge_tags"])
        if not to_set and not to_unset:
            return
        self.changed = True
        retry_codes = ["InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"] if self.is_new(region, image_id) else []
        module = _CleanupFirst(self, region)
        remove_ec2_tags(self.ec2(region), module, image_id, to_unset, retry_codes=retry_codes)
        add_ec2_tags(self.ec2(region), module, image_id, to_set, retry_codes=retry_codes)

    def ensure_permissions(self, region, image_id, desired):
        if desired is None:
            return None
        current = []
        if image_id:
            try:
                current = self.call(region, "describe_image_attribute", image_id, ImageId=image_id,
                                    Attribute="launchPermission").get("LaunchPermissions", [])
            except AWS_ERRORS as e:
                self.fail("Failed to read the launch permissions of %s in %s" % (image_id, region), e)
        add, remove = reg.launch_permission_changes(current, desired)
        self.before.setdefault(region, {})["launch_permissions"] = reg.permission_strings(current)
        self.after.setdefault(region, {})["launch_permissions"] = reg.permission_strings(desired)
        if not add and not remove:
            return reg.permission_strings(desired)
        self.changed = True
        if not self.module.check_mode:
            change = {}
            if add:
                change["Add"] = add
            if remove:
                change["Remove"] = remove
            try:
                self.call(region, "modify_image_attribute", image_id, ImageId=image_id, LaunchPermission=change)
            except AWS_ERRORS as e:
                self.fail("Failed to share %s in %s" % (image_id, region), e)
        return reg.permission_strings(desired)

    def check_existing(self, region, image, desired_tags):
        problems = reg.image_differences(image, desired_tags, self.params["architecture"],
                                         check_measurements=self.params["measurements"] is not None)
        if problems:
            self.fail("An AMI named %r already exists in %s (%s) with different content: %s. AMI names are unique "
                      "per account and region: change name (the image_publish role's image_publish_name; its "
                      "default carries the build's digest) to one not used yet, for example %r, or deregister %s "
                      "first with state: absent (delete_snapshots: true also deletes its snapshots)."
                      % (self.params["name"], region, image["ImageId"], "; ".join(problems),
                         reg.suggested_name(self.params["name"], self.params["snapshot_id"]), image["ImageId"]))

    def present(self):
        params = self.params
        desired_tags = reg.image_tags(params["tags"], params["measurements"], params["snapshot_id"])
        permissions = (reg.parse_launch_permissions(params["launch_permissions"])
                       if params["launch_permissions"] is not None else None)
        waiting = params["wait"] and not self.module.check_mode
        images = {}

        image = self.find(self.region)
        self.before[self.region] = {"image_id": image["ImageId"]} if image else {}
        if image:
            self.check_existing(self.region, image, desired_tags)
            image_id = image["ImageId"]
            self.ensure_tags(self.region, image_id, reg.tag_dict(image.get("Tags")), desired_tags)
            if image.get("State") == "pending" and waiting:
                self.wait("image_available", self.region, ImageIds=[image_id])  # before copying it
        else:
            snap = self.check_snapshot()
            request = reg.build_register_request(
                params["name"], params["snapshot_id"], params["architecture"], desired_tags,
                root_device_name=params["root_device_name"],
                volume_size=params["volume_size"] or snap.get("VolumeSize"), volume_type=params["volume_type"],
                description=params["description"], uefi_data=params["uefi_data"], boot_mode=params["boot_mode"],
                tpm_support=params["tpm_support"], ena_support=params["ena_support"],
                imds_support=params["imds_support"])
            self.changed = True
            image_id = None
            if not self.module.check_mode:
                try:
                    image_id = self.ec2(self.region).register_image(aws_retry=True, **request)["ImageId"]
                except AWS_ERRORS as e:
                    self.fail("Failed to register AMI %r from %s" % (params["name"], params["snapshot_id"]), e)
                self.created.append((self.region, image_id, False))
                if waiting:
                    self.wait("image_available", self.region, ImageIds=[image_id])
                # Some endpoints drop TagSpecifications on RegisterImage: make sure the tags are there.
                self.ensure_tags(self.region, image_id, self.current_tags(self.region, image_id), desired_tags)
        if image_id:
            images[self.region] = image_id
        self.after[self.region] = {"image_id": image_id or "(new)", "tags": desired_tags}

        copies = {}
        for region in reg.validate_regions(params["regions"], self.region):
            copy = self.find(region)
            self.before[region] = {"image_id": copy["ImageId"]} if copy else {}
            if copy:
                self.check_existing(region, copy, desired_tags)
                copies[region] = copy["ImageId"]
                self.ensure_tags(region, copy["ImageId"], reg.tag_dict(copy.get("Tags")), desired_tags)
            else:
                self.changed = True
                if not self.module.check_mode:
                    request = reg.build_copy_request(params["name"], image_id, self.region, desired_tags,
                                                     params["description"])
                    try:
                        copies[region] = self.ec2(region).copy_image(aws_retry=True, **request)["ImageId"]
                    except AWS_ERRORS as e:
                        self.fail("Failed to copy %s to %s" % (image_id, region), e)
                    self.created.append((region, copies[region], True))
            self.after[region] = {"image_id": copies.get(region, "(new)"), "tags": desired_tags}
        images.update(copies)

        if copies and not self.module.check_mode:
            source = self.read_back(self.region, image_id)
            for region in sorted(copies):
                if waiting and self.is_new(region, copies[region]):
                    self.wait("image_available", region, ImageIds=[copies[region]])
                copy = self.read_back(region, copies[region])
                self.check_copy(region, source, copy)
                self.ensure_tags(region, copies[region], reg.tag_dict(copy.get("Tags")), desired_tags)

        shared = None
        for region in [self.region] + sorted(copies):
            shared = self.ensure_permissions(region, images.get(region), permissions)

        result = dict(changed=self.changed, images=images, tags=desired_tags)
        if params["measurements"] is not None:
            result["measurements_digests"] = dict(
                (region, measurement_tags.measurements_digest(ami, params["measurements"]))
                for region, ami in images.items())
        if image_id:
            result["image_id"] = image_id
        if shared is not None:
            result["launch_permissions"] = shared
        return result

    def read_back(self, region, image_id):
        try:
            image = self.describe(region, image_id)
        except AWS_ERRORS as e:
            self.fail("Failed to read back %s in %s" % (image_id, region), e)
        if image is None:
            self.fail("%s in %s is not there any more (it was deregistered during this run?)" % (image_id, region))
        return image

    def uefi_data_of(self, region, image_id):
        try:
            response = self.call(region, "describe_image_attribute", image_id, ImageId=image_id, Attribute="uefiData")
        except AWS_ERRORS as e:
            self.fail("Failed to read the UEFI data of %s in %s" % (image_id, region), e)
        return (response.get("UefiData") or {}).get("Value")

    def check_copy(self, region, source, copy):
        """A copy must keep the source's BootMode, TpmSupport, ImdsSupport and (when given) UefiData: CopyImage
        has been seen to drop them, and a copy without them does not boot measured or attest."""
        uefi_data = self.params["uefi_data"]
        copy_uefi = self.uefi_data_of(region, copy["ImageId"]) if uefi_data else None
        losses = reg.copy_losses(source, copy, uefi_data, copy_uefi)
        if losses:
            new = self.is_new(region, copy["ImageId"])
            self.fail("The copy %s of %s in %s lost %s. %s"
                      % (copy["ImageId"], source["ImageId"], region, ", ".join(losses),
                         "It was deregistered and its snapshots deleted; copy again, or register from the snapshot "
                         "in that region." if new else
                         "Remove it with state: absent (delete_snapshots: true) and run again."))

    def current_tags(self, region, image_id):
        try:
            image = self.describe(region, image_id)
        except AWS_ERRORS as e:
            self.fail("Failed to read back %s in %s" % (image_id, region), e)
        return reg.tag_dict(image.get("Tags")) if image else {}

    # ---- absent

    def absent(self):
        images = {}
        deleted = []
        regions = [self.region] + reg.validate_regions(self.params["regions"], self.region)
        for region in regions:
            image = self.find(region)
            self.before[region] = {"image_id": image["ImageId"]} if image else {}
            self.after[region] = {}
            if not image:
                continue
            images[region] = image["ImageId"]
            self.changed = True
            if self.module.check_mode:
                continue
            try:
                self.ec2(region).deregister_image(ImageId=image["ImageId"], aws_retry=True)
            except AWS_ERRORS as e:
                self.module.fail_json_aws(e, msg="Failed to deregister %s in %s" % (image["ImageId"], region))
            if self.params["delete_snapshots"]:
                for snapshot_id in reg.snapshots_of(image):
                    try:
                        self.ec2(region).delete_snapshot(SnapshotId=snapshot_id, aws_retry=True)
                        deleted.append(snapshot_id)
                    except is_boto3_error_code("InvalidSnapshot.NotFound"):
                        pass  # the tagged source snapshot lives in the source region only
                    except AWS_ERRORS as e:  # pylint: disable=duplicate-except
                        self.module.fail_json_aws(e, msg="Deregistered %s, but failed to delete its snapshot %s in %s"
                                                         % (image["ImageId"], snapshot_id, region))
        return dict(changed=self.changed, images=images, deleted_snapshots=deleted)


def main():
    argument_spec = dict(
        name=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        snapshot_id=dict(type="str"),
        architecture=dict(type="str", choices=list(reg.ARCHITECTURES), default="x86_64"),
        root_device_name=dict(type="str", default="/dev/xvda"),
        volume_size=dict(type="int"),
        volume_type=dict(type="str", default="gp3"),
        boot_mode=dict(type="str", choices=["uefi"], default="uefi"),
        tpm_support=dict(type="str", choices=["v2.0"], default="v2.0"),
        ena_support=dict(type="bool", default=True),
        imds_support=dict(type="str", choices=["v2.0", "optional"], default="v2.0"),
        uefi_data=dict(type="str"),
        description=dict(type="str"),
        tags=dict(type="dict", aliases=["resource_tags"]),
        purge_tags=dict(type="bool", default=False),
        measurements=dict(type="dict"),
        regions=dict(type="list", elements="str", default=[]),
        launch_permissions=dict(type="list", elements="str"),
        delete_snapshots=dict(type="bool", default=False),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=1800),
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True,
                              required_if=[("state", "present", ["snapshot_id"])])
    params = module.params
    try:
        reg.validate_name(params["name"])
        reg.validate_regions(params["regions"], module.region)
        if params["state"] == "present":
            reg.validate_snapshot_id(params["snapshot_id"])
            reg.validate_uefi_data(params["uefi_data"])
            reg.image_tags(params["tags"], params["measurements"], params["snapshot_id"])
            reg.parse_launch_permissions(params["launch_permissions"])
    except reg.RegistrationError as e:
        module.fail_json(msg=str(e))

    publisher = Publisher(module)
    result = publisher.present() if params["state"] == "present" else publisher.absent()
    result["region"] = module.region
    if module._diff:
        result["diff"] = dict(before=publisher.before, after=publisher.after)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
