#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: snapshot_upload
short_description: Upload a raw disk image to a new EBS snapshot with the EBS direct APIs
version_added: 0.1.0
description:
  - Uploads a raw disk image to a new EBS snapshot with the EBS direct APIs (StartSnapshot, PutSnapshotBlock,
    CompleteSnapshot), like C(coldsnap) but without a Rust toolchain on the builder.
  - The image is cut into 512 KiB blocks; blocks that are all zeros are skipped (a snapshot reads them back as
    zeros), every other block is sent with its SHA-256 checksum by a bounded pool of O(workers), and the
    snapshot is completed with the LINEAR aggregate checksum.
  - Each block write is retried with exponential backoff and jitter on throttling, HTTP 5xx and connection
    errors. When a block cannot be written, the incomplete snapshot is deleted and the module fails.
  - The image is read once, as a stream; memory stays bounded (a queue of about two blocks per worker).
  - Idempotent. A completed snapshot is tagged C(attestable:ImageSHA256) with the image's SHA-256 and
    C(attestable:ImageSize) with its size in bytes (snapshots tagged with the older C(attestable:image-sha256) and
    C(attestable:image-size) are recognised too). Tags are only a hint (anyone with C(ec2:CreateTags) can
    write them), so a tagged snapshot is reused only after its content is read back and compared with the image
    (O(reuse)) - its written block indices (C(ListSnapshotBlocks)) must be exactly the image's non-zero blocks,
    and the blocks read back (C(GetSnapshotBlock)) must have the image's block SHA-256. Only then does the
    module report RV(ignore:changed=false). A tagged snapshot that does not verify is left alone, named in a
    warning and in RV(reuse_rejected), and the image is uploaded to a new snapshot.
  - Only when an earlier snapshot of an image of the same size exists is the image read before uploading, to
    hash it and compare it with that snapshot; with O(image_sha256) given, only when a snapshot carries that
    digest. A first upload reads the image once.
  - A new snapshot may answer "does not exist" (HTTP 404 C(ResourceNotFoundException) from the EBS direct APIs,
    C(InvalidSnapshot.NotFound) from EC2) for a while; those answers are retried, the EBS ones for
    O(consistency_timeout) seconds after C(StartSnapshot).
  - Runs on Python 3.9 with boto3 (AL2023 ships it as C(python3-boto3)), so it can run on the builder, where
    the image is.
author:
  - Attestable AMI maintainers (@attestable)
