# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Looking principals up in IAM before PutKeyPolicy (issue 13 item 10), with IAM's answers given as a function."""
from ansible_collections.attestable.ami.plugins.module_utils._aws import iam_principals

ACCOUNT = "111122223333"
KNOWN = {("role", "App"): "arn:aws:iam::%s:role/App" % ACCOUNT,
         ("role", "Pathed"): "arn:aws:iam::%s:role/team/Pathed" % ACCOUNT,
         ("user", "alice"): "arn:aws:iam::%s:user/alice" % ACCOUNT}


def get_arn(kind, name):
    if name == "Secret":
        raise LookupError("IAM answered AccessDenied")
    return KNOWN.get((kind, name))


def test_each_principal_gets_a_status():
    principals = ["arn:aws:iam::%s:role/App" % ACCOUNT, "arn:aws:iam::%s:role/team/Pathed" % ACCOUNT,
                  "arn:aws:iam::%s:role/Pathed" % ACCOUNT, "arn:aws:iam::%s:role/Gone" % ACCOUNT,
                  "arn:aws:iam::%s:user/alice" % ACCOUNT, "arn:aws:iam::%s:root" % ACCOUNT,
                  "arn:aws:iam::444455556666:role/App", "arn:aws:iam::%s:role/Secret" % ACCOUNT]
    results = iam_principals.check(principals, ACCOUNT, get_arn)
    assert [r.status for r in results] == ["exists", "exists", "missing", "missing", "exists", "skipped", "skipped",
                                           "unchecked"]
    assert "another path" in results[2].detail and "AccessDenied" in results[7].detail
    message = iam_principals.missing_message(results)
    assert "role/Pathed (IAM's role Pathed is arn:aws:iam::111122223333:role/team/Pathed" in message
    assert "role/Gone (IAM has no role named Gone)" in message and "MalformedPolicyDocumentException" in message
    assert iam_principals.missing_message(results[:2]) is None
