#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: verity_verify
short_description: Check a dm-verity protected partition against its root hash, in userspace
version_added: 0.1.0
description:
  - Runs C(veritysetup verify) over the data and its hash tree, as the kernel would when it opens the
    partition, but in userspace (no device-mapper needed), so it also runs on a build machine or in a container.
  - The data is a partition of a raw GPT disk image (O(disk) with O(partition), O(partition_label) or
    O(partition_type)) or a file (O(data)). With O(disk) and a veritytab, the partition may also be found by the
    veritytab's data device (C(UUID=) of the filesystem, C(PARTUUID=), C(PARTLABEL=)).
  - The reference root hash is O(root_hash), an entry of a veritytab (O(veritytab)), or the C(/etc/veritytab) inside
    the initrd of a Unified Kernel Image (O(uki)), that is the root hash the booted kernel will actually enforce, rather than
    the one a build tool logged. The veritytab's C(hash-offset=), C(hash-block-size=), C(data-block-size=),
    C(data-blocks=), C(hash=), C(salt=), C(format=) and C(superblock=false) options are applied (KIWI writes
    C(verityroot UUID=... UUID=... ROOTHASH hash-offset=N,hash-block-size=4096)).
  - The initrd may be a plain cpio archive or gzip, xz, lzma, bzip2, zstd or lz4 compressed, or several
    concatenated archives (as dracut writes them).
  - A partition inside a disk is read through a read-only loop device with the partition's offset and size when
    running as root, else from a temporary copy of the partition (removed afterwards).
  - When the data does not verify, the task fails naming the expected root hash and the root hash the data has
    now (recomputed with the superblock's salt and block sizes), unless O(fail_on_mismatch=false).
author:
  - Attestable AMI maintainers (@attestable)
requirements:
  - veritysetup (Debian C(cryptsetup-bin), AL2023 C(cryptsetup))
  - zstd or lz4 to read an initrd compressed with them
extends_documentation_fragment:
  - attestable.ami.attributes
options:
  disk:
    description:
      - Raw GPT disk image (for example KIWI's C(.raw) output) holding the verity-protected partition. Only read.
      - Exactly one of O(disk) and O(data) is required.
    type: path
  partition:
    description: Number (1-based, as in C(sgdisk -p)) of the partition of O(disk) holding the data and its hash tree.
    type: int
  partition_label:
    description: GPT partition name of the partition of O(disk) to check (KIWI names the root partition C(p.lxroot)).
    type: str
  partition_type:
    description: GPT partition type GUID of the partition of O(disk) to check.
    type: str
  data:
    description: File holding the verity-protected data (a filesystem image with its hash tree, or a partition's contents).
    type: path
  hash_file:
    description: File holding the hash tree, when it is not inside the data (a separate hash device). Default the data itself.
    type: path
  root_hash:
    description: The expected root hash (hexadecimal).
    type: str
  veritytab:
    description:
      - A veritytab file, or its text (C(NAME DATA-DEVICE HASH-DEVICE ROOT-HASH [OPTIONS]) per line).
      - Exactly one of O(root_hash), O(veritytab) and O(uki) is required.
    type: str
  veritytab_name:
    description: Name (first field) of the veritytab entry to check; needed only when the veritytab has several.
    type: str
  uki:
    description: Unified Kernel Image whose C(.initrd) holds C(/etc/veritytab) (as KIWI writes it for a verity root).
    type: path
  hash_offset:
    description:
      - Byte offset of the hash tree (its superblock) in the data or in O(hash_file). Overrides the veritytab's
        C(hash-offset=).
      - Required with O(root_hash) when the hash tree is inside the data; default V(0) with O(hash_file).
    type: int
  fail_on_mismatch:
    description: Fail the task when the data does not verify. With V(false) the task reports RV(verified=false) instead.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    details: The module only reads, so it verifies in check mode too.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Never reports a change.
seealso:
  - module: attestable.ami.measured_boot
  - module: attestable.ami.kiwi_build
"""

EXAMPLES = r"""
- name: Verify the KIWI disk's root partition against the root hash its UKI will enforce
  attestable.ami.verity_verify:
    disk: build/image.raw
    uki: build/image.efi
  register: verity

- name: Verify partition 3 against the root hash and hash offset that kiwi_build reported
  attestable.ami.verity_verify:
    disk: build/image.raw
    partition: 3
    root_hash: "{{ build.root_hash }}"
    hash_offset: "{{ build.veritytab.hash_offset }}"

- name: Verify against the veritytab file the edit-boot hook copied beside the disk
  attestable.ami.verity_verify:
    disk: build/image.raw
    veritytab: "{{ build.veritytab.path }}"

- name: Check a tampered copy, expecting it not to verify
  attestable.ami.verity_verify:
    data: build/root.erofs
    veritytab: "verityroot /dev/sda3 /dev/sda3 {{ root_hash }} hash-offset=245760000,hash-block-size=4096"
    fail_on_mismatch: false
  register: tampered
"""

RETURN = r"""
verified:
  description: Whether the data and hash tree verify against RV(root_hash).
  returned: always
  type: bool
root_hash:
  description: The expected root hash that was checked (lowercase hex).
  returned: always
  type: str
root_hash_source:
  description: Where RV(root_hash) came from, V(root_hash), V(veritytab) or V(uki).
  returned: always
  type: str
actual_root_hash:
  description:
    - The root hash of the data as it is now (recomputed with the superblock's salt and block sizes), when the
      verification failed. Equal to RV(root_hash) when only the hash tree is damaged.
  returned: when RV(verified) is false
  type: str
data_size:
  description: Bytes of data protected by the hash tree (data blocks times data block size).
  returned: always
  type: int
hash_offset:
  description: Byte offset of the hash tree's superblock in the data (or in O(hash_file)).
  returned: always
  type: int
hash_size:
  description: Bytes of the hash tree (hash blocks times hash block size), from the superblock.
  returned: when the hash tree has a superblock
  type: int
data_blocks:
  description: Number of data blocks.
  returned: always
  type: int
data_block_size:
  description: Data block size in bytes.
  returned: always
  type: int
hash_block_size:
  description: Hash block size in bytes.
  returned: always
  type: int
hash_algorithm:
  description: The hash algorithm of the tree (for example V(sha256)).
  returned: always
  type: str
salt:
  description: The salt of the tree (hex).
  returned: always
  type: str
uuid:
  description: The UUID in the verity superblock.
  returned: when the hash tree has a superblock
  type: str
veritytab:
  description: The veritytab entry used (C(name), C(data_device), C(hash_device), C(root_hash), C(options), C(line)).
  returned: when O(veritytab) or O(uki) is given
  type: dict
partition:
  description: The partition of O(disk) that was checked (C(number), C(offset), C(size), C(type), C(guid), C(label)).
  returned: when O(disk) is given
  type: dict
accessed_via:
  description: How the data was read, V(loop) (read-only loop device), V(copy) (temporary copy) or V(file).
  returned: always
  type: str
message:
  description: What veritysetup said when the verification failed.
  returned: when RV(verified) is false
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.attestable.ami.plugins.module_utils._boot.verity import VerityError, VerityMismatch, check


def main():
    module = AnsibleModule(
        argument_spec=dict(
            disk=dict(type="path"),
            partition=dict(type="int"),
            partition_label=dict(type="str"),
            partition_type=dict(type="str"),
            data=dict(type="path"),
            hash_file=dict(type="path"),
            root_hash=dict(type="str"),
            veritytab=dict(type="str"),
            veritytab_name=dict(type="str"),
            uki=dict(type="path"),
            hash_offset=dict(type="int"),
            fail_on_mismatch=dict(type="bool", default=True),
        ),
        mutually_exclusive=[("disk", "data"), ("root_hash", "veritytab", "uki"),
                            ("partition", "partition_label", "partition_type")],
        required_one_of=[("disk", "data"), ("root_hash", "veritytab", "uki")],
        supports_check_mode=True,
    )
    try:
        result = check(dict(module.params))
    except VerityMismatch as exc:
        module.fail_json(msg=str(exc), changed=False, **exc.result)
    except VerityError as exc:
        module.fail_json(msg=str(exc), changed=False)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
