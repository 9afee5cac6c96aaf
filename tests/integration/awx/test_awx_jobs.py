# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The job templates of awx/job_templates.yml, run as AWX runs jobs (see awx_jobs.py): ansible-runner, each job in
its own fresh private data dir, extra variables from the survey defaults plus the test's answers, AWS credentials
only as AWX's credential injects them (environment variables), against a moto server over HTTP.

The build job runs once for this module (a real KIWI build of the local profile's Debian flavour on this machine,
published to moto; minutes). The workflow build -> authorize hands the second job nothing but the first job's
artifacts (the playbook_on_stats event's artifact_data, as AWX passes them); verify and retire follow on the same
image. The teardown job removes a leaked builder found by its run id.
"""
import json
import os
import socket
import subprocess
import time
import urllib.request

import boto3
import pytest
import yaml

import awx_jobs
from ansible_collections.attestable.ami.plugins.filter.kms_attestation_allows import kms_attestation_allows

ACCOUNT = "123456789012"  # moto's account
APP_ROLE = "arn:aws:iam::%s:role/AppInstanceRole" % ACCOUNT
ADMIN_ROLE = "arn:aws:iam::%s:role/KeyAdministrator" % ACCOUNT
KEY_ALIAS = "alias/attestable-awx"
CREDENTIAL = {"access_key": "AKIAAWXTESTCREDENTIAL", "secret_key": "awx-test-secret",
              "security_token": "awx-test-session-token"}
# awx/configure.yml's awx_job_extra_vars for this team: set once, given to every job template.
TEAM_VARS = {"kms_authorize_keys": [{"key_id": KEY_ALIAS, "region": "us-east-1"}],
             "kms_authorize_principals": [APP_ROLE], "kms_authorize_aws_region": "us-east-1",
             "verify_principals": [APP_ROLE]}
KEY_POLICY = {"Version": "2012-10-17", "Id": "attestable-awx", "Statement": [
    {"Sid": "KeyAdministration", "Effect": "Allow", "Principal": {"AWS": ADMIN_ROLE},
     "Action": ["kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*",
                "kms:Get*", "kms:TagResource", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion"],
     "Resource": "*"}]}


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Aws(object):
    def __init__(self, url):
        self.url = url

    def client(self, service, region="us-east-1"):
        return boto3.client(service, region_name=region, endpoint_url=self.url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def key_policy(self):
        return json.loads(self.client("kms").get_key_policy(KeyId=self.key_id, PolicyName="default")["Policy"])


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    """A moto server of its own (a separate process, over HTTP) for this module's jobs, with the team's account:
    the instance role and key administrator in IAM, and the team's KMS key."""
    port = _free_port()
    log = open(str(tmp_path_factory.mktemp("moto") / "moto.log"), "w")
    server = subprocess.Popen([os.path.join(awx_jobs.BIN, "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    url = "http://127.0.0.1:%d" % port
    try:
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=5).close()
                break
            except OSError:
                assert time.time() < deadline, "the moto server did not start"
                time.sleep(0.2)
        result = Aws(url)
        trust = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Service": "ec2.amazonaws.com"}}]}
        for role in (APP_ROLE, ADMIN_ROLE):
            result.client("iam").create_role(RoleName=role.rsplit("/", 1)[1], AssumeRolePolicyDocument=json.dumps(trust))
        key = result.client("kms").create_key(Policy=json.dumps(KEY_POLICY))["KeyMetadata"]
        result.client("kms").create_alias(AliasName=KEY_ALIAS, TargetKeyId=key["KeyId"])
        result.key_arn, result.key_id = key["Arn"], key["KeyId"]
        yield result
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


class Jobs(object):
    """Where this module's jobs run: one private data dir per job under jobs/, the node's working directory
    node/ (empty), and what must not change outside them."""

    def __init__(self, workspace, aws):
        self.workspace, self.aws = workspace, aws
        self.node = os.path.join(workspace, "node")
        self.jobs = os.path.join(workspace, "jobs")
        os.makedirs(self.node)
        os.makedirs(self.jobs)
        self.done = {}
        self.checkout_before = self.checkout_state()

    @staticmethod
    def checkout_state():
        """Every file and directory of the checkout (not following links) with its size and mtime, less what the
        pytest process running this test writes itself (byte code, its cache) and git's own files."""
        state = {}
        for parent, dirs, files in os.walk(awx_jobs.ROOT):
            dirs[:] = [d for d in dirs if d not in (".git", "__pycache__", ".pytest_cache", ".hypothesis")]
            for name in dirs + files:
                path = os.path.join(parent, name)
                stat = os.lstat(path)
                state[os.path.relpath(path, awx_jobs.ROOT)] = (stat.st_size, stat.st_mtime)
        return state

    def run(self, name, template_vars, launch, label=None):
        job_template = awx_jobs.template(name)
        extra_vars = awx_jobs.launch_vars(job_template, template_vars, launch)
        label = label or name.split(": ", 1)[1].replace(" ", "_")
        job = awx_jobs.run_job(job_template, os.path.join(self.jobs, label), self.node, extra_vars, CREDENTIAL,
                               self.aws.url)
        self.done[label] = job
        return job

    def assert_nothing_outside_the_private_data_dirs(self):
        assert os.listdir(self.node) == [], "a job wrote into the node's working directory: %s" % os.listdir(self.node)
        assert sorted(os.listdir(self.workspace)) == ["jobs", "node"]
        after = self.checkout_state()
        changed = sorted(p for p in set(after) | set(self.checkout_before)
                         if after.get(p) != self.checkout_before.get(p))
        assert changed == [], "the jobs changed files in the checkout: %s" % changed[:20]


def _mounts_under(path):
    with open("/proc/self/mounts") as handle:
        points = [line.split()[1].replace("\\040", " ") for line in handle]
    return [p for p in points if p == path or p.startswith(path.rstrip("/") + "/")]


@pytest.fixture(scope="module")
def jobs(tmp_path_factory, aws):
    result = Jobs(str(tmp_path_factory.mktemp("awx-jobs")), aws)
    yield result
    # A KIWI build binds /dev, /proc, /sys and its package cache into its root while it runs. If a job left one
    # mounted (a build that outlived its job), removing the temporary directory later would reach through it.
    left = _mounts_under(result.workspace)
    for point in sorted(left, reverse=True):
        subprocess.run(["umount", "--lazy", point], check=False)
    assert not left, "jobs left mounts behind (unmounted now): %s" % left


def local_profile():
    """The local profile's settings (playbooks/vars/local.yml) as launch variables: this machine is the existing
    builder, moto is AWS. The authorize settings of the profile are left out (the team's extra variables hold them)."""
    with open(os.path.join(awx_jobs.ROOT, "playbooks", "vars", "local.yml")) as handle:
        profile = yaml.safe_load(handle)
    return dict((k, v) for k, v in profile.items() if not k.startswith("kms_authorize_"))


@pytest.fixture(scope="module")
def build_job(jobs):
    """The build_and_publish job template, run once: a real KIWI build of the local profile, booted to userspace
    on OVMF + swtpm (the second measurement engine the pipeline needs here: no nitro-tpm-pcr-compute), published
    to moto in us-east-1 and copied to eu-west-1."""
    if os.geteuid() != 0:
        pytest.skip("kiwi-ng system build needs root")
    pytest.importorskip("kiwi")
    launch = dict(local_profile(), attestable_aws_region="us-east-1")
    for attempt in range(4):
        job = jobs.run("attestable: build_and_publish", TEAM_VARS, launch, label="build_and_publish-%d" % attempt)
        # Another KIWI build on this machine may hold KIWI's shared apt cache lock: run the job again, later.
        kiwi_log = os.path.join(job.private_data_dir, "project", "artifacts", "kiwi-build.log")
        log = open(kiwi_log).read() if os.path.isfile(kiwi_log) else ""
        if job.rc == 0 or "Could not get lock" not in job.stdout + log or attempt == 3:
            return job
        time.sleep(60)
    return job


def test_the_project_requirements_are_met_by_the_checkout_and_the_execution_environment(tmp_path):
    install, from_ee = awx_jobs.collection_requirements()
    assert install == [{"name": awx_jobs.ROOT, "type": "dir"}]
    # What the execution environment (here: the controller's ansible package) holds, outside this checkout.
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith("ANSIBLE_"))
    proc = subprocess.run([os.path.join(awx_jobs.BIN, "ansible-galaxy"), "collection", "list", "--format", "json"],
                          capture_output=True, text=True, check=True, cwd=str(tmp_path), env=env)
    installed = {}
    for collections in json.loads(proc.stdout).values():
        for name, info in collections.items():
            installed.setdefault(name, info["version"])
    from ansible.module_utils.compat.version import LooseVersion
    for name, spec in from_ee.items():
        assert name in installed, "%s (project requirement) is not in the execution environment" % name
        assert spec.startswith(">="), spec
        assert LooseVersion(installed[name]) >= LooseVersion(spec[2:]), (name, installed[name], spec)


def test_launch_is_refused_as_awx_refuses_it():
    retire = awx_jobs.template("attestable: retire")
    with pytest.raises(AssertionError, match="'kms_authorize_ami_id' value missing"):
        awx_jobs.launch_vars(retire, TEAM_VARS, {})
    authorize = awx_jobs.template("attestable: authorize")
    with pytest.raises(AssertionError, match="expected to be an integer"):
        awx_jobs.launch_vars(authorize, TEAM_VARS, {"kms_authorize_keep": "2"})
    # Survey defaults fill what the launch leaves out; the launch's own variables win over the template's.
    extra = awx_jobs.launch_vars(authorize, dict(TEAM_VARS, kms_authorize_keep=5), {"kms_authorize_strict": "false"})
    assert extra["kms_authorize_keep"] == 2 and extra["kms_authorize_strict"] == "false"
    assert extra["kms_authorize_principals"] == [APP_ROLE]
    # A workflow node answers no survey: the templates a workflow (or a schedule) may run launch on their defaults.
    for name in ("attestable: build_and_publish", "attestable: authorize", "attestable: verify"):
        awx_jobs.launch_vars(awx_jobs.template(name), TEAM_VARS, {})


@pytest.mark.slow
def test_build_job_builds_publishes_and_passes_the_manifest_as_artifacts(build_job, aws, jobs):
    assert build_job.rc == 0 and build_job.status == "successful", build_job.explain()
    artifacts = build_job.artifacts
    manifest = artifacts["attestable_manifest"]
    assert sorted(artifacts["attestable_amis"]) == ["eu-west-1", "us-east-1"]
    assert artifacts["attestable_amis"] == manifest["amis"]
    assert artifacts["attestable_snapshot"]["snapshot_id"].startswith("snap-")
    assert artifacts["attestable_measurements"]["boot_mode"] == "standard"
    assert artifacts["attestable_measurements"]["PCR12"] == "0" * 96
    # What the job says it published is in AWS, tagged with the measurements it passes on.
    for region, ami in manifest["amis"].items():
        image = aws.client("ec2", region).describe_images(ImageIds=[ami])["Images"][0]
        tags = dict((t["Key"], t["Value"]) for t in image.get("Tags", []))
        assert tags["attestable:PCR4"].lower() == manifest["measurements"]["PCR4"]
        assert image["BootMode"] == "uefi"  # (moto keeps no TpmSupport; tests/integration/publish checks what is sent)
    # The job's files stayed in its private data dir (its project copy), and the manifest it wrote there is the one
    # it passed on.
    with open(os.path.join(build_job.private_data_dir, "project", "artifacts", "manifest.json")) as handle:
        assert json.load(handle) == manifest
    assert manifest["image"]["disk"].startswith(os.path.join(build_job.private_data_dir, "project", "artifacts"))
    jobs.assert_nothing_outside_the_private_data_dirs()


@pytest.mark.slow
def test_workflow_authorize_job_binds_the_key_to_the_ami_the_build_job_produced(build_job, aws, jobs):
    assert build_job.rc == 0, build_job.explain()
    built = build_job.artifacts["attestable_manifest"]
    ami = built["amis"]["us-east-1"]
    # The workflow's second node: its launch variables are the first job's artifacts, nothing else.
    job = jobs.run("attestable: authorize", TEAM_VARS, build_job.artifacts)
    assert job.rc == 0 and job.status == "successful", job.explain()

    policy = aws.key_policy()
    assert [s["Sid"] for s in policy["Statement"]] == ["KeyAdministration", "AttestableAMI-" + ami]
    pcrs = built["measurements"]
    assert kms_attestation_allows(policy, APP_ROLE, "kms:Decrypt", pcrs)
    assert kms_attestation_allows(policy, APP_ROLE, "kms:GenerateDataKey", pcrs)
    # Another image (another UKI, so another PCR4), the same image with an injected command line (PCR12), no
    # attestation at all, and the key administrators: all refused.
    other_image = dict(pcrs, PCR4=("%096x" % (int(pcrs["PCR4"], 16) ^ 1)))
    assert not kms_attestation_allows(policy, APP_ROLE, "kms:Decrypt", other_image)
    assert not kms_attestation_allows(policy, APP_ROLE, "kms:Decrypt", dict(pcrs, PCR12="ab" * 48))
    assert not kms_attestation_allows(policy, APP_ROLE, "kms:Decrypt", {})
    assert not kms_attestation_allows(policy, ADMIN_ROLE, "kms:Decrypt", pcrs)

    # It passes the manifest on with the binding recorded, for the next job.
    assert job.artifacts["attestable_kms"] == [{"key_arn": aws.key_arn, "region": "us-east-1", "image": ami,
                                                "statement_id": "AttestableAMI-" + ami, "changed": True}]
    assert job.artifacts["attestable_manifest"]["amis"] == built["amis"]
    assert [e["statement_id"] for e in job.artifacts["attestable_manifest"]["kms"]] == ["AttestableAMI-" + ami]
    jobs.assert_nothing_outside_the_private_data_dirs()


@pytest.mark.slow
def test_verify_job_passes_on_the_binding_and_fails_when_it_is_weakened(build_job, aws, jobs):
    assert "authorize" in jobs.done, "the authorize job did not run before"
    manifest = jobs.done["authorize"].artifacts["attestable_manifest"]
    job = jobs.run("attestable: verify", TEAM_VARS, {"attestable_manifest": manifest}, label="verify")
    assert job.rc == 0 and job.status == "successful", job.explain()
    assert job.artifacts["attestable_manifest"] == manifest
    assert job.artifacts["attestable_verified"]["principals"] == [APP_ROLE]
    assert [e["key_arn"] for e in job.artifacts["attestable_verified"]["kms"]] == [aws.key_arn]

    # Someone drops PCR12 from the image's statement: an injected kernel command line would decrypt.
    policy = aws.key_policy()
    weakened = json.loads(json.dumps(policy))
    for statement in weakened["Statement"]:
        for operator in statement.get("Condition", {}).values():
            operator.pop("kms:RecipientAttestation:NitroTPMPCR12", None)
    aws.client("kms").put_key_policy(KeyId=aws.key_id, PolicyName="default", Policy=json.dumps(weakened))
    try:
        job = jobs.run("attestable: verify", TEAM_VARS, {"attestable_manifest": manifest}, label="verify-weakened")
        assert job.rc != 0 and job.status == "failed"
        assert job.failed_tasks() == ["Every key lets the image in and keeps everything else out"]
        assert "PCR12" in job.stdout
    finally:
        aws.client("kms").put_key_policy(KeyId=aws.key_id, PolicyName="default", Policy=json.dumps(policy))
    jobs.assert_nothing_outside_the_private_data_dirs()


@pytest.mark.slow
def test_retire_job_removes_the_image_from_the_key_given_only_the_ami_id(build_job, aws, jobs):
    ami = build_job.artifacts["attestable_amis"]["us-east-1"]
    assert "AttestableAMI-" + ami in [s.get("Sid") for s in aws.key_policy()["Statement"]], "not authorized before"
    # The survey's one question; no manifest (a retire job may run months later, from the AMI id alone).
    job = jobs.run("attestable: retire", TEAM_VARS, {"kms_authorize_ami_id": ami})
    assert job.rc == 0 and job.status == "successful", job.explain()
    policy = aws.key_policy()
    assert [s["Sid"] for s in policy["Statement"]] == ["KeyAdministration"]
    assert not kms_attestation_allows(policy, APP_ROLE, "kms:Decrypt", build_job.artifacts["attestable_measurements"])
    assert job.artifacts["attestable_kms"][0]["changed"] is True
    jobs.assert_nothing_outside_the_private_data_dirs()


def _builder_run(ec2, image_id, run_id):
    """A builder left behind by run run_id: instance, security group and key pair tagged as the builder role
    tags them."""
    name = "attestable-builder-" + run_id
    tags = [{"Key": "attestable:RunId", "Value": run_id}, {"Key": "attestable:Role", "Value": "builder"},
            {"Key": "Name", "Value": name}]
    group = ec2.create_security_group(GroupName=name, Description="builder " + run_id,
                                      TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}])["GroupId"]
    ec2.create_key_pair(KeyName=name, TagSpecifications=[{"ResourceType": "key-pair", "Tags": tags}])
    instance = ec2.run_instances(ImageId=image_id, InstanceType="m7i.large", MinCount=1, MaxCount=1, KeyName=name,
                                 SecurityGroupIds=[group],
                                 TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])["Instances"][0]
    return {"instance": instance["InstanceId"], "group": group, "key": name}


