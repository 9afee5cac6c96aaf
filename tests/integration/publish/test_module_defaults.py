# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""meta/runtime.yml: the aws action group extends amazon.aws.aws, so one module_defaults entry for
group/attestable.ami.aws sets region, endpoint and credentials for this collection's modules and amazon.aws's."""

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/attestable.ami.aws:
      region: eu-west-3
      endpoint_url: "{{ endpoint }}"
      access_key: AKIAGROUPDEFAULTS000
      secret_key: group-defaults-secret
  tasks:
    - name: Upload the image
      attestable.ami.snapshot_upload:
        src: "{{ src }}"
        workers: 2
      register: upload

    - name: Read the snapshot with amazon.aws
      amazon.aws.ec2_snapshot_info:
        snapshot_ids: ["{{ upload.snapshot_id }}"]
      register: info
"""


def test_one_group_default_reaches_our_modules_and_amazon_aws(run_playbook, aws_proxy, aws, sparse_image):
    # The environment names another region (us-east-1) and other keys: only module_defaults can point both
    # modules at eu-west-3 through the proxy with these keys.
    result = run_playbook(PLAYBOOK, extra_vars={"src": sparse_image["path"], "endpoint": aws_proxy.url})
    assert result.rc == 0, result.stdout
    snapshot_id = result.task("Upload the image")["snapshot_id"]
    assert [s["snapshot_id"] for s in result.task("Read the snapshot with amazon.aws")["snapshots"]] == [snapshot_id]
    assert snapshot_id in aws.snapshot_ids("eu-west-3")
    assert snapshot_id not in aws.snapshot_ids("us-east-1")

    sent = aws_proxy.requests
    ebs = [r for r in sent if r["path"].startswith("/snapshots")]
    described = [r for r in sent if r["params"].get("Action") == "DescribeSnapshots"
                 and r["params"].get("SnapshotId.1") == snapshot_id]
    assert ebs and described  # both modules went through the endpoint from module_defaults
    assert set((r["region"], r["access_key"]) for r in sent) == set([("eu-west-3", "AKIAGROUPDEFAULTS000")])
