# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""awx/ is configuration as code for AWX: check it against what AWX and the collection accept, without a server.

- every awx.awx task uses only options (and workflow node suboptions) that the installed awx.awx modules document;
- every job template runs a project playbook that imports one of this collection's playbooks (syntax-checked);
- every survey question is typed as AWX types them, has a description and a default that fits its type, and
  asks for a variable that the playbook or one of the roles it runs documents.
"""
import glob
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
AWX = os.path.join(ROOT, "awx")
BIN = os.path.dirname(sys.executable)
SURVEY_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}


def load(name):
    with open(os.path.join(AWX, name)) as handle:
        return yaml.safe_load(handle)


def module_options(names):
    proc = subprocess.run([os.path.join(BIN, "ansible-doc"), "-j"] + list(names), capture_output=True, text=True,
                          check=False, env=dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg")))
    assert proc.returncode == 0, proc.stderr
    return dict((name, spec["doc"]["options"]) for name, spec in json.loads(proc.stdout).items())


def test_awx_tasks_use_only_documented_options():
    tasks = load("configure.yml")[0]["tasks"]
    used = [(name, args) for task in tasks for name, args in task.items() if name.startswith("awx.awx.")]
    needed = {"awx.awx.credential", "awx.awx.project", "awx.awx.job_template", "awx.awx.workflow_job_template",
              "awx.awx.execution_environment"}
    assert {name for name, _args in used} >= needed
    options = module_options(sorted({name for name, _args in used}))
    for name, args in used:
        unknown = sorted(set(args) - set(options[name]))
        assert not unknown, "%s: %s are not options of the module" % (name, unknown)
        for option, value in args.items():
            choices = options[name][option].get("choices")
            if choices and "{{" not in str(value):
                assert value in choices, "%s: %s=%r not in %s" % (name, option, value, choices)
    node_options = options["awx.awx.workflow_job_template"]["workflow_nodes"]["suboptions"]
    for _name, args in [u for u in used if u[0] == "awx.awx.workflow_job_template"]:
        identifiers = [node["identifier"] for node in args["workflow_nodes"]]
        for node in args["workflow_nodes"]:
            assert set(node) <= set(node_options), set(node) - set(node_options)
            for child in node.get("related", {}).get("success_nodes", []):
                assert child["identifier"] in identifiers
        templates = [t["name"] for t in load("job_templates.yml")]
        assert all(n["unified_job_template"]["name"] in templates for n in args["workflow_nodes"])


def role_and_playbook_variables(playbook_name):
    """Variables a collection playbook documents: its vars, and the argument_specs of every role it runs."""
    with open(os.path.join(ROOT, "playbooks", playbook_name)) as handle:
        text = handle.read()
    known = set(re.findall(r"^\s{4}([a-z_][a-z0-9_]*):", text, re.M))
    for role in set(re.findall(r"attestable\.ami\.([a-z_]+)", text)):
        spec_path = os.path.join(ROOT, "roles", role, "meta", "argument_specs.yml")
        if os.path.isfile(spec_path):
            with open(spec_path) as handle:
                known |= set(yaml.safe_load(handle)["argument_specs"]["main"]["options"])
    return known


@pytest.mark.parametrize("template", load("job_templates.yml"), ids=lambda t: t["name"])
def test_job_template(template):
    project_playbook = os.path.join(AWX, "project", template["playbook"])
    with open(project_playbook) as handle:
        imported = re.search(r"import_playbook: attestable\.ami\.([a-z_]+)", handle.read()).group(1)
    assert os.path.isfile(os.path.join(ROOT, "playbooks", imported + ".yml"))
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "--syntax-check", project_playbook],
                          capture_output=True, text=True, check=False,
                          env=dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg")))
    assert proc.returncode == 0, proc.stdout + proc.stderr

    known = role_and_playbook_variables(imported + ".yml")
    spec = template["survey"]["spec"]
    assert spec and template["survey"]["description"]
    for question in spec:
        assert question["type"] in SURVEY_TYPES, question
        assert question["question_name"] and question["question_description"], question
        assert "default" in question and "required" in question, question
        assert question["variable"] in known, "%s asks for %s, which %s does not take (known: %s)" % (
            template["name"], question["variable"], imported, sorted(known))
        if question["type"] == "multiplechoice":
            assert question["default"] in question["choices"], question
        if question["type"] == "multiselect":
            assert set(question["default"].split("\n")) <= set(question["choices"]), question
        if question["type"] == "integer":
            assert question["min"] <= question["default"] <= question["max"], question
        if question["type"] == "text" and question["required"] is False:
            assert question["min"] == 0, question


def test_every_collection_job_has_a_template():
    playbooks = {os.path.basename(p) for p in glob.glob(os.path.join(AWX, "project", "*.yml"))}
    templates = {t["playbook"] for t in load("job_templates.yml")}
    assert templates == playbooks
    assert {"build_and_publish.yml", "authorize.yml", "retire.yml", "verify.yml", "builder_teardown.yml"} <= templates
