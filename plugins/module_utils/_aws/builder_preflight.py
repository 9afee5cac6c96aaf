# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pre-launch checks of the builder: subnets in zones that offer the instance type, and whether IAM policy
documents allow a list of actions. Plain Python (3.9+), no AWS calls (the module makes them)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re

try:
    from urllib.parse import unquote
except ImportError:  # pragma: no cover
    from urllib import unquote  # type: ignore


def _as_list(value):
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def action_matches(pattern, action):
    """IAM action matching: case-insensitive, '*' and '?' wildcards only (no bracket classes)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.match("^%s$" % regex, action, re.IGNORECASE) is not None


def _statement_covers(statement, action):
    if "NotAction" in statement:
        return not any(action_matches(p, action) for p in _as_list(statement["NotAction"]))
    return any(action_matches(p, action) for p in _as_list(statement.get("Action")))


def policy_document(raw):
    """A policy document as IAM returns it: a dict (boto3 decodes it) or URL-encoded JSON."""
    if isinstance(raw, dict):
        return raw
    return json.loads(unquote(raw))


def missing_actions(documents, actions):
    """The actions that no Allow statement covers, or that an unconditional Deny on every resource covers.

    An approximation of IAM's evaluation for a pre-launch check: conditions on an Allow are assumed satisfiable
    and an Allow's resources are not compared (the snapshot does not exist yet); permission boundaries and
    organization SCPs are not seen. IAM's policy simulator, where allowed, is the better source.
    """
    statements = []
    for document in documents:
        statements.extend(_as_list(document.get("Statement")))
    missing = []
    for action in actions:
        allowed = any(s.get("Effect") == "Allow" and _statement_covers(s, action) for s in statements)
        denied = any(s.get("Effect") == "Deny" and "Condition" not in s and _statement_covers(s, action)
                     and "*" in _as_list(s.get("Resource")) for s in statements)
        if denied or not allowed:
            missing.append(action)
    return missing


def subnets_in_zones(subnets, zones):
    """The subnets (dicts with subnet_id and availability_zone) in the given zones, sorted by zone then id;
    all of them, sorted, when zones is None (the offerings could not be read)."""
    ordered = sorted(subnets, key=lambda s: (s.get("availability_zone") or "", s.get("subnet_id") or ""))
    if zones is None:
        return ordered
    return [s for s in ordered if s.get("availability_zone") in zones]
