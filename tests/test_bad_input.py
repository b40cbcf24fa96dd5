"""Bad input everywhere, proven with Hypothesis (issue 12): names, payloads, numbers and
every management command's arguments. Whatever a person types, the answer is the clean value
or one line saying what is wrong (a command: CommandError, or that line and exit status 2 from
a shell), never another exception, and nothing is written when it is refused. The web forms
say the same sentence as the command line.

The database properties run each example in a savepoint that is rolled back, and delete the
faults the example armed (they are written on a side connection, outside the test's
transaction): Hypothesis runs many examples inside one function-scoped `db` fixture."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import unicodedata
from typing import Any
from unittest import mock

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from common import inputs, sideconn, validate
from experiments.forms import StartForm
from experiments.plan import RULES
from faults import services as faults
from faults import stores
from faults.models import Fault
from outbox import services as outbox
from outbox.models import OutboxMessage
from sagas import services as sagas
from sagas.forms import StartTripForm
from sagas.models import Saga, SagaLog
from users import services as users
from users.forms import SignupForm
from users.models import EmailSend, User

# BAD_INPUT_SCALE=20 runs twenty times as many examples (a longer hunt than `make test`'s).
SCALE = int(os.environ.get("BAD_INPUT_SCALE", "1"))
PURE = settings(max_examples=150 * SCALE, deadline=None, database=None)
WITH_DB = settings(max_examples=40 * SCALE, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture,
                                          HealthCheck.too_slow])
COMMAND_EXAMPLES = settings(WITH_DB, max_examples=250 * SCALE)

# --- strategies -------------------------------------------------------------------------------

NASTY_TEXT = st.sampled_from([
    "", " ", "\t", "\n", "nan", "NaN", "inf", "-inf", "Infinity", "1e309", "-1", "0", "1", "2.5",
    "9" * 30, "9" * 5000, "x" * 151, "x" * 300, "\x00", "a\x00b", "a\nb", "\u202eevil", "\u200b",
    "\ud800", "é", "e\u0301", "山田太郎", "\ufdfa", "ｍｉｋｅ", "--json", "-", "-x", "1_000",
    " 7 ", "0x10", "１２", "mike", "signup.part2", "email.send", "part1", "car", "que",
])
TEXT = st.one_of(NASTY_TEXT, st.text(max_size=40), st.text(min_size=140, max_size=200),
                 st.from_regex(r"\A[\w.@+-]{1,20}\Z"))
NUMBER_TEXT = st.one_of(
    st.integers().map(str), st.integers(min_value=-10, max_value=200_000).map(str),
    st.floats().map(repr), st.floats(allow_nan=True, allow_infinity=True).map(str))
VALUES = st.one_of(TEXT, NUMBER_TEXT)

JSON_LEAVES = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-2**70,
                                                                        max_value=2**70)
               | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20))
JSON = st.recursive(JSON_LEAVES, lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=20)


def nested(depth: int) -> dict:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return {"deep": value}


PAYLOADS = st.one_of(
    st.dictionaries(st.text(max_size=8), JSON, max_size=5),
    JSON,
    st.dictionaries(st.integers() | st.none() | st.floats() | st.booleans(), JSON, min_size=1,
                    max_size=2),
    st.integers(min_value=20, max_value=60).map(nested),
    st.integers(min_value=60_000, max_value=70_000).map(lambda n: {"big": "x" * n}),
    st.sampled_from([{"when": object()}, {"s": {1, 2}}, {"b": b"bytes"}, {"t": (1, 2)},
                     {"n": 10**5000}]),
)


def one_line(message: str) -> bool:
    return bool(message) and message.isprintable()


def outcome(fn, *args, refusals=(validate.Invalid,), **kwargs) -> tuple[Any, str | None]:
    """(what `fn` returned, None) or (None, its refusal's message)."""
    try:
        return fn(*args, **kwargs), None
    except refusals as e:
        return None, str(e)


# --- the parsers, without a database ----------------------------------------------------------


@PURE
@given(TEXT)
def test_a_name_is_clean_or_refused_in_one_line(value):
    name, refused = outcome(validate.text, value, max_length=150)
    if refused is not None:
        assert one_line(refused), refused
        return
    assert name == unicodedata.normalize("NFC", name) == name.strip()
    assert 0 < len(name) <= 150
    assert not any(unicodedata.category(c) in validate.FORBIDDEN_CATEGORIES for c in name)
    assert validate.text(name, max_length=150) == name, "parsing is idempotent"


@PURE
@given(TEXT)
def test_a_user_name_is_storable_or_refused_in_one_line(value):
    name, refused = outcome(users.parse_name, value, refusals=users.InvalidName)
    if refused is not None:
        assert one_line(refused), refused
        return
    assert 0 < len(name) <= users.NAME_MAX  # the column's limit: no DataError
    assert "\x00" not in name
    assert User.normalize_username(name) == name
    assert users.parse_name(name) == name


@PURE
@given(st.one_of(VALUES, st.integers(), st.floats(allow_nan=True), st.booleans(), st.none()),
       st.integers(min_value=-5, max_value=5), st.integers(min_value=0, max_value=2**40))
def test_a_whole_number_is_in_bounds_or_refused(value, low, span):
    high = low + span
    n, refused = outcome(validate.integer, value, what="n", low=low, high=high)
    if refused is not None:
        assert one_line(refused)
        assert refused.startswith(f"n must be a whole number from {low:,} to {high:,}, not ")
        return
    assert type(n) is int
    assert low <= n <= high
    assert not isinstance(value, bool)


@PURE
@given(st.one_of(VALUES, st.floats(allow_nan=True, allow_infinity=True), st.integers()))
def test_seconds_are_finite_above_zero_and_bounded_or_refused(value):
    s, refused = outcome(validate.seconds, value, what="the timeout", high=validate.DAY)
    if refused is not None:
        assert one_line(refused)
        assert refused.startswith("the timeout must be a number of seconds above 0 and at most "
                                  "86,400, not ")
        return
    assert math.isfinite(s)
    assert 0 < s <= validate.DAY


@PURE
@given(PAYLOADS)
def test_a_payload_is_storable_json_or_refused_in_one_line(value):
    clean, refused = outcome(validate.payload, value, what="the payload")
    if refused is not None:
        assert one_line(refused), refused
        return
    assert clean is value
    dumped = json.dumps(value, allow_nan=False, ensure_ascii=False)
    assert len(dumped.encode("utf-8")) <= validate.PAYLOAD_MAX_BYTES
    assert same_json(json.loads(dumped), value)


def same_json(a, b) -> bool:
    """Equal as JSON values: a tuple is an array, and a number is its value (PostgreSQL's
    jsonb keeps numbers as numeric: 2.046798374666297e+16 comes back as the integer
    20467983746662970, which Python's == tells apart from the float it was)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) == float(b)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    return a == b


@PURE
@given(PAYLOADS)
def test_the_welcome_topic_takes_any_payload_or_says_it_never_can(value):
    """What the relay does with a message: its kwargs, or PermanentError (the message goes
    dead); never another exception, which would retry a payload that can never work."""
    from outbox.topics import PermanentError

    kwargs, refused = outcome(users.welcome_kwargs, value, refusals=PermanentError)
    if refused is not None:
        assert refused.startswith("payload needs a positive integer user_id")
        assert one_line(refused)
        assert len(refused) < 300
        return
    assert kwargs == {"user_id": value["user_id"]}
    assert kwargs["user_id"] > 0


# --- the web says what the command line says --------------------------------------------------


def cli_error(parse, value, **rules) -> str | None:
    """What a command's argument of this type says about `value` (None: accepted)."""
    try:
        inputs.arg(parse, **rules)(value)
    except argparse.ArgumentTypeError as e:
        return str(e)
    return None


def form_error(form_class, field: str, value: str, **data) -> str | None:
    form = form_class(data={field: value, **data})
    form.is_valid()
    errors = form.errors.get(field)
    return " ".join(errors) if errors else None


@PURE
@given(TEXT)
def test_the_signup_form_and_create_user_say_the_same(value):
    assume(value.strip())  # an empty field: the form's own "required" check
    assert form_error(SignupForm, "name", value, mode="que") == cli_error(users.parse_name,
                                                                             value)


@PURE
@given(TEXT)
def test_the_trip_form_and_book_trip_say_the_same(value):
    assume(value.strip())
    assert form_error(StartTripForm, "customer", value) == cli_error(validate.text, value,
                                                                     **sagas.CUSTOMER)


@PURE
@given(VALUES)
def test_the_fault_form_and_the_faults_command_say_the_same(value):
    assume(value.strip())
    from dashboard.forms import FaultForm

    data = {"point": "email.send", "action": "delay"}
    assert form_error(FaultForm, "times", value, **data) == cli_error(validate.integer, value,
                                                                      **faults.TIMES)
    assert form_error(FaultForm, "ms", value, **data) == cli_error(validate.integer, value,
                                                                   **faults.DELAY_MS)


@PURE
@given(st.sampled_from(sorted(RULES)), VALUES)
def test_the_experiment_form_and_the_experiment_command_say_the_same(name, value):
    assume(value.strip())
    parser, rules = RULES[name]
    if name in StartForm.base_fields:
        assert form_error(StartForm, name, value) == cli_error(parser, value, **rules)


def test_no_web_message_names_a_command_line_option(admin_client):
    """Found in issue 12: the dashboard showed "--fail and --crash cannot both target car"."""
    from django.urls import reverse

    url = reverse("admin:dashboard_control", args=["trip"])
    for data, said in [
        ({"customer": "bob", "fail": "car", "crash": "car"},
         "a failure and a crash cannot both target car"),
        ({"customer": "bob", "fail": "hotel", "crash": "flight"},
         "hotel failing stops the trip before flight: the crash there would never fire"),
        ({"customer": "bob\x07"},
         "the customer name contains a control or invisible character (U+0007)"),
    ]:
        page = admin_client.post(url, data, follow=True).content.decode()
        assert said.lower() in page.replace("&#x27;", "'").lower()
    fault = reverse("admin:dashboard_control", args=["fault"])
    page = admin_client.post(fault, {"point": "email.send", "action": "raise", "times": "0"},
                             follow=True).content.decode()
    assert "times must be a whole number from 1 to 1,000,000, not &#x27;0&#x27;" in page
    for option in ("--fail", "--crash", "--times", "--ms", "--timeout"):
        assert option not in page
    assert not Saga.objects.exists()
    assert not Fault.objects.exclude(action="").exists()


# --- with the database: what is refused writes nothing ----------------------------------------


class Rollback(Exception):
    pass


COUNTED = [User, EmailSend, OutboxMessage, Saga, SagaLog, Fault]


def counts() -> dict[str, int]:
    from experiments.models import Experiment
    from jobs.models import JobRun
    from pgbroker.models import Job

    models = [*COUNTED, JobRun, Job, Experiment]
    return {m.__name__: m._default_manager.count() for m in models}


@contextlib.contextmanager
def rolled_back():
    """One example's writes: rolled back with a savepoint, its faults deleted."""
    try:
        with transaction.atomic():
            yield
            raise Rollback
    except Rollback:
        pass
    finally:
        with sideconn.side_cursor() as cur:
            cur.execute("DELETE FROM faults_fault WHERE action <> '' OR scope <> ''")


@WITH_DB
@given(payload=PAYLOADS)
def test_publish_stores_a_payload_as_given_or_refuses_and_writes_nothing(db, payload):
    with rolled_back():
        before = OutboxMessage.objects.count()
        message, refused = outcome(outbox.publish, topic=users.WELCOME_TOPIC, payload=payload,
                                   refusals=outbox.OutboxError)
        if refused is not None:
            assert one_line(refused), refused
            assert OutboxMessage.objects.count() == before
            return
        stored = OutboxMessage.objects.get(pk=message.pk).payload
        assert same_json(stored, payload), stored


@WITH_DB
@given(payload=PAYLOADS)
def test_a_saga_payload_is_stored_as_given_or_refused(db, payload):
    with rolled_back():
        saga, refused = outcome(sagas.start_saga, kind="trip", payload=payload)
        if refused is not None:
            assert one_line(refused), refused
            assert not Saga.objects.exists()
            return
        assert same_json(Saga.objects.get(pk=saga.pk).payload, payload)


@WITH_DB
@given(customer=TEXT)
def test_a_trip_starts_for_a_clean_customer_name_or_not_at_all(db, customer):
    with rolled_back():
        saga, refused = outcome(sagas.start_trip, customer=customer)
        if refused is not None:
            assert one_line(refused), refused
            assert not Saga.objects.exists()
            return
        assert Saga.objects.get(pk=saga.pk).payload == {
            "customer": validate.text(customer, **sagas.CUSTOMER)}


X = "{X}"
# (command, argv with X where the random value goes). Run inside the test's transaction, so
# relay_outbox --once refuses to run (it must commit batch by batch): still one line, nothing
# written.
COMMANDS = [
    ("create_user", [X]),
    ("create_user", ["mike", "--mode", X]),
    ("create_user", ["mike", "--fail", X]),
    ("create_user", ["mike", "--crash", X, "--fail", "part1"]),
    ("demo_superuser", ["--username", X]),
    ("book_trip", [X]),
    ("book_trip", ["alice", "--timeout", X]),
    ("book_trip", ["alice", "--fail", X, "--crash", "car"]),
    ("book_trip", ["alice", "--slow", X]),
    ("show_saga", [X]),
    ("show_saga", [X, "--json"]),
    ("recover_sagas", ["--once", "--batch", X]),
    ("recover_sagas", ["--once", "--interval", X]),
    ("recover_sagas", ["--once", "--saga-timeout", X]),
    ("relay_outbox", ["--once", "--batch", X]),
    ("reconcile", ["--older-than", X]),
    ("faults", ["arm", X, "--action", "raise"]),
    ("faults", ["arm", "email.send", "--action", X]),
    ("faults", ["arm", "email.send", "--action", "delay", "--ms", X]),
    ("faults", ["arm", "email.send", "--action", "raise", "--times", X]),
    ("faults", ["disarm", X]),
    ("faults", [X]),
    ("faults", ["redis", X]),
    ("experiment", ["--signups", X]),
    ("experiment", ["--preset", "smoke", "--seed", X]),
    ("experiment", ["--preset", "smoke", "--fault-rate", X]),
    ("experiment", ["--preset", "smoke", "--kills", X]),
    ("experiment", ["--preset", X]),
    ("experiment", ["--id", X]),
    ("show_state", [X]),
    ("check_consistency", [X]),
    ("qcluster", ["--name", X]),
    ("health", [X]),
    ("health", ["relay", "--stale", X]),
]


class Ran(Exception):
    """experiment's run, stubbed: the arguments were accepted."""


@COMMAND_EXAMPLES
@given(command=st.sampled_from(COMMANDS), value=VALUES)
def test_every_command_argument_is_taken_or_refused_in_one_line_writing_nothing(
        db, command, value):
    name, template = command
    argv = [value if a == X else a for a in template]
    if name == "faults" and "redis" in argv:
        assume(value.strip() not in [a for a, _ in stores.Action.CHOICES])  # no real outage
    if name == "qcluster":  # an accepted name would start a cluster: only refusals here
        assume(cli_error(validate.text, value, what="the cluster name", max_length=100))
    with rolled_back(), mock.patch("experiments.services.execute", side_effect=Ran):
        before = counts()
        _, message = outcome(call_command, name, *argv, stdout=io.StringIO(),
                             stderr=io.StringIO(), refusals=(CommandError, SystemExit, Ran))
        event(f"{name}: {'taken' if not message else 'refused'}")
        if message is None or message == "":  # taken (or a stubbed experiment run)
            return
        if message == "1":  # SystemExit(1): a broken invariant, or a program not live
            assert name in ("check_consistency", "health")
            return
        assert one_line(message), f"{name} {argv!r}: {message!r}"
        assert counts() == before, f"{name} {argv!r} refused ({message}) but wrote"


@pytest.mark.parametrize(("argv", "said"), [
    (["book_trip", "alice", "--timeout", "nan"], "the timeout must be a number of seconds"),
    (["create_user", "a\nb"], "the name contains a control or invisible character (U+000A)"),
    (["show_state", "a\nb"], "unrecognized arguments: a\\nb"),
    (["faults", "arm", "x", "--action", "raise", "extra\r"], "unrecognized arguments: extra\\r"),
    (["experiment", "--clock-skew-s", "nan"], "the clock skew must be a number from"),
])
def test_from_a_shell_a_refusal_is_one_line_with_exit_status_2(db, capsys, argv, said):
    """`<prog>: error: <message>` and nothing else: no usage block before it."""
    from django.core.management import ManagementUtility

    with pytest.raises(SystemExit) as exit_:
        ManagementUtility(["manage.py", *argv]).execute()
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith(f"manage.py {argv[0]}: error: ")
    assert said in line
    assert not Saga.objects.exists()
    assert not User.objects.exists()


@pytest.mark.parametrize(("name", "args", "options", "message"), [
    ("book_trip", ["x"], {"timeout": math.nan}, "the timeout must be a number of seconds"),
    ("relay_outbox", [], {"batch": -1}, "the batch size must be a whole number"),
    ("demo_superuser", [], {"username": ""}, "the name is empty"),
    ("recover_sagas", [], {"interval": 0}, "the interval must be a number of seconds"),
    ("faults", ["arm", "email.send", "--action", "raise"], {"times": 0},
     "must be a whole number"),
])
def test_keyword_options_from_call_command_are_checked_like_typed_ones(
    db, name, args, options, message
):
    """call_command hands keyword values to a command without argparse's `type`: the same
    parsers check them (common.inputs.OneLineErrors), and nothing is written."""
    before = counts()
    with pytest.raises(CommandError, match=message):
        call_command(name, *args, **options)
    assert counts() == before
