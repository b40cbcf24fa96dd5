"""What an experiment does, decided before it starts: its parameters, the presets, and the
fault schedule (a pure function of the parameters and the seed: the same seed gives the same
schedule)."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, fields

from common import validate
from sagas.models import Style as SagaStyle

MODES = ("dual-write", "outbox", "que")
SIGNUP_FAULTS = (("fail", "part1"), ("fail", "part2"), ("crash", "part1"), ("crash", "part2"))
SAGA_SERVICES = ("hotel", "car", "flight")
# What a kill can hit. "worker" and "dispatcher" are processes inside a PostgreSQL cluster,
# "cluster" the whole process group; the same for the Redis cluster.
KILL_TARGETS = ("worker", "dispatcher", "cluster", "redis-worker", "redis-cluster", "relay",
                "recoverer")
PAUSE_SECONDS = 3.0  # a SIGSTOP longer than the liveness window (1 s of grace + a tick)
MAX_SIGNUPS, MAX_SAGAS, MAX_EVENTS = 100_000, 10_000, 1_000
MAX_HOSTS = 8  # worker hosts of the lab (devtools/lab.py)
# How a partition cuts a host off (peer, way), and how often each is drawn: mostly from
# PostgreSQL both ways, the case that decides who runs a job.
PARTITION_KINDS = ((("db", "both"), 5), (("all", "both"), 2), (("db", "out"), 1),
                   (("db", "in"), 1), (("redis", "both"), 1))
MAX_SEED = 2**32 - 1
# How the trips run (--style): one saga style, or every trip once in each (the same trip, the
# same faults), to compare them side by side.
BOTH = "both"
STYLES = (*SagaStyle.values, BOTH)
# Each parameter a person gives, parsed the same way by the command, the admin's form and
# Params: {name: (parser, its rules)}.
RULES: dict[str, tuple] = {
    "signups": (validate.integer, {"what": "signups", "low": 0, "high": MAX_SIGNUPS}),
    "sagas": (validate.integer, {"what": "sagas", "low": 0, "high": MAX_SAGAS}),
    "kills": (validate.integer, {"what": "kills", "low": 0, "high": MAX_EVENTS}),
    "pg_restarts": (validate.integer, {"what": "PostgreSQL restarts", "low": 0, "high": 20}),
    "terminations": (validate.integer, {"what": "terminations", "low": 0, "high": MAX_EVENTS}),
    "pauses": (validate.integer, {"what": "pauses", "low": 0, "high": MAX_EVENTS}),
    "redis_restarts": (validate.integer, {"what": "Redis restarts", "low": 0, "high": 20}),
    "seconds": (validate.number, {"what": "the run's seconds", "low": 0, "high": 3600}),
    "hosts": (validate.integer, {"what": "worker hosts", "low": 0, "high": MAX_HOSTS}),
    "partitions": (validate.integer, {"what": "partitions", "low": 0, "high": MAX_EVENTS}),
    "partition_s": (validate.number, {"what": "the partition's seconds", "low": 0.1,
                                      "high": 3600}),
    "group_pauses": (validate.integer, {"what": "group pauses", "low": 0, "high": MAX_EVENTS}),
    "group_pause_s": (validate.number, {"what": "the group pause's seconds", "low": 0.1,
                                        "high": 3600}),
    "clock_skew_s": (validate.number, {"what": "the clock skew", "low": -86_400,
                                       "high": 86_400}),
    "fault_rate": (validate.number, {"what": "the fault rate", "low": 0, "high": 1}),
    "seed": (validate.integer, {"what": "the seed", "low": 0, "high": MAX_SEED}),
}


class PlanError(validate.Invalid):
    """Parameters an experiment cannot run with (one line; a ValueError too)."""


def parse(name: str, value: object):
    """One parameter, parsed by its rule; PlanError saying what is wrong."""
    parser, rules = RULES[name]
    try:
        return parser(value, **rules)
    except validate.Invalid as e:
        raise PlanError(str(e)) from None


@dataclass(frozen=True)
class Params:
    signups: int = 30          # per mode
    sagas: int = 10
    kills: int = 0
    pg_restarts: int = 0
    terminations: int = 0      # pg_terminate_backend of every session on the scratch database
    pauses: int = 0            # SIGSTOP of a PostgreSQL cluster's dispatcher, PAUSE_SECONDS
    redis_restarts: int = 0
    fault_rate: float = 0.0    # share of signups and sagas that carry a random fault of their own
    seconds: float = 0.0       # the load is spread over at least this long (0: as fast as fits)
    # simulated hosts (devtools/lab.py): 0 runs everything on this machine's own namespace
    hosts: int = 0
    partitions: int = 0        # a worker host cut off (mostly from PostgreSQL) for partition_s
    partition_s: float = 15.0
    group_pauses: int = 0      # SIGSTOP of a worker host's whole cluster for group_pause_s
    group_pause_s: float = 15.0
    clock_skew_s: float = 0.0  # one worker host's wall clock shifted by this much (faketime)
    seed: int = 1
    script: str = ""           # "talk": the talk's named demos instead of random load
    # orchestrated, choreographed, or both: every trip once in each style
    style: str = SagaStyle.ORCHESTRATED.value

    def __post_init__(self) -> None:
        for name, (parser, rules) in RULES.items():
            value = getattr(self, name)
            parse(name, value)
            whole = parser is validate.integer
            if isinstance(value, str | bool) or (whole and not isinstance(value, int)):
                raise PlanError(f"{rules['what']} must be a {'whole ' if whole else ''}number, "
                                f"not {validate.shown(value)}")
        if not isinstance(self.style, str) or self.style not in STYLES:
            raise PlanError(f"unknown saga style {validate.shown(self.style)}; use one of: "
                            f"{', '.join(STYLES)}")
        if self.script not in ("", "talk"):
            raise PlanError(f"unknown script {validate.shown(self.script)}")
        if self.signups + self.sagas == 0 and not self.script:
            raise PlanError("nothing to run: give signups or sagas")
        if not self.hosts and (self.partitions or self.group_pauses or self.clock_skew_s):
            raise PlanError("partitions, group pauses and clock skew happen between hosts: "
                            "give --hosts N (simulated worker hosts, 1 to "
                            f"{MAX_HOSTS}; needs root)")

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def styles(self) -> tuple[str, ...]:
        """The saga styles each trip runs in, in the order the report shows them."""
        return tuple(SagaStyle.values) if self.style == BOTH else (self.style,)

    @classmethod
    def from_dict(cls, data: dict) -> Params:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


PRESETS: dict[str, dict] = {
    # in `make test`: a little of everything, under a minute
    "smoke": {"signups": 20, "sagas": 8, "kills": 3, "pg_restarts": 1, "terminations": 1,
              "pauses": 1, "redis_restarts": 1, "fault_rate": 0.2},
    # the talk: mike, kevin (part 1), matt (part 2) in each mode; trips ok, car failing,
    # coordinator crashing after the hotel and after the flight
    "talk": {"script": "talk", "signups": 0, "sagas": 0},
    # `make chaos`; every trip orchestrated and choreographed, under the same faults
    "chaos": {"signups": 10_000, "sagas": 1_000, "kills": 50, "pg_restarts": 3,
              "terminations": 5, "pauses": 5, "redis_restarts": 2, "fault_rate": 0.05,
              "style": BOTH},
    # `make experiment preset=jepsen`: many hosts over TCP (the lab), the network's faults too;
    # every trip in both styles
    "jepsen": {"hosts": 3, "signups": 2_000, "sagas": 300, "kills": 20, "pg_restarts": 1,
               "terminations": 2, "pauses": 3, "redis_restarts": 1, "partitions": 4,
               "partition_s": 15, "group_pauses": 2, "group_pause_s": 15,
               "clock_skew_s": 30, "fault_rate": 0.05, "style": BOTH},
}


def params_for(*, preset: str | None, seed: int, **overrides) -> Params:
    if preset and preset not in PRESETS:
        raise PlanError(f"unknown preset {validate.shown(preset)}; use one of: "
                        f"{', '.join(PRESETS)}")
    values = {**(PRESETS[preset] if preset else {}),
              **{k: v for k, v in overrides.items() if v is not None}, "seed": seed}
    return Params.from_dict(values)


@dataclass(frozen=True)
class Signup:
    name: str
    mode: str
    fail: str | None = None
    crash: str | None = None


@dataclass(frozen=True)
class Trip:
    customer: str
    faults: tuple[tuple[str, str], ...] = ()  # (fault point, action), this saga's only


def saga_boundary_faults(rng: random.Random) -> tuple[tuple[str, str], ...]:
    """A fault at one boundary of a saga's log, chosen at random: the coordinator killed
    before a step's call or after it, a step failing, the coordinator killed after the abort,
    before a compensation's call or after it, a compensation failing once. The same points
    fire in a choreographed saga, where the process killed is the reacting service's."""
    first = rng.choice(SAGA_SERVICES)
    failing = rng.choice(SAGA_SERVICES)
    started = list(SAGA_SERVICES[:SAGA_SERVICES.index(failing) + 1])
    compensated = rng.choice(started)
    choices = [
        ((f"saga.after.STEP_START.{first}", "crash"),),
        ((f"saga.{first}.book", "crash"),),
        ((f"saga.{failing}.book", "raise"),),
        ((f"saga.{failing}.book", "raise"), ("saga.after.SAGA_ABORT", "crash")),
        ((f"saga.{failing}.book", "raise"), (f"saga.after.COMP_START.{compensated}", "crash")),
        ((f"saga.{failing}.book", "raise"), (f"saga.{compensated}.cancelled", "crash")),
        ((f"saga.{failing}.book", "raise"), (f"saga.{compensated}.cancel", "raise")),
    ]
    return rng.choice(choices)


