#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: kiwi_validate
short_description: Validate a KIWI NG image description with KIWI's own loader, before anything is built
version_added: 0.1.0
description:
  - Loads a description with KIWI's C(XMLDescription(...).load()), which upgrades it to the current schema and
    applies the RelaxNG schema and the embedded Schematron rules, then runs the checks KIWI makes before a build
    that look only at the description (image version given, dracut modules in the package list, one build type, ...).
  - Errors come back as readable lines naming the element and attribute at fault and, with O(settings), the input
    that set them. The installed C(jing) makes RelaxNG errors precise; without it lxml's coarser errors are reported.
  - Also checks the attestation-critical settings (read-only erofs root via overlayroot, dm-verity over all blocks,
    UKI boot, panic on verity corruption, no initrd shell) and reports the missing ones in RV(unattestable).
  - Needs the C(kiwi) Python package where it runs (normally the controller). Changes nothing.
author:
  - Attestable AMI maintainers (@attestable)
extends_documentation_fragment:
  - attestable.ami.attributes
options:
  description:
    description:
      - The description directory (holding C(appliance.kiwi) or another C(*.kiwi) / C(config.xml)), or the KIWI file.
    type: path
    required: true
  profiles:
    description: KIWI profiles to select, as C(kiwi-ng --profile) would.
    type: list
    elements: str
    default: []
  require_attestable:
    description:
      - Fail when an attestation-critical setting is missing. With V(false) a missing setting is only a warning.
    type: bool
    default: false
  settings:
    description:
      - Maps description locations to the inputs that set them, so an error can name the input to fix.
      - Keys are element paths such as C(image/preferences/type), C(path@attribute) such as
        C(image/preferences/type@erofscompression), or C(@attribute); values are the input names.
    type: dict
    default: {}
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Reads only.
requirements:
  - kiwi (the KIWI NG Python package) on the host the module runs on
  - jing (optional) for precise RelaxNG error messages
"""

EXAMPLES = r"""
- name: Validate the rendered description on the controller
  attestable.ami.kiwi_validate:
    description: build/description
    require_attestable: true
  delegate_to: localhost
  register: validation

- name: Show which packages the image will hold
  ansible.builtin.debug:
    var: validation.description.packages
"""

RETURN = r"""
description:
  description: What KIWI loaded.
  returned: success
  type: dict
  contains:
    config_file:
      description: The KIWI file that was loaded.
      type: str
    name:
      description: Image name.
      type: str
    version:
      description: Image version.
      type: str
    build_type:
      description: Attributes of the selected C(<type>) (image, firmware, overlayroot, verity_blocks, kernelcmdline, ...).
      type: dict
    bootloader:
      description: Boot loader name.
      type: str
    dracut_uefi:
      description: Whether dracut builds a UKI.
      type: bool
    packages:
      description: Image packages (sorted).
      type: list
      elements: str
    repositories:
      description: Repositories (alias, type, source, gpg checks).
      type: list
      elements: dict
  sample: {"name": "al2023-attestable", "version": "1.0.0", "build_type": {"image": "oem", "verity_blocks": "all"}}
description_digest:
  description: SHA-256 over every file of the description (the digest M(attestable.ami.kiwi_build) keys its idempotence on).
  returned: success
  type: str
  sample: sha256:0b5c...
kiwi_version:
  description: The KIWI version that validated the description.
  returned: success
  type: str
  sample: 11.1.6
attestable:
  description: Whether every attestation-critical setting is present.
  returned: success
  type: bool
unattestable:
  description: The attestation-critical settings that are missing, one readable line each.
  returned: success
  type: list
  elements: str
errors:
  description: On failure, one readable line per problem KIWI found.
  returned: failure
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.attestable.ami.plugins.module_utils import kiwi_description


def main():
    module = AnsibleModule(
        argument_spec=dict(
            description=dict(type="path", required=True),
            profiles=dict(type="list", elements="str", default=[]),
            require_attestable=dict(type="bool", default=False),
            settings=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    path = module.params["description"]
    try:
        summary = kiwi_description.load_description(path, settings=module.params["settings"],
                                                    profiles=module.params["profiles"])
        digest = kiwi_description.description_digest(path)
    except kiwi_description.KiwiMissingError as exc:
        module.fail_json(msg="kiwi_validate: %s" % exc, description=path)
    except kiwi_description.DescriptionError as exc:
        module.fail_json(msg="kiwi_validate: %s" % exc, errors=exc.messages, description=path)
    except (IOError, OSError) as exc:
        module.fail_json(msg="kiwi_validate: cannot read description %s: %s" % (path, exc), description=path)

    unattestable = kiwi_description.attestation_findings(summary)
    if unattestable and module.params["require_attestable"]:
        module.fail_json(msg="kiwi_validate: %s is not attestable: %s" % (summary["config_file"], "; ".join(unattestable)),
                         errors=unattestable, description=path)
    for line in unattestable:
        module.warn("the description is not attestable: %s" % line)
    module.exit_json(changed=False, description=summary, description_digest=digest,
                     kiwi_version=summary["kiwi_version"], attestable=not unattestable, unattestable=unattestable)


if __name__ == "__main__":
    main()
