# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.attestable.ami.plugins.module_utils._common import architectures


def architecture(name, consumer="aws"):
    """The name consumer (aws, uefi, kiwi, uname, qemu, debian) uses for x86_64, arm64 or aarch64."""
    try:
        return architectures.name_for(name, consumer)
    except architectures.ArchitectureError as exc:
        raise AnsibleFilterError("architecture: %s" % exc)


class FilterModule(object):
    def filters(self):
        return {"architecture": architecture}
