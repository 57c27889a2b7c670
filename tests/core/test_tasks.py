from datetime import UTC, datetime

from shared.core.config import FlagTasks
from shared.core.tasks import Flag, TaskState, on_event_moved, on_flag

POLICY = FlagTasks(record_type="task")
D1 = datetime(2026, 11, 24, 9, tzinfo=UTC)
D2 = datetime(2026, 11, 27, 17, tzinfo=UTC)


def test_a_new_flag_creates_an_open_task_with_the_flag_dates() -> None:
    change = on_flag(Flag("flagged", D1, D2), None, POLICY, "new")
    assert change is not None and change.create
    assert (change.status, change.start, change.due, change.event) == (
        "new",
        D1,
        D2,
        "task.created",
    )


def test_an_unchanged_flag_changes_nothing_and_new_dates_update() -> None:
    task = TaskState("new", D1, D2)
    assert on_flag(Flag("flagged", D1, D2), task, POLICY, "new") is None
    moved = on_flag(Flag("flagged", D1, D1), task, POLICY, "new")
    assert moved is not None and not moved.create and moved.status is None and moved.due == D1


def test_completing_the_flag_completes_the_task_once() -> None:
    done = on_flag(Flag("complete"), TaskState("new", D1, D2), POLICY, "new")
    assert done is not None and (done.status, done.event) == ("closed", "task.completed")
    assert on_flag(Flag("complete"), TaskState("closed"), POLICY, "new") is None
    assert on_flag(Flag("complete"), None, POLICY, "new") is None


def test_unflagging_follows_the_policy() -> None:
    open_task = TaskState("new")
    assert on_flag(Flag("notFlagged"), open_task, POLICY, "new").status == "closed"  # type: ignore[union-attr]
    cancel = FlagTasks(record_type="task", on_unflag="cancel")
    assert on_flag(Flag("notFlagged"), open_task, cancel, "new").status == "cancelled"  # type: ignore[union-attr]
    keep = FlagTasks(record_type="task", on_unflag="keep")
    assert on_flag(Flag("notFlagged"), open_task, keep, "new") is None


def test_flagging_a_done_task_again_reopens_it() -> None:
    again = on_flag(Flag("flagged", None, D2), TaskState("closed"), POLICY, "new")
    assert again is not None and not again.create and again.status == "new" and again.due == D2


def test_a_moved_event_moves_the_task_dates() -> None:
    task = TaskState("new", D1, D2)
    assert on_event_moved(D1, D2, task) is None
    moved = on_event_moved(D2, D2, task)
    assert moved is not None and (moved.start, moved.due) == (D2, D2)
