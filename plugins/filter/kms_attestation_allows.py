# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.attestable.ami.plugins.module_utils._aws import kms_policy_simulator


def kms_attestation_allows(policy, principal, action="kms:Decrypt", pcrs=None, context=None):
    """True when the key policy lets principal run action from an instance whose attestation holds pcrs."""
    try:
        return kms_policy_simulator.allows(policy, principal, action, pcrs, context)
    except kms_policy_simulator.SimulatorError as exc:
        raise AnsibleFilterError("kms_attestation_allows: %s" % exc)


class FilterModule(object):
    def filters(self):
        return {"kms_attestation_allows": kms_attestation_allows}
