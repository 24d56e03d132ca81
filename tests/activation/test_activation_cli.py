"""`cdp destinations` and `cdp activations` as a user runs them (real subprocesses)."""
from __future__ import annotations

import json

from tests.activation.fakes import MC_KEY, MailchimpFake
from tests.activation.test_members_gate import _setup
from tests.conftest import make_runtime, make_settings
from tests.test_cli import instance, run_cdp  # noqa: F401 - the instance fixture


def test_destinations_and_activations_commands(instance, tmp_path):
    rt = make_runtime(make_settings(instance))
    _, sid = _setup(rt)
    with MailchimpFake() as mc:
        conf = tmp_path / "mc.json"
        conf.write_text(json.dumps(mc.config()), encoding="utf-8")
        added = run_cdp(instance, "destinations", "add", "mc", "--type", "email_list", "--config-file", str(conf))
        assert added.stdout.startswith("destination mc (email_list) added")
        listed = run_cdp(instance, "destinations", "list").stdout
        assert json.loads(listed)[0]["secrets"] == ["api_key"] and MC_KEY not in listed

        bad = run_cdp(instance, "destinations", "add", "x", "--type", "email_list", "--config", "list_id=1",
                      "--config", "api_key=oops", check=False)
        assert bad.returncode == 2 and bad.stderr.startswith("error: config.api_key:")
        assert len(bad.stderr.strip().splitlines()) == 1 and "oops" not in bad.stderr
        bad = run_cdp(instance, "activations", "add", "n", "--segment", str(sid), "--destination", "mc",
                      "--purpose", "email_marketing", "--fields", "ltv", check=False)
        assert bad.returncode == 2 and bad.stderr.startswith("error: fields:")

        made = run_cdp(instance, "activations", "add", "newsletter", "--segment", "todos", "--destination", "mc",
                       "--purpose", "email_marketing", "--fields", "email,first_name", "--every", "1d")
        assert json.loads(made.stdout)["schedule"] == {"every_minutes": 1440}

        mc.fail("*", 401)  # the first call is refused: no retry for credentials, the delivery fails
        run = run_cdp(instance, "activations", "run", "newsletter", check=False)
        assert run.returncode == 1 and json.loads(run.stdout)["status"] == "failed"
        assert "activation newsletter" in run.stderr  # the progress bar
        (failure,) = json.loads(run_cdp(instance, "activations", "failures").stdout)
        assert failure["last_error"].startswith("email_list: credentials rejected (HTTP 401)")

        redo = run_cdp(instance, "activations", "retry", str(failure["id"]))
        assert json.loads(redo.stdout)["deliveries"][0]["status"] == "done"
        assert len(mc.subscribed()) == 4
        runs = json.loads(run_cdp(instance, "activations", "runs", "newsletter").stdout)
        assert [(r["status"], r["added"], r["skipped_consent"]) for r in runs] == [("ok", 4, 2)]
        assert json.loads(run_cdp(instance, "activations", "run", "newsletter").stdout)["sent"] == 0
        assert json.loads(run_cdp(instance, "activations", "run-due").stdout) == []  # ran just now; every 1d

        paused = json.loads(run_cdp(instance, "activations", "pause", "newsletter").stdout)
        assert paused["active"] is False and paused["in_destination"] == 4
        assert json.loads(run_cdp(instance, "activations", "run", "newsletter").stdout)["added"] == 0
        assert json.loads(run_cdp(instance, "activations", "resume", "newsletter").stdout)["active"] is True
        unknown = run_cdp(instance, "activations", "pause", "nope", check=False)
        assert unknown.returncode == 2 and unknown.stderr.strip() == "error: activation: no such activation"

        missing = run_cdp(instance, "activations", "run", "nope", check=False)
        assert missing.returncode == 2 and missing.stderr.strip() == "error: activation: no such activation"
        again = run_cdp(instance, "activations", "retry", str(failure["id"]), check=False)
        assert again.returncode == 2 and "not in the failure registry" in again.stderr
        dropped = run_cdp(instance, "activations", "discard", str(failure["id"]), check=False)
        assert dropped.returncode == 2 and dropped.stderr.strip().startswith("error: delivery: not in the failure")
        for proc in (added, run, redo):
            assert "exemplo" not in proc.stdout + proc.stderr
