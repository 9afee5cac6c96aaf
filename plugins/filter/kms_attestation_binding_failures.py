# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.attestable.ami.plugins.module_utils._aws import kms_policy


def kms_attestation_binding_failures(policy, principal, actions, measurements, pcrs, require_allowed=True):
    """What a key policy's binding of an image gets wrong for principal (empty list: nothing)."""
    try:
        return kms_policy.binding_failures(policy, principal, actions, measurements, pcrs, require_allowed)
    except kms_policy.PolicyError as exc:
        raise AnsibleFilterError("kms_attestation_binding_failures: %s" % exc)


class FilterModule(object):
    def filters(self):
        return {"kms_attestation_binding_failures": kms_attestation_binding_failures}
