"""Every fault point in the code base, declared once with what it interrupts.

`faults.fire(name)` refuses names that are not declared here, so a typo fails loudly.
"""

SAGA_SERVICES = ("hotel", "car", "flight")

POINTS: dict[str, str] = {
    "signup.part1": "inside the signup transaction, after the user row (and its outbox row or job) "
    "is written: the transaction rolls back",
    "signup.part2": "after the signup transaction committed, before anything else happens "
    "(the dual-write mode has not enqueued the email job yet)",
    "email.send": "inside the welcome email job, after the mail is handed over, before the "
    "EmailSend row commits",
    "relay.publish": "in the outbox relay, after claiming a batch, before any message is handled",
    "relay.message": "in the outbox relay, before one message is handled (arm it with the "
    "message's id as scope for a poison message)",
    "relay.redis_accepted": "in the outbox relay, after Redis accepted the batch's jobs, before "
    "PostgreSQL commits their messages as published (a crash here publishes them again)",
    "redis.enqueue": "just before a job is pushed to Redis (raise: Redis refuses the write)",
}
for _service in SAGA_SERVICES:
    POINTS[f"saga.{_service}.book"] = (
        f"in the {_service} service, right after a booking committed (the answer is lost)"
    )
    POINTS[f"saga.{_service}.cancel"] = (
        f"in the {_service} service, before a cancellation (nothing is cancelled)"
    )
    POINTS[f"saga.{_service}.cancelled"] = (
        f"in the {_service} service, right after a cancellation committed (the answer is lost)"
    )
    # the coordinator, right after a log event committed: every boundary of the log
    POINTS[f"saga.after.STEP_START.{_service}"] = (
        f"in the saga coordinator, after STEP_START {_service} committed, before the call"
    )
    POINTS[f"saga.after.COMP_START.{_service}"] = (
        f"in the saga coordinator, after COMP_START {_service} committed, before the call"
    )
POINTS["saga.after.SAGA_ABORT"] = (
    "in the saga coordinator, after SAGA_ABORT committed, before any compensation"
)
