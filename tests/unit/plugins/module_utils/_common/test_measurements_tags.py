# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""_common/measurements, the tag half: the canonical form and digest of measurements in AMI tags (the contract
for whoever writes the digest tag), the cross-check against references, and that tags never carry the boot
mode."""
import hashlib

import pytest

from ansible_collections.attestable.ami.plugins.module_utils._common import measurements as mt

AMI = "ami-0123456789abcdef0"
M = {"HashAlgorithm": "SHA384", "PCR4": "A" * 96, "PCR12": "0" * 96, "PCR7": "b" * 96}


def tags(measurements, **extra):
    result = dict(("attestable:" + k, v) for k, v in measurements.items())
    result.update(extra)
    return result


def test_canonical_form_is_sorted_compact_json_of_the_ami_and_the_pcrs():
    expected = ('{"HashAlgorithm":"SHA384","PCR12":"%s","PCR4":"%s","PCR7":"%s","ami_id":"%s"}'
                % ("0" * 96, "a" * 96, "b" * 96, AMI)).encode()
    assert mt.canonical_measurements(AMI, dict(M, boot_mode="standard", engines=["python"])) == expected
    assert mt.measurements_digest(AMI, M) == hashlib.sha384(expected).hexdigest()
    assert mt.digest_tags(AMI, M) == {"attestable:MeasurementsSHA384": hashlib.sha384(expected).hexdigest()}
    assert mt.measurements_digest("ami-0fedcba9876543210", M) != mt.measurements_digest(AMI, M)
    with pytest.raises(mt.TagError, match="ami_id must be an AMI id"):
        mt.canonical_measurements("my image", M)


def test_tags_never_give_the_boot_mode():
    read = mt.from_tags(tags(M, **{"attestable:boot_mode": "secure_boot", "Name": "x",
                                   "attestable:SnapshotId": "snap-1"}))
    assert read == M


def test_cross_check():
    digest = mt.measurements_digest(AMI, M)
    measurements, notes = mt.cross_check(AMI, tags(M), expected_digest=digest.upper())
    assert measurements == M and "ec2:CreateTags" in notes[0] and "match expected_measurements_digest" in notes[1]
    dummy, notes = mt.cross_check(AMI, tags(M))
    assert "nothing held outside the tags vouches for them" in notes[-1]
    with pytest.raises(mt.TagError, match="not to the expected_measurements_digest"):
        mt.cross_check(AMI, tags(dict(M, PCR4="c" * 96)), expected_digest=digest)
    with pytest.raises(mt.TagError, match="must be 96 hex"):
        mt.cross_check(AMI, tags(M), expected_digest="abc")
    with pytest.raises(mt.TagError, match="edited after they were written"):
        mt.cross_check(AMI, tags(dict(M, PCR4="c" * 96), **{mt.DIGEST_TAG: digest}))
    mt.cross_check(AMI, tags(M, **{mt.DIGEST_TAG: digest}))
    uki = "ab" * 32
    with pytest.raises(mt.TagError, match="no attestable:UkiSHA256 tag"):
        mt.cross_check(AMI, tags(M), expected_uki_sha256=uki)
    with pytest.raises(mt.TagError, match="not the image you meant"):
        mt.cross_check(AMI, tags(M, **{mt.UKI_TAG: "cd" * 32}), expected_uki_sha256=uki)
    dummy, notes = mt.cross_check(AMI, tags(M, **{mt.UKI_TAG: uki}), expected_uki_sha256=uki.upper())
    assert any("mix-up" in n for n in notes)
