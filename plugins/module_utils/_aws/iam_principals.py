# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Do the IAM principals a key policy will name exist? KMS refuses a policy naming a role or user that does not
exist (MalformedPolicyDocumentException), and only after the rest of the run; ask IAM first.

Plain Python (3.9+), no Ansible or boto imports: the caller passes functions that ask IAM.
"""

import re

_IAM_ARN = re.compile(r"^arn:aws[a-z-]*:iam::([0-9]{12}):(role|user)/(?:[\w+=,.@/-]*/)?([\w+=,.@-]+)$")


class Lookup(object):
    """How one principal was checked: status is "exists", "missing", "skipped" or "unchecked"."""

    def __init__(self, principal, status, detail=""):
        self.principal = principal
        self.status = status
        self.detail = detail


def check(principals, account, get_arn):
    """Look every role/user principal of `account` up. get_arn(kind, name) returns the ARN IAM knows for that
    role or user, None when IAM says it does not exist, and raises LookupError(reason) when it cannot tell
    (access denied, ...). Account roots and principals of other accounts are skipped (IAM of this account cannot
    see them)."""
    results = []
    for principal in principals:
        match = _IAM_ARN.match(principal)
        if not match:
            results.append(Lookup(principal, "skipped", "an account root is not an IAM role or user"))
            continue
        if account and match.group(1) != account:
            results.append(Lookup(principal, "skipped", "it belongs to account %s, not to the caller's %s"
                                  % (match.group(1), account)))
            continue
        kind, name = match.group(2), match.group(3)
        try:
            found = get_arn(kind, name)
        except LookupError as exc:
            results.append(Lookup(principal, "unchecked", str(exc)))
            continue
        if found is None:
            results.append(Lookup(principal, "missing", "IAM has no %s named %s" % (kind, name)))
        elif found != principal:
            results.append(Lookup(principal, "missing", "IAM's %s %s is %s (another path)" % (kind, name, found)))
        else:
            results.append(Lookup(principal, "exists"))
    return results


def missing_message(results):
    missing = [r for r in results if r.status == "missing"]
    if not missing:
        return None
    return ("principals that do not exist: %s. KMS refuses a key policy naming them (MalformedPolicyDocumentException); "
            "create them first or fix the ARNs" % "; ".join("%s (%s)" % (r.principal, r.detail) for r in missing))