options:
  src:
    description:
      - Path of the raw disk image (a regular file or a block device) on the host the module runs on.
    type: path
    required: true
  image_sha256:
    description:
      - The image's SHA-256 as 64 hex characters, when already known (for example the manifest's
        C(image.disk_sha256)). Saves hashing the image when an earlier upload of an image of the same size exists.
      - The upload fails and keeps nothing when the image read does not match.
    type: str
  volume_size:
    description:
      - Size of the snapshot's volume in GiB.
      - Defaults to the image size rounded up to whole GiB. Must be at least that.
    type: int
  description:
    description:
      - Description of the snapshot.
    type: str
  tags:
    description:
      - Tags for the snapshot. On an existing snapshot, missing or different tags are set; others are kept
        unless O(purge_tags=true).
      - Values that are numbers or booleans are written as their text (V(42), V(True)).
    type: dict
    aliases: ['resource_tags']
  purge_tags:
    description:
      - With O(tags) set, remove the tags of a reused snapshot that O(tags) does not list (needs
        C(ec2:DeleteTags)). The C(attestable:ImageSHA256) and C(attestable:ImageSize) tags and tag keys
        beginning with V(aws:) are never removed.
      - The default keeps tags others have set, unlike amazon.aws's modules.
    type: bool
    default: false
  encrypted:
    description:
      - Encrypt the snapshot. Implied by O(kms_key_id).
      - An existing unencrypted snapshot is not reused for an encrypted upload.
    type: bool
    default: false
  kms_key_id:
    description:
      - ARN of the KMS key that encrypts the snapshot (by default the account's EBS default key).
    type: str
  workers:
    description:
      - Number of blocks written in parallel.
    type: int
    default: 8
  reuse:
    description:
      - How an earlier snapshot tagged with this image's digest and size is verified before it is reused.
      - V(sample) reads back the list of written blocks (all of it) and O(reuse_sample_blocks) blocks (the first,
        the last and a random choice) and compares them with the image. A missing, extra or different block
        among those is caught for certain; a different block outside the sample only with the probability
        of the sample's share of the blocks.
      - V(full) reads back and compares every written block (as much data as an upload sends, but no writes).
      - V(never) never reuses a snapshot; every run uploads.
    type: str
    choices: [sample, full, never]
    default: sample
  reuse_sample_blocks:
    description:
      - Number of blocks read back with O(reuse=sample).
    type: int
    default: 64
  consistency_timeout:
    description:
      - Seconds after C(StartSnapshot) during which the EBS direct APIs' "does not exist" answer for the new
        snapshot (HTTP 404 C(ResourceNotFoundException)) is retried. AWS advises up to about two minutes.
    type: int
    default: 120
  wait:
    description:
      - Wait until the snapshot's state is C(completed) (EBS finishes a snapshot asynchronously).
    type: bool
    default: true
  wait_timeout:
    description:
      - How long to wait for the snapshot, in seconds.
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
    details: Hashes the image and looks for (and verifies) an earlier upload; uploads nothing.
  diff_mode:
    support: partial
    details: Shows the snapshot before and after (its id and image digest), not block contents.
  idempotent:
    support: full
    details: A snapshot tagged with the same image SHA-256 and volume size is reused once its content verifies.
notes:
  - The caller needs C(ebs:StartSnapshot), C(ebs:PutSnapshotBlock), C(ebs:CompleteSnapshot),
    C(ec2:DescribeSnapshots), C(ec2:CreateTags) and C(ec2:DeleteSnapshot) (for cleanup); reusing a snapshot
    also needs C(ebs:ListSnapshotBlocks) and C(ebs:GetSnapshotBlock).
"""

EXAMPLES = r"""
- name: Upload the built disk to an EBS snapshot
  attestable.ami.snapshot_upload:
    src: /var/tmp/image/kiwi-attestable.x86_64-1.0.0.raw
    region: eu-west-1
    description: attestable AL2023 image 1.0.0
    tags:
      Name: attestable-al2023-1.0.0
    workers: 16
  register: snapshot

- name: Upload with a known digest (no hashing pass) to an encrypted snapshot
  attestable.ami.snapshot_upload:
    src: "{{ manifest.image.disk }}"
    image_sha256: "{{ manifest.image.disk_sha256 }}"
    encrypted: true
    kms_key_id: arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab
"""

RETURN = r"""
snapshot_id:
  description: The snapshot holding the image (new, or the one reused).
  returned: always, except in check mode when nothing matched
  type: str
  sample: snap-0123456789abcdef0
volume_size:
  description: The snapshot's volume size in GiB.
  returned: always
  type: int
  sample: 2
image_sha256:
  description: SHA-256 of the image (hex).
  returned: always (in check mode too; the image is hashed then)
  type: str
blocks_total:
  description: Number of 512 KiB blocks the image spans.
  returned: always
  type: int
blocks_written:
  description: Blocks written by this run (0 when an existing snapshot was reused).
  returned: always
  type: int
blocks_skipped:
  description: All-zero blocks this run did not send.
  returned: always
  type: int
bytes_uploaded:
  description: Bytes of block data sent by this run.
  returned: always
  type: int
requests:
  description: EBS direct API requests sent by this run, retries included.
  returned: always
  type: int
retries:
  description: Requests this run retried after throttling, 5xx, connection errors or "does not exist" answers.
  returned: always
  type: int
verified_blocks:
  description: Blocks of the reused snapshot read back and compared with the image (0 when nothing was reused).
  returned: always
  type: int
reuse_rejected:
  description: Snapshots tagged with this image's digest that were not reused because their content did not
    verify, with the reason.
  returned: always
  type: list
  elements: dict
  sample: [{"snapshot_id": "snap-0123456789abcdef0", "reason": "block 3 differs from the image's block 3"}]
"""

import re

try:
    import botocore.config
    import botocore.exceptions

    AWS_ERRORS = (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError)
except ImportError:
    AWS_ERRORS = ()  # AnsibleAWSModule reports the missing dependency

from ansible_collections.amazon.aws.plugins.module_utils.ec2 import AnsibleEC2Error
from ansible_collections.amazon.aws.plugins.module_utils.ec2 import add_ec2_tags
from ansible_collections.amazon.aws.plugins.module_utils.ec2 import delete_snapshot
from ansible_collections.amazon.aws.plugins.module_utils.ec2 import remove_ec2_tags
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry
from ansible_collections.amazon.aws.plugins.module_utils.tagging import ansible_dict_to_boto3_tag_list
from ansible_collections.amazon.aws.plugins.module_utils.tagging import boto3_tag_list_to_ansible_dict
from ansible_collections.amazon.aws.plugins.module_utils.tagging import compare_aws_tags

from ansible_collections.attestable.ami.plugins.module_utils._aws import ebs_upload
from ansible_collections.attestable.ami.plugins.module_utils._common.measurements import tag_value

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
# A snapshot that was just created can answer InvalidSnapshot.NotFound for a few seconds (eventual consistency).
NEW_SNAPSHOT_RETRY = AWSRetry.jittered_backoff(retries=8, delay=1, max_delay=15,
                                               catch_extra_error_codes=["InvalidSnapshot.NotFound"])


@AWSRetry.jittered_backoff()
def describe_all_snapshots(ec2, **params):
    """Every page of DescribeSnapshots, the whole walk retried (a paginator's own calls are not)."""
    return ec2.get_paginator("describe_snapshots").paginate(**params).build_full_result()["Snapshots"]


def find_snapshots(module, ec2, image_size, volume_size, encrypted, kms_key_id):
    """Completed (or completing) snapshots uploaded from an image of this size that fit the request."""
    try:
        # Snapshots uploaded before the tag keys were unified carry the legacy key: one lookup per spelling.
        snapshots, seen = [], set()
        for key in (ebs_upload.SIZE_TAG, ebs_upload.LEGACY_SIZE_TAG):
            for snap in describe_all_snapshots(
                    ec2, OwnerIds=["self"], Filters=[{"Name": "tag:%s" % key, "Values": [str(image_size)]}]):
                if snap["SnapshotId"] not in seen:
                    seen.add(snap["SnapshotId"])
                    snapshots.append(snap)
    except AWS_ERRORS as e:
        module.fail_json_aws(e, msg="Failed to look for an earlier upload of the image")
    candidates = []
    for snap in snapshots:
        if snap.get("State") not in ("completed", "pending") or snap.get("VolumeSize") != volume_size:
            continue
        if encrypted and not snap.get("Encrypted"):
            continue
        if kms_key_id and snap.get("KmsKeyId") not in (None, kms_key_id):
            continue
        candidates.append(snap)
    candidates.sort(key=lambda s: (s.get("State") == "completed", str(s.get("StartTime"))))
    return candidates


def tagged_with(snapshots, image_sha256):
    """The snapshots tagged with this image digest, newest (and completed) first."""
    found = [s for s in snapshots
             if tag_value(boto3_tag_list_to_ansible_dict(s.get("Tags", [])), ebs_upload.SHA256_TAG) == image_sha256]
    return list(reversed(found))


def tag_changes(current, wanted, identity, purge):
    """(tags to set, tag keys to remove) on a reused snapshot; its identity tags are never removed.

    amazon.aws's compare_aws_tags on the tags DescribeSnapshots already returned: ensure_ec2_tags would read them
    again with DescribeTags (another call, and an IAM action the role's policies do not grant)."""
    if wanted is None:
        return {}, []
    to_set, to_unset = compare_aws_tags(current, dict(wanted, **identity), purge_tags=purge)
    return dict((k, v) for k, v in to_set.items() if k not in identity), to_unset


def wait_completed(module, ec2, snapshot_id):
    delay = 5
    try:
        ebs_upload.snapshot_completed_waiter(ec2).wait(
            SnapshotIds=[snapshot_id],
            WaiterConfig={"Delay": delay, "MaxAttempts": max(1, module.params["wait_timeout"] // delay)},
        )
    except botocore.exceptions.WaiterError as e:
        module.fail_json(msg="Snapshot %s did not reach state 'completed' within %d seconds: %s"
                         % (snapshot_id, module.params["wait_timeout"], e), snapshot_id=snapshot_id)


def delete_snapshot_quietly(ec2, snapshot_id):
    """Delete a snapshot this run made; returns None, or why it could not be deleted (never raises AWS errors).

    amazon.aws's delete_snapshot retries throttling and takes InvalidSnapshot.NotFound as already deleted."""
    try:
        delete_snapshot(ec2, snapshot_id)
    except AnsibleEC2Error as e:
        cause = e.exception
        return ebs_upload.describe_error(cause) if isinstance(cause, botocore.exceptions.ClientError) else str(e)
    return None


def raise_on_failure(reason):
    if reason:
        raise RuntimeError(reason)


def upload(module, ec2, size, image_sha256, volume_size):
    """Upload the image; image_sha256 (if known) is checked against what is read."""
    params = module.params
    workers = params["workers"]
    # Retries are per block, in ebs_upload (AWSRetry does not retry connection errors and cannot count per
    # block); one pooled connection per worker (botocore's default pool has 10).
    config = botocore.config.Config(retries={"total_max_attempts": 1}, max_pool_connections=workers + 2)
    ebs = module.client("ebs", config=config)
    tags = ansible_dict_to_boto3_tag_list(params["tags"]) if params["tags"] else None
    try:
        figures = ebs_upload.upload_image(
            ebs, params["src"], volume_size=volume_size, tags=tags, description=params["description"],
            encrypted=params["encrypted"], kms_key_id=params["kms_key_id"], workers=workers,
            expected_sha256=image_sha256, consistency_seconds=params["consistency_timeout"],
            delete_snapshot=lambda sid: raise_on_failure(delete_snapshot_quietly(ec2, sid)))
    except ebs_upload.UploadError as e:
        module.fail_json(msg=str(e), snapshot_id=e.snapshot_id)
    snapshot_id = figures["snapshot_id"]
    identity = ansible_dict_to_boto3_tag_list({ebs_upload.SHA256_TAG: figures["image_sha256"],
                                               ebs_upload.SIZE_TAG: size})
    try:
        NEW_SNAPSHOT_RETRY(ec2.create_tags)(Resources=[snapshot_id], Tags=identity)
    except AWS_ERRORS as e:
        failed = delete_snapshot_quietly(ec2, snapshot_id)
        if failed:
            module.fail_json_aws(e, msg="Failed to tag snapshot %s with the image digest, and deleting it failed too "
                                        "(%s): delete snapshot %s by hand" % (snapshot_id, failed, snapshot_id),
                                 snapshot_id=snapshot_id)
        module.fail_json_aws(e, msg="Failed to tag snapshot %s with the image digest; it was deleted" % snapshot_id)
    if params["wait"]:
        wait_completed(module, ec2, snapshot_id)
    return figures


def find_verified(module, ec2, candidates, size, image_sha256, result):
    """The newest tagged candidate whose content verifies against the image, or None; also the image digest.

    Tags are a hint: every tagged candidate is read back (ebs_upload.verify_snapshot) before it is trusted."""
    params = module.params
    scan = None
    if image_sha256 is None or tagged_with(candidates, image_sha256):
        scan = ebs_upload.scan_image(params["src"], size)
        if image_sha256 is not None and scan["sha256"] != image_sha256:
            module.fail_json(msg="image_sha256: the image %s has SHA-256 %s, not %s"
                                 % (params["src"], scan["sha256"], image_sha256))
        image_sha256 = scan["sha256"]
    tagged = tagged_with(candidates, image_sha256)
    if not tagged:
        return None, image_sha256
    ebs = module.client("ebs", retry_decorator=AWSRetry.jittered_backoff())
    sample = None if params["reuse"] == "full" else params["reuse_sample_blocks"]
    for snap in tagged:
        if snap.get("State") == "pending" and params["wait"] and not module.check_mode:
            wait_completed(module, ec2, snap["SnapshotId"])  # the EBS read APIs read completed snapshots
            snap["State"] = "completed"
        reason, compared = ebs_upload.verify_snapshot(ebs, snap["SnapshotId"], scan, sample=sample)
        if not reason:
            result["verified_blocks"] = compared
            return snap, image_sha256
        result["reuse_rejected"].append({"snapshot_id": snap["SnapshotId"], "reason": reason})
        module.warn("Snapshot %s is tagged as an upload of this image (SHA-256 %s) but it does not verify: %s. "
                    "It is not reused (and left as it is); the image is uploaded again."
                    % (snap["SnapshotId"], image_sha256, reason))
    return None, image_sha256


def main():
    argument_spec = dict(
        src=dict(type="path", required=True),
        image_sha256=dict(type="str"),
        volume_size=dict(type="int"),
        description=dict(type="str"),
        tags=dict(type="dict", aliases=["resource_tags"]),
        purge_tags=dict(type="bool", default=False),
        encrypted=dict(type="bool", default=False),
        kms_key_id=dict(type="str"),
        workers=dict(type="int", default=8),
        reuse=dict(type="str", choices=["sample", "full", "never"], default="sample"),
        reuse_sample_blocks=dict(type="int", default=64),
        consistency_timeout=dict(type="int", default=ebs_upload.DEFAULT_CONSISTENCY_SECONDS),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=1800),
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params

    if params["workers"] < 1 or params["workers"] > 64:
        module.fail_json(msg="workers: expected a number from 1 to 64, got %d" % params["workers"])
    if params["reuse_sample_blocks"] < 1:
        module.fail_json(msg="reuse_sample_blocks: expected at least 1, got %d" % params["reuse_sample_blocks"])
    if params["consistency_timeout"] < 0:
        module.fail_json(msg="consistency_timeout: expected 0 or more seconds, got %d" % params["consistency_timeout"])
    if params["image_sha256"] is not None and not _SHA256.match(params["image_sha256"]):
        module.fail_json(msg="image_sha256: expected 64 hex characters (a SHA-256 digest), got %r"
                         % params["image_sha256"])
    try:
        size = ebs_upload.image_size(params["src"])
    except ebs_upload.UploadError as e:
        module.fail_json(msg=str(e))
    needed = ebs_upload.volume_size_gib(size)
    volume_size = params["volume_size"] or needed
    if volume_size < needed:
        module.fail_json(msg="volume_size: %d GiB cannot hold the %d-byte image %s; use at least %d (or leave it "
                             "unset)" % (volume_size, size, params["src"], needed))
    encrypted = params["encrypted"] or bool(params["kms_key_id"])
    image_sha256 = params["image_sha256"].lower() if params["image_sha256"] else None

    ec2 = module.client("ec2", retry_decorator=AWSRetry.jittered_backoff())
    result = dict(changed=False, volume_size=volume_size,
                  blocks_total=ebs_upload.block_count(size), blocks_written=0, blocks_skipped=0,
                  bytes_uploaded=0, requests=0, retries=0, verified_blocks=0, reuse_rejected=[])
    existing = None
    if params["reuse"] != "never":
        candidates = find_snapshots(module, ec2, size, volume_size, encrypted, params["kms_key_id"])
        if candidates:
            existing, image_sha256 = find_verified(module, ec2, candidates, size, image_sha256, result)
    if image_sha256 is None and module.check_mode:
        image_sha256 = ebs_upload.scan_image(params["src"], size)["sha256"]
    before = {"snapshot_id": existing["SnapshotId"], "image_sha256": image_sha256} if existing else {}

    if existing:
        result["snapshot_id"] = existing["SnapshotId"]
        current = boto3_tag_list_to_ansible_dict(existing.get("Tags", []))
        identity = dict((k, current[k]) for k in (ebs_upload.SHA256_TAG, ebs_upload.SIZE_TAG,
                                                  ebs_upload.LEGACY_SHA256_TAG, ebs_upload.LEGACY_SIZE_TAG)
                        if k in current)
        to_set, to_unset = tag_changes(current, params["tags"], identity, params["purge_tags"])
        # amazon.aws's add_ec2_tags/remove_ec2_tags: retried, nothing sent in check mode, fail_json_aws on errors.
        result["changed"] |= remove_ec2_tags(ec2, module, existing["SnapshotId"], to_unset)
        result["changed"] |= add_ec2_tags(ec2, module, existing["SnapshotId"], to_set)
        if params["wait"] and existing.get("State") != "completed" and not module.check_mode:
            wait_completed(module, ec2, existing["SnapshotId"])
    else:
        result["changed"] = True
        if not module.check_mode:
            figures = upload(module, ec2, size, image_sha256, volume_size)
            image_sha256 = figures["image_sha256"]
            for key in ("snapshot_id", "blocks_total", "blocks_written", "blocks_skipped", "bytes_uploaded",
                        "requests", "retries"):
                result[key] = figures[key]

    result["image_sha256"] = image_sha256
    if module._diff:
        after = {"snapshot_id": result.get("snapshot_id", "(new snapshot)"), "image_sha256": image_sha256}
        result["diff"] = dict(before=before, after=after)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
