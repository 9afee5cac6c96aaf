#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: attestation_manifest
short_description: Read and update the attestation manifest that travels through the pipeline
version_added: 0.1.0
description:
  - Reads the attestation manifest (a versioned JSON record of an image, its reference measurements,
    snapshot, AMIs and the KMS keys that trust it) and replaces the sections a pipeline stage owns.
  - Sections not named in O(sections) are kept exactly as they are.
  - Without O(sections) the module only reads; a missing file then reads as an empty manifest.
  - The manifest can also be given as data (O(manifest)), as an AWX workflow passes it from one job to the next
    with C(set_stats); it is validated like a file. Without O(path) nothing is written.
author:
  - Attestable AMI maintainers (@attestable)
extends_documentation_fragment:
  - attestable.ami.attributes
  - ansible.builtin.files
options:
  path:
    description:
      - Path of the manifest JSON file. Its directory must exist.
      - With O(manifest), where the result is written (the file's current content is replaced); without it,
        nothing is written.
      - One of O(path) and O(manifest) is required.
      - When the module writes O(path) (O(sections) or O(manifest) given), O(mode), O(owner), O(group) and the other
        file options apply to it; a difference in them alone also reports changed. A new file without O(mode) gets
        C(0644), an existing one keeps its permission bits.
    type: path
  manifest:
    description:
      - The manifest as data, instead of reading O(path); validated against the same schema.
    type: dict
  sections:
    description:
      - Top-level sections to replace, keyed by name (V(image), V(measurements), V(snapshot), V(amis), V(kms)).
      - A section given as V(null) is removed.
      - V(measurements) must hold V(HashAlgorithm=SHA384) and 96-hex PCR values; V(amis) maps regions to AMI ids;
        V(kms) is a list of dicts with C(key_id) and C(statement_id).
    type: dict
    default: {}
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
    details: The file is rewritten only when its content changes.
"""

EXAMPLES = r"""
- name: Record the reference measurements in the manifest
  attestable.ami.attestation_manifest:
    path: artifacts/manifest.json
    sections:
      measurements: "{{ pcr.measurements | combine({'engines': pcr.engines, 'boot_mode': 'standard'}) }}"

- name: Read the manifest
  attestable.ami.attestation_manifest:
    path: artifacts/manifest.json
  register: manifest

- name: Validate the manifest an earlier AWX job passed on with set_stats, and add this job's section
  attestable.ami.attestation_manifest:
    manifest: "{{ attestable_manifest }}"
    sections:
      kms: "{{ bindings }}"
  register: manifest
"""

RETURN = r"""
manifest:
  description: The manifest after the update (or as read).
  returned: always
  type: dict
  sample: {"schema_version": 1, "amis": {"eu-west-1": "ami-0123456789abcdef0"}}
path:
  description: The manifest file.
  returned: when O(path) is given
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.attestable.ami.plugins.module_utils import manifest as manifest_lib
from ansible_collections.attestable.ami.plugins.module_utils._common import atomic_file


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path"),
            manifest=dict(type="dict"),
            sections=dict(type="dict", default={}),
        ),
        required_one_of=[("path", "manifest")],
        add_file_common_args=True,
        supports_check_mode=True,
    )
    path = module.params["path"]
    given = module.params["manifest"]
    where = path or "manifest"
    try:
        if given is not None:
            before = manifest_lib.validate(given, where="manifest")
            on_disk = manifest_lib.load(path) if path else before
        else:
            before = on_disk = manifest_lib.load(path)
        after = manifest_lib.update(before, module.params["sections"])
        manifest_lib.validate(after, where=where)
    except manifest_lib.ManifestError as exc:
        module.fail_json(msg="attestation manifest: %s" % exc, path=path)
    except (IOError, OSError) as exc:
        module.fail_json(msg="attestation manifest: cannot read %s: %s" % (path, exc), path=path)

    # Only a file changes: data given without a path is validated and returned, never written.
    changed = bool(path) and (after != on_disk or not os.path.exists(path)) and (
        bool(module.params["sections"]) or given is not None)
    result = dict(changed=changed, manifest=after)
    if path:
        result["path"] = path
    if module._diff:
        result["diff"] = dict(before=manifest_lib.dumps(on_disk), after=manifest_lib.dumps(after),
                              before_header=where, after_header=where)
    if changed and not module.check_mode:
        try:
            manifest_lib.write(path, after)
        except (IOError, OSError) as exc:
            module.fail_json(msg="attestation manifest: cannot write %s: %s" % (path, exc), path=path)
    if path and (module.params["sections"] or given is not None):
        result["changed"] = atomic_file.set_attributes(module, path, changed)  # owner, group, mode, ...
    module.exit_json(**result)


if __name__ == "__main__":
    main()