@dataclass(frozen=True)
class Event:
    at: float    # seconds after the load starts
    # kill, pg_restart, terminate, pause, redis_restart; with hosts: partition, group_pause
    kind: str
    target: str = ""  # a kill's target; a partition's "HOST PEER WAY"; a group pause's host


@dataclass
class Plan:
    params: Params
    signups: list[Signup] = field(default_factory=list)
    trips: list[Trip] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    load_seconds: float = 0.0  # how long the load is spread over
    skewed_host: str = ""  # the worker host whose clock is shifted by clock_skew_s


# Rough capacity of the 2-core machine under faults, to spread load and faults over a
# duration the system can follow (not a promise: the experiment measures what happens).
SIGNUPS_PER_SECOND = 150
SAGAS_PER_SECOND = 40


def make_plan(params: Params) -> Plan:
    """The whole run, decided from the seed: who signs up how, which trips fail, and when
    what is killed."""
    rng = random.Random(params.seed)
    plan = Plan(params=params)
    if params.script == "talk":
        for mode in MODES:
            plan.signups += [Signup(f"mike-{mode}", mode),
                             Signup(f"kevin-{mode}", mode, fail="part1"),
                             Signup(f"matt-{mode}", mode, fail="part2")]
        plan.trips = [Trip("alice"), Trip("bob", (("saga.car.book", "raise"),)),
                      Trip("carol", (("saga.hotel.book", "crash"),)),
                      Trip("dave", (("saga.flight.book", "crash"),))]
    else:
        for i in range(params.signups):
            for mode in MODES:
                fail = crash = None
                if rng.random() < params.fault_rate:
                    how, part = rng.choice(SIGNUP_FAULTS)
                    fail, crash = (part, None) if how == "fail" else (None, part)
                plan.signups.append(Signup(f"{mode}-{i}", mode, fail=fail, crash=crash))
        for i in range(params.sagas):
            faults = saga_boundary_faults(rng) if rng.random() < params.fault_rate else ()
            plan.trips.append(Trip(f"c{i}", faults))
        rng.shuffle(plan.signups)
    plan.load_seconds = max(3.0, len(plan.signups) / SIGNUPS_PER_SECOND
                            + len(plan.trips) * len(params.styles) / SAGAS_PER_SECOND,
                            params.seconds)
    for name, seconds in (("partition", params.partition_s),
                          ("group pause", params.group_pause_s)):
        count = params.partitions if name == "partition" else params.group_pauses
        if count and seconds > plan.load_seconds:
            raise PlanError(f"a {name} of {seconds:g} s is longer than the run's load "
                            f"({plan.load_seconds:.0f} s): give fewer seconds, or --seconds "
                            f"{seconds:g} or more")
    kinds = (["kill"] * params.kills + ["pg_restart"] * params.pg_restarts
             + ["terminate"] * params.terminations + ["pause"] * params.pauses
             + ["redis_restart"] * params.redis_restarts + ["partition"] * params.partitions
             + ["group_pause"] * params.group_pauses)
    hosts = [f"w{i}" for i in range(1, params.hosts + 1)]
    kinds_of_cut = [kind for kind, _ in PARTITION_KINDS]
    weights = [weight for _, weight in PARTITION_KINDS]
    for kind in kinds:
        at = round(rng.uniform(0.1, 0.9) * plan.load_seconds, 3)
        if kind == "kill":
            target = rng.choice(KILL_TARGETS)
        elif kind == "partition":
            peer, way = rng.choices(kinds_of_cut, weights)[0]
            target = f"{rng.choice(hosts)} {peer} {way}"
        elif kind == "group_pause":
            target = rng.choice(hosts)
        else:
            target = ""
        plan.events.append(Event(at, kind, target))
    plan.events.sort(key=lambda e: (e.at, e.kind, e.target))
    if params.clock_skew_s:
        plan.skewed_host = rng.choice(hosts)
    return plan
