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


def test_both_workflows_exist():
    assert {p.name for p in FILES} == {"ci.yml", "gpu-benchmarks.yml"}


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


def test_pull_requests_reach_the_gpu_only_through_an_approved_environment_at_the_exact_commit():
    gate = load(WORKFLOWS / "gpu-benchmarks.yml")["jobs"]["gate"]
    assert gate["if"] == "github.event_name == 'pull_request'"
    assert gate["environment"] == "gpu"
    checkout = gate["steps"][0]
    assert checkout["with"]["ref"] == "${{ github.event.pull_request.head.sha }}"
    assert any("variantbench gate" in str(s.get("run", "")) and "GITHUB_STEP_SUMMARY" in str(s.get("run", ""))
               for s in gate["steps"])


def test_ci_runs_the_readme_test_command():
    steps = load(WORKFLOWS / "ci.yml")["jobs"]["tests"]["steps"]
    assert any(s.get("run") == "bash .ci/run" for s in steps)