def _live(ec2):
    instances = sorted(i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
                       if i["State"]["Name"] != "terminated")
    groups = sorted(g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default")
    keys = sorted(k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"])
    return {"instances": instances, "groups": groups, "keys": keys}


def test_builder_teardown_job_removes_the_leaked_builder_and_nothing_else(aws, jobs):
    # The survey's default region (eu-west-1): the leaked builder, a builder of another run whose id extends this
    # one's, and an unrelated instance.
    ec2 = aws.client("ec2", "eu-west-1")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    leaked = _builder_run(ec2, image, "20261129T230000Z-a1b2c3")
    other = _builder_run(ec2, image, "20261129T230000Z-a1b2c3.2")
    unrelated = ec2.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1)["Instances"][0]
    before = _live(ec2)

    job = jobs.run("attestable: builder teardown", TEAM_VARS, {"builder_run_id": "20261129T230000Z-a1b2c3"})
    assert job.rc == 0 and job.status == "successful", job.explain()
    after = _live(ec2)
    assert after == {"instances": sorted(set(before["instances"]) - {leaked["instance"]}),
                     "groups": sorted(set(before["groups"]) - {leaked["group"]}),
                     "keys": sorted(set(before["keys"]) - {leaked["key"]})}
    assert {other["instance"], unrelated["InstanceId"]} <= set(after["instances"])
    state = ec2.describe_instances(InstanceIds=[leaked["instance"]])["Reservations"][0]["Instances"][0]["State"]
    assert state["Name"] == "terminated"
    assert job.artifacts["attestable_builder_teardown"] == {"run_id": "20261129T230000Z-a1b2c3",
                                                            "region": "eu-west-1", "kept": False}
    assert "Check that nothing of the run is left" not in job.failed_tasks()
    jobs.assert_nothing_outside_the_private_data_dirs()
