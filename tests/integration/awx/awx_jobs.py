# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run the job templates of awx/job_templates.yml the way AWX runs a job: ansible-runner in a fresh private data dir.

What AWX does for a job, and what this module does in its place (no AWX server runs here):
- Launch: extra variables are the template's extra_vars, then each survey default that passes AWX's own survey
  validation, then the launch's variables (survey answers, or the workflow's ancestor artifacts), in AWX's order
  of precedence (awx/main/models/mixins.py, SurveyJobTemplateMixin). A launch whose variables break a survey
  rule (required, type, length, range, choice) is refused, as AWX refuses it.
- Private data dir: project/ is a copy of awx/project; requirements_collections/ holds what
  `ansible-galaxy collection install -r project/collections/requirements.yml` installs (AWX's project update),
  with attestable.ami taken from this checkout as a directory source (galaxy.yml's build_ignore applies, as in a
  release); amazon.aws comes from the execution environment, which here is the controller's ansible package (its
  version is checked against the requirement). inventory/hosts is the inventory awx/configure.yml creates.
- Environment: AWX's "Amazon Web Services" credential injects AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and, with a
  token, AWS_SECURITY_TOKEN and AWS_SESSION_TOKEN; the moto endpoint (AWS_ENDPOINT_URL) stands in for AWS. The
  ansible-runner process gets nothing else from the test's environment: PATH, LANG, HOME = the private data dir
  (an execution environment's /runner) and TMPDIR inside it. It is started from an empty directory of its own
  (the node's working directory, also $PWD), so a job that writes where $PWD points is caught.
- Result: the job's events (artifacts/<ident>/job_events) and its artifacts, the `artifact_data` of the
  playbook_on_stats event, which AWX stores as the job's artifacts and passes on to the workflow's next job.
"""
import glob
import json
import os
import shutil
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
AWX = os.path.join(ROOT, "awx")
BIN = os.path.dirname(sys.executable)


def load(name):
    with open(os.path.join(AWX, name)) as handle:
        return yaml.safe_load(handle)


def template(name):
    """The job template of awx/job_templates.yml with this name."""
    found = [t for t in load("job_templates.yml") if t["name"] == name]
    assert found, "no job template named %r" % name
    return found[0]


def inventory():
    """The inventory awx/configure.yml creates: its hosts with the variables it gives them."""
    tasks = load("configure.yml")[0]["tasks"]
    hosts = dict((task["awx.awx.host"]["name"], task["awx.awx.host"].get("variables", {}))
                 for task in tasks if "awx.awx.host" in task)
    assert hosts, "awx/configure.yml creates no host"
    # configure.yml escapes the braces for its own templating: AWX stores the text between them.
    text = json.dumps(hosts).replace("{{ '{{' }}", "{{").replace("{{ '}}' }}", "}}")
    return {"all": {"hosts": json.loads(text)}}


def survey_errors(question, data):
    """AWX's validation of one survey question against the variables of a launch (empty: accepted)."""
    name, kind = question["variable"], question["type"]
    if name not in data:
        return ["%r value missing" % name] if question["required"] else []
    value = data[name]
    if kind in ("text", "textarea", "password"):
        if not isinstance(value, str):
            return ["value %r for %r expected to be a string" % (value, name)]
        errors = []
        if question.get("min") not in ("", None) and len(value) < int(question["min"]):
            errors.append("%r value %r is too small (at least %s characters)" % (name, value, question["min"]))
        if question.get("max") not in ("", None) and len(value) > int(question["max"]):
            errors.append("%r value %r is too large (at most %s characters)" % (name, value, question["max"]))
        return errors
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):  # AWX takes only a true int
            return ["value %r for %r expected to be an integer" % (value, name)]
        if question.get("min") not in ("", None) and value < int(question["min"]):
            return ["%r value %r is too small" % (name, value)]
        if question.get("max") not in ("", None) and value > int(question["max"]):
            return ["%r value %r is too large" % (name, value)]
        return []
    choices = question.get("choices", [])
    if isinstance(choices, str):
        choices = [c for c in choices.splitlines() if c.strip()]
    if kind == "multiselect":
        if not isinstance(value, list):
            return ["%r value is expected to be a list" % name]
        return ["value %r for %r expected to be one of %s" % (v, name, choices) for v in value if v not in choices]
    if kind == "multiplechoice":
        return [] if value in choices else ["value %r for %r expected to be one of %s" % (value, name, choices)]
    raise AssertionError("survey type %r is not one AWX has" % kind)


def launch_vars(job_template, template_vars=None, launch=None):
    """A job's extra variables, as AWX composes them for a launch with these variables.

    template_vars: the job template's extra_vars (awx/configure.yml's awx_job_extra_vars); launch: the
    survey answers or, for a workflow node, the ancestors' artifacts. Raises AssertionError when AWX would
    refuse the launch.
    """
    launch = dict(launch or {})
    launch.pop("_ansible_no_log", None)
    extra = dict(template_vars or {})
    for question in job_template["survey"]["spec"]:
        default = question.get("default")
        if default is not None and not survey_errors(question, {question["variable"]: default}):
            extra[question["variable"]] = default
    extra.update(launch)
    errors = [e for question in job_template["survey"]["spec"] for e in survey_errors(question, extra)]
    assert not errors, "AWX would refuse to launch %s: %s" % (job_template["name"], "; ".join(errors))
    return extra


def collection_requirements():
    """project/collections/requirements.yml as this test installs it: attestable.ami from this checkout.

    Returns (requirements for ansible-galaxy, {name: version spec} of what the execution environment provides).
    """
    with open(os.path.join(AWX, "project", "collections", "requirements.yml")) as handle:
        wanted = yaml.safe_load(handle)["collections"]
    install, from_ee = [], {}
    for entry in wanted:
        if entry["name"] == "attestable.ami":
            install.append({"name": ROOT, "type": "dir"})
        else:
            from_ee[entry["name"]] = entry.get("version", "*")
    assert install, "awx/project/collections/requirements.yml does not name attestable.ami"
    return install, from_ee


class Job(object):
    """A finished job: rc, status, stdout, events, artifacts (the playbook_on_stats event's artifact_data)."""

    def __init__(self, private_data_dir, ident, proc):
        self.private_data_dir = private_data_dir
        self.rc = proc.returncode
        self.runner_output = proc.stdout + proc.stderr
        artifacts = os.path.join(private_data_dir, "artifacts", ident)
        with open(os.path.join(artifacts, "status")) as handle:
            self.status = handle.read().strip()
        with open(os.path.join(artifacts, "stdout")) as handle:
            self.stdout = handle.read()
        events = []
        for path in glob.glob(os.path.join(artifacts, "job_events", "*.json")):
            with open(path) as handle:
                events.append(json.load(handle))
        self.events = sorted(events, key=lambda e: e["counter"])
        stats = [e for e in self.events if e["event"] == "playbook_on_stats"]
        self.artifacts = stats[-1]["event_data"].get("artifact_data", {}) if stats else {}

    def results(self, task_name):
        """The results (event_data.res) of every run of the task with this name, in order."""
        return [e["event_data"]["res"] for e in self.events
                if e["event"] in ("runner_on_ok", "runner_on_failed", "runner_on_skipped")
                and e["event_data"].get("task") == task_name]

    def failed_tasks(self):
        return [e["event_data"].get("task") for e in self.events
                if e["event"] == "runner_on_failed" and not e["event_data"].get("ignore_errors")]

    def explain(self):
        return "status %s rc %s\n%s\n%s" % (self.status, self.rc, self.stdout[-8000:], self.runner_output[-2000:])


def run_job(job_template, private_data_dir, node_dir, extra_vars, credential, aws_endpoint_url, timeout=5400):
    """Run one job of job_template with ansible-runner in a new private_data_dir (which must not exist).

    node_dir: the working directory of the ansible-runner process (the AWX node's); credential: the AWS
    credential's {access_key, secret_key, security_token}.
    """
    os.makedirs(private_data_dir)
    project = os.path.join(private_data_dir, "project")
    shutil.copytree(os.path.join(AWX, "project"), project)
    os.makedirs(os.path.join(private_data_dir, "inventory"))
    os.makedirs(os.path.join(private_data_dir, "env"))
    os.makedirs(os.path.join(private_data_dir, "tmp"))
    with open(os.path.join(private_data_dir, "inventory", "hosts.json"), "w") as handle:
        json.dump(inventory(), handle)

    # The project update: the collections of project/collections/requirements.yml.
    install, _from_ee = collection_requirements()
    requirements = os.path.join(private_data_dir, "tmp", "requirements.yml")
    with open(requirements, "w") as handle:
        yaml.safe_dump({"collections": install}, handle)
    collections = os.path.join(private_data_dir, "requirements_collections")
    base_env = {"PATH": BIN + os.pathsep + "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG": "C.UTF-8", "HOME": private_data_dir, "TMPDIR": os.path.join(private_data_dir, "tmp"),
                "PWD": node_dir}
    proc = subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", "--no-deps", "-r",
                           requirements, "-p", collections], cwd=node_dir, env=base_env, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    envvars = {"AWS_ACCESS_KEY_ID": credential["access_key"], "AWS_SECRET_ACCESS_KEY": credential["secret_key"],
               "AWS_ENDPOINT_URL": aws_endpoint_url,
               "ANSIBLE_COLLECTIONS_PATH": collections,
               "ANSIBLE_FORCE_COLOR": "false", "ANSIBLE_HOST_KEY_CHECKING": "false",
               # An execution environment's user has its $HOME (/runner) as its passwd home; root here has /root.
               # ansible expands ~ from the passwd entry for async_status but from $HOME in the async wrapper:
               # give the async directory as a path, as it ends up in the EE (the KIWI build runs async).
               "ANSIBLE_ASYNC_DIR": os.path.join(private_data_dir, ".ansible_async")}
    if credential.get("security_token"):
        envvars.update(AWS_SECURITY_TOKEN=credential["security_token"], AWS_SESSION_TOKEN=credential["security_token"])
    with open(os.path.join(private_data_dir, "env", "envvars"), "w") as handle:
        json.dump(envvars, handle)
    with open(os.path.join(private_data_dir, "env", "extravars"), "w") as handle:
        json.dump(extra_vars, handle)
    with open(os.path.join(private_data_dir, "env", "settings"), "w") as handle:
        json.dump({"suppress_ansible_output": True, "job_timeout": timeout}, handle)

    ident = "job"
    proc = subprocess.run([os.path.join(BIN, "ansible-runner"), "run", private_data_dir, "--ident", ident,
                           "-p", job_template["playbook"]],
                          cwd=node_dir, env=base_env, capture_output=True, text=True, check=False,
                          timeout=timeout + 300)
    return Job(private_data_dir, ident, proc)


def tree(path):
    """Every file and directory under path (relative), to compare before and after."""
    found = set()
    for parent, dirs, files in os.walk(path):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(parent, name), path))
    return found
