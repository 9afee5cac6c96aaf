# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The filter plugin wrapper: same answers as the simulator, and simulator errors as AnsibleFilterError."""
import pytest

pytest.importorskip("ansible")

from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.attestable.ami.plugins.filter.kms_attestation_allows import FilterModule  # noqa: E402

ROLE = "arn:aws:iam::111122223333:role/App"
POLICY = {"Statement": [{"Effect": "Allow", "Principal": {"AWS": ROLE}, "Action": "kms:Decrypt",
                         "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:NitroTPMPCR4": "a" * 96}}}]}


def test_filter_is_registered_and_answers():
    allows = FilterModule().filters()["kms_attestation_allows"]
    assert allows(POLICY, ROLE, "kms:Decrypt", {"HashAlgorithm": "SHA384", "PCR4": "a" * 96})
    assert not allows(POLICY, ROLE, "kms:Decrypt", {"PCR4": "b" * 96})
    assert not allows(POLICY, ROLE)  # default action kms:Decrypt, no attestation document


def test_filter_reports_bad_input_as_filter_error():
    allows = FilterModule().filters()["kms_attestation_allows"]
    with pytest.raises(AnsibleFilterError, match="kms_attestation_allows: policy is not valid JSON"):
        allows("{not json", ROLE)
    with pytest.raises(AnsibleFilterError, match="pcrs must be a dict"):
        allows(POLICY, ROLE, "kms:Decrypt", ["a" * 96])
