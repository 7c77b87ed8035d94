"""The GitHub workflows are valid, pass a security audit, and keep the GPU safe from pull requests."""

import subprocess
from pathlib import Path

import pytest
import yaml

WORKFLOWS = Path(__file__).resolve().parent.parent / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))


def load(path):
    data = yaml.safe_load(path.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def gpu_jobs(data):
    return {name: job for name, job in data["jobs"].items() if "gpu" in str(job.get("runs-on"))}


def test_the_workflows_exist():
    assert {p.name for p in FILES} == {"ci.yml", "gpu-benchmarks.yml", "nightly.yml"}


def test_workflows_match_githubs_schema():
    out = subprocess.run(["check-jsonschema", "--builtin-schema", "vendor.github-workflows", *map(str, FILES)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_security_audit_finds_nothing():
    out = subprocess.run(["zizmor", "--offline", str(WORKFLOWS)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_pull_request_target_and_no_default_permissions(path):
    data = load(path)
    assert "pull_request_target" not in data["on"]
    assert data["permissions"] == {}  # every job asks for what it needs


def test_gpu_jobs_get_no_secrets_and_no_write_token():
    data = load(WORKFLOWS / "gpu-benchmarks.yml")
    jobs = gpu_jobs(data)
    assert set(jobs) == {"suite", "gate"}
    for name, job in jobs.items():
        assert "secrets." not in yaml.safe_dump(job), name
        assert job["permissions"] == {"contents": "read"}, name
        checkout = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/checkout@")]
        assert checkout and checkout[0]["with"]["persist-credentials"] is False, name


def _needs(job):
    needs = job.get("needs", [])
    return [needs] if isinstance(needs, str) else needs


def runs_for_pull_requests(data, name):
    """Whether a job can run for a pull request: its workflow triggers on one, and neither its own
    `if` nor a job it needs keeps it to pushes."""
    job = data["jobs"][name]
    return ("pull_request" in (data["on"] or {}) and job.get("if") != "github.event_name == 'push'"
            and all(runs_for_pull_requests(data, need) for need in _needs(job)))


def unapproved_gpu_jobs(data):
    """GPU jobs a pull request can start without a reviewer approving the `gpu` environment."""
    def environment(job):
        value = job.get("environment")
        return value.get("name") if isinstance(value, dict) else value

    return sorted(name for name, job in gpu_jobs(data).items()
                  if runs_for_pull_requests(data, name) and environment(job) != "gpu")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_pull_requests_reach_the_gpu_only_through_an_approved_environment_at_the_exact_commit(path):
    data = load(path)
    assert unapproved_gpu_jobs(data) == []
    for name in gpu_jobs(data):
        if runs_for_pull_requests(data, name):
            checkout = data["jobs"][name]["steps"][0]
            assert checkout["with"]["ref"] == "${{ github.event.pull_request.head.sha }}", name


def test_the_gate_is_the_one_gpu_job_a_pull_request_reaches_and_writes_the_job_summary():
    data = load(WORKFLOWS / "gpu-benchmarks.yml")
    assert [name for name in gpu_jobs(data) if runs_for_pull_requests(data, name)] == ["gate"]
    gate = data["jobs"]["gate"]
    assert any("variantbench gate" in str(s.get("run", "")) and "GITHUB_STEP_SUMMARY" in str(s.get("run", ""))
               for s in gate["steps"])


def _without_gate_environment(data):
    del data["jobs"]["gate"]["environment"]


def _gate_environment_renamed(data):
    data["jobs"]["gate"]["environment"] = {"name": "staging"}


def _new_gpu_job(data):
    data["jobs"]["pr-bench"] = {"runs-on": ["self-hosted", "gpu"], "steps": [{"run": "variantbench run"}]}


def _suite_for_every_event(data):
    del data["jobs"]["suite"]["if"]


@pytest.mark.parametrize("change, caught", [
    (_without_gate_environment, ["gate"]),
    (_gate_environment_renamed, ["gate"]),
    (_new_gpu_job, ["pr-bench"]),
    (_suite_for_every_event, ["suite"]),
], ids=lambda x: getattr(x, "__name__", ""))
def test_the_approval_check_catches_a_gpu_job_without_it(change, caught):
    """The check above can fail: each of these edits to the workflow lets a pull request reach the GPU
    unapproved, and it names the job."""
    data = load(WORKFLOWS / "gpu-benchmarks.yml")
    change(data)
    assert unapproved_gpu_jobs(data) == caught


def test_ci_runs_the_readme_test_command():
    steps = load(WORKFLOWS / "ci.yml")["jobs"]["tests"]["steps"]
    assert any(s.get("run") == "bash .ci/run" for s in steps)


def test_the_nightly_runs_mains_full_tier_sharded_by_family_and_never_for_a_pull_request():
    from variantbench.catalog import builtin_families

    data = load(WORKFLOWS / "nightly.yml")
    assert set(data["on"]) == {"schedule", "workflow_dispatch"}
    shard = data["jobs"]["shard"]
    families = [entry["family"] for entry in shard["strategy"]["matrix"]["include"]]
    assert sorted(families) == sorted(f.name for f in builtin_families())  # each family, once
    runs = " ".join(str(step.get("run", "")) for step in shard["steps"])
    assert '--tier full --family "$FAMILY" --results "shards/$FAMILY"' in runs
    checkout = shard["steps"][0]
    assert checkout["with"]["ref"] == "main" and checkout["with"]["persist-credentials"] is False
    assert shard["permissions"] == {"contents": "read"} and "secrets." not in yaml.safe_dump(shard)


def test_the_nightly_merges_and_publishes_from_jobs_without_a_gpu():
    jobs = load(WORKFLOWS / "nightly.yml")["jobs"]
    history, pages = jobs["history"], jobs["pages"]
    for job in (history, pages):
        assert job["runs-on"] == "ubuntu-latest"
    assert history["needs"] == "shard" and history["permissions"] == {"contents": "write"}
    assert any("variantbench merge shards/* --into reports/results" in str(s.get("run", "")) for s in history["steps"])
    assert pages["needs"] == "history"
    assert pages["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    assert any(str(s.get("uses", "")).startswith("actions/deploy-pages@") for s in pages["steps"])
