"""What `tessera profile put` and `tessera slo put` tell their user: verdicts, conflicts, the revision line."""

from __future__ import annotations

from tessera.cli.etcd_documents import conflict_message, split_revision
from tessera.runtime.etcd import keys
from tessera.runtime.etcd.acks import Ack, summarize


def test_every_running_service_answers_for_the_revision_written():
    acks = [Ack("s1", "scheduler", 42, True), Ack("s2", "scheduler", 42, False, "unknown scorer 'x'")]
    verdict = summarize("scheduler", ["s2", "s1"], acks, 42, 5)
    assert verdict.lines == [
        "accepted by scheduler s1 at revision 42",
        "refused by scheduler s2 at revision 42: unknown scorer 'x'",
    ]
    assert verdict.refused and verdict.complete


def test_an_older_verdict_is_no_answer_and_silence_is_said():
    stale = [Ack("s1", "scheduler", 41, True)]  # about the previous revision
    verdict = summarize("scheduler", ["s1"], stale, 42, 5)
    assert verdict.lines == ["no running scheduler acknowledged it within 5 s"]
    assert not verdict.refused and not verdict.complete
    partial = summarize("autoscaler", ["a1", "a2"], [Ack("a1", "autoscaler", 42, True)], 42, 2.5)
    assert partial.lines == ["accepted by autoscaler a1 at revision 42", "no answer within 2.5 s from autoscaler a2"]
    assert not partial.complete


def test_a_later_write_supersedes_and_dead_services_do_not_count():
    verdict = summarize(
        "scheduler", ["s1"], [Ack("s1", "scheduler", 45, True), Ack("gone", "scheduler", 42, False)], 42, 5
    )
    assert verdict.lines == ["scheduler s1 has since seen revision 45, written after this one"]
    assert verdict.complete and not verdict.refused  # the refusal of a service no longer registered is ignored
    assert summarize("scheduler", [], [], 42, 5).lines == ["no scheduler is running; one loads it when it starts"]


def test_the_revision_line_show_prints_is_read_back_and_not_stored():
    assert split_revision(b"# revision: 17\nname: x\n") == (17, b"name: x\n")
    assert split_revision(b"name: x\n# revision: 17\n") == (None, b"name: x\n# revision: 17\n")  # first line only
    assert split_revision(b"# revision: seventeen\nname: x\n")[0] is None


def test_conflicts_name_both_revisions():
    changed = conflict_message("profile", "p", 7, 9)
    assert "since revision 7" in changed and "now revision 9" in changed
    assert "--if-revision 9" in conflict_message("profile", "p", 0, 9)  # it exists already
    assert "deleted after revision 7" in conflict_message("profile", "p", 7, 0)


def test_acks_live_beside_not_under_the_documents_services_watch():
    key = keys.profile("tessera")
    assert keys.ack(key, "s1") == "/tessera/v1/acks/profiles/tessera/s1"
    assert not keys.ack(key, "s1").startswith(keys.PROFILES)
    assert not keys.ack(keys.SLO_POLICIES + "m", "a1").startswith(keys.CONFIG)
