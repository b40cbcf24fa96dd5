# Reliable background work on Django + PostgreSQL. `make` prints the menu.
SHELL := /bin/bash
.DEFAULT_GOAL := usage

PYTHON_SYS  ?= $(shell command -v python3.11 || command -v python3)
VENV        := .venv
PY          := $(VENV)/bin/python
MANAGE      := $(PY) manage.py
LOCAL_PG    := $(PYTHON_SYS) devtools/local_postgres.py
LOCAL_REDIS := $(PYTHON_SYS) devtools/local_redis.py
LAB         := $(PYTHON_SYS) devtools/lab.py
STORES      := $(LOCAL_PG) run -- $(LOCAL_REDIS) run --
SUPERVISE   := $(PYTHON_SYS) devtools/supervise.py
RUN_ADDR    ?= 127.0.0.1:8000
STAMP       := $(VENV)/.installed
mode        ?= dual-write

# A value given on make's command line (name=..., id=...) reaches a recipe only through the
# environment, as "$$ARG_..." in double quotes: never spliced into the shell's text, so
# `make create-user 'name=x"; echo hi; "'` creates a user with that odd name and runs nothing.
# $(value v) takes it as typed (no second expansion of a $ in it).
export RUN_ADDR

BOLD  := \033[1m
CYAN  := \033[36m
RESET := \033[0m

.PHONY: usage setup ready venv db-start db-stop db-reset db-status redis-start redis-stop \
        redis-status reconcile experiment chaos migrate run demo stop status \
        test test-fast lint format clean lock create-user show-state relay faults bench bench-scale prune book-trip show-saga recover screenshots \
        test-deps need-args lab-up lab-down lab-status

usage: ## this menu
	@printf "$(BOLD)Reliable background work on Django + PostgreSQL$(RESET)\n\n"
	@printf "  $(BOLD)make demo$(RESET)   set everything up, start web + cluster + relay, print the login\n"
	@printf "  $(BOLD)make test$(RESET)   set everything up from nothing, lint, run the whole suite\n\n"
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  $(CYAN)%-14s$(RESET) %s\n", $$1, $$2}'
	@printf "\nThe talk's demo: make create-user name=mike [mode=dual-write|outbox|que] [fail=part1|part2]\n"

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	@set -o pipefail; $(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt 2>&1 \
	  | { grep -v 'is ignored: it is neither a file' || true; }
	@touch $(STAMP)

venv: $(STAMP) ## create .venv and install the pinned packages

db-start: ## start the project-local PostgreSQL (initdb on first use)
	@$(LOCAL_PG) start

db-stop: ## stop the project-local PostgreSQL
	@$(LOCAL_PG) stop

db-status: ## is the project-local PostgreSQL running?
	@$(LOCAL_PG) status

db-reset: ## stop the cluster and delete its data (asks nothing: careful)
	@$(LOCAL_PG) reset

redis-start: ## start the project-local Redis (installs Debian's redis-server as root if missing)
	@$(LOCAL_REDIS) start

redis-stop: ## stop the project-local Redis (the outbox waits, dual-write loses, que carries on)
	@$(LOCAL_REDIS) stop

redis-status: ## is the project-local Redis running?
	@$(LOCAL_REDIS) status

migrate: $(STAMP) db-start ## apply migrations
	@$(MANAGE) migrate --no-input -v 0

setup: ready redis-start ## venv + packages + PostgreSQL + Redis + migrations (idempotent)
	@echo "setup done: $(MANAGE) ... is ready"

# What a command needs. Redis is not in it: `make redis-stop` must stay stopped while you try
# the demos (run, demo and setup start it).
ready: $(STAMP) db-start migrate

# With DEBUG=0 the web server is gunicorn + whitenoise after collectstatic, else runserver
# (devtools/supervise.py; docs/production.md).
run: ready redis-start ## web (127.0.0.1:8000 or RUN_ADDR; gunicorn with DEBUG=0), both clusters, relay, saga recoverer, under supervisord
	@$(SUPERVISE) start
	@echo "admin: http://$$RUN_ADDR/admin/  logs: var/log/  status: make status  stop with: make stop"

demo: ready redis-start ## setup + run + a superuser whose password is printed once
	@$(MANAGE) demo_superuser --reset
	@$(SUPERVISE) start
	@printf "\n$(BOLD)Open http://%s/admin/$(RESET)  (stop everything with: make stop)\n" "$$RUN_ADDR"

stop: ## stop what run/demo started (then supervisord), the local Redis and the local PostgreSQL
	@$(SUPERVISE) stop
	@$(LOCAL_REDIS) stop
	@$(LOCAL_PG) stop

status: ## what is running: each program's state and pid, Redis, PostgreSQL
	@$(SUPERVISE) status || true
	@$(LOCAL_REDIS) status || true
	@$(LOCAL_PG) status || true

# `make lint`'s ruff first (seconds); then pass 1: everything but the browser, the lab, the
# conformance suite and the tests marked `beside` / `beside_lab`. Pass 2, four at once (their
# outputs shown one after the other): mypy, then the cluster tests on the stock ORM broker
# (they wait out its leases); the conformance suite (it waits on its clusters) with the tests
# marked `beside_conformance` (on a test database of their own); the lab
# of simulated hosts (it waits on network timeouts, on a PostgreSQL and a Redis of its own)
# with the `beside_lab` tests (on a test database of their own); the browser and `beside`
# tests (they wait on graces and pauses; on a test database and a Redis server of their own:
# some stop or restart their Redis).
# make test's first pass runs in two halves at once: these directories on a PostgreSQL and a Redis
# of their own (their tests restart servers), the rest on the project's.
HALF := tests/pgbroker tests/outbox tests/sagas tests/ops tests/jobs tests/faults tests/retention \
        tests/experiments

test: $(STAMP) test-deps ## lint + the whole suite against real PostgreSQL and Redis (sets up from nothing)
	@$(VENV)/bin/ruff check .
	@mkdir -p var/log
	@$(STORES) bash -c 'first="not lab and not browser and not beside and not beside_lab and not conformance and not beside_conformance"; \
	  echo "== the first pass, in two halves at once: $(HALF) on servers of their own (var/log/test-half.log) =="; \
	  LOCAL_PG_DIR=var/pg-half LOCAL_REDIS_DIR=var/redis-half $(STORES) \
	    $(VENV)/bin/pytest -q -m "$$first" $(HALF) $(PYTEST_ARGS) > var/log/test-half.log 2>&1 & half=$$!; \
	  $(VENV)/bin/pytest -m "$$first" $(addprefix --ignore=,$(HALF)) $(PYTEST_ARGS); whole=$$?; \
	  wait $$half; halved=$$?; cat var/log/test-half.log; \
	  [ $$whole -eq 0 ] && [ $$halved -eq 0 ] || exit 1; \
	  echo "== mypy, the ORM broker and the conformance suite; the lab; the browser: at once =="; \
	  TEST_DATABASE_NAME=test_reliable_lab TEST_REDIS_DB=13 \
	    $(VENV)/bin/pytest -q -m "lab or beside_lab" $(PYTEST_ARGS) > var/log/test-lab.log 2>&1 & lab=$$!; \
	  LOCAL_REDIS_DIR=var/redis-browser TEST_DATABASE_NAME=test_reliable_browser TEST_REDIS_DB=14 \
	    $(PYTHON_SYS) devtools/local_redis.py run -- \
	    $(VENV)/bin/pytest -q -m "browser or beside" $(PYTEST_ARGS) > var/log/test-browser.log 2>&1 & browser=$$!; \
	  TEST_DATABASE_NAME=test_reliable_conformance TEST_REDIS_DB=12 \
	    $(VENV)/bin/pytest -q -m "conformance or beside_conformance" $(PYTEST_ARGS) > var/log/test-conformance.log 2>&1 & conform=$$!; \
	  $(VENV)/bin/mypy; typed=$$?; \
	  Q_BROKER=orm $(VENV)/bin/pytest -q -m "cluster and not any_broker" $(PYTEST_ARGS); orm=$$?; \
	  wait $$conform; conformed=$$?; wait $$browser; browsed=$$?; wait $$lab; labbed=$$?; \
	  echo "== the conformance suite: django-q2 on pgbroker and on its own ORM broker =="; \
	  cat var/log/test-conformance.log; \
	  echo "== the browser and the tests that wait beside it =="; cat var/log/test-browser.log; \
	  echo "== the lab (tests/lab, devtools/lab.py), and the tests that wait on processes beside it =="; cat var/log/test-lab.log; \
	  [ $$typed -eq 0 ] && [ $$orm -eq 0 ] && [ $$conformed -eq 0 ] && [ $$browsed -eq 0 ] && [ $$labbed -eq 0 ]'

test-fast: $(STAMP) ## the suite without the browser, lab and conformance tests, on the default broker only
	@$(STORES) $(VENV)/bin/pytest -m "not browser and not lab and not conformance and not beside_conformance" $(PYTEST_ARGS)

test-deps: ## Debian's chromium (browser tests) and faketime (clock skew), with apt when root
	@missing=""; command -v chromium >/dev/null 2>&1 || missing="chromium"; \
	  command -v faketime >/dev/null 2>&1 || missing="$$missing faketime"; \
	  [ -z "$$missing" ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing (apt) for the tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing:$$missing: the tests that need them are skipped (sudo apt-get install$$missing)"; fi; }

screenshots: $(STAMP) test-deps ## re-take the screenshots of README.md and docs/ (docs/*.png) with the browser test
	@SCREENSHOT_DIR=docs $(STORES) $(VENV)/bin/pytest -q tests/dashboard/test_browser.py

lint: $(STAMP) ## ruff, and mypy (pyproject.toml: strict for pgbroker and common)
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/mypy

format: $(STAMP) ## ruff --fix
	@$(VENV)/bin/ruff check --fix .

create-user: export ARG_NAME := $(value name)
create-user: export ARG_MODE := $(value mode)
create-user: export ARG_FAIL := $(value fail)
create-user: export ARG_CRASH := $(value crash)
create-user: USAGE := make create-user name=NAME [mode=dual-write|outbox|que] [fail=part1|part2] [crash=part1|part2]
create-user: NEEDS := ARG_NAME
create-user: need-args ready ## the talk's demo: name=NAME [mode=dual-write|outbox|que] [fail=part1|part2] [crash=part1|part2]
	@$(MANAGE) create_user "$$ARG_NAME" --mode "$$ARG_MODE" \
	  $${ARG_FAIL:+--fail "$$ARG_FAIL"} $${ARG_CRASH:+--crash "$$ARG_CRASH"}

show-state: ready ## users, their emails, the outbox and the queue (the talk's db-show)
	@$(MANAGE) show_state

book-trip: export ARG_CUSTOMER := $(value customer)
book-trip: export ARG_FAIL := $(value fail)
book-trip: export ARG_CRASH := $(value crash)
book-trip: export ARG_STYLE := $(value style)
book-trip: USAGE := make book-trip customer=NAME [fail=hotel|car|flight] [crash=hotel|car|flight] [style=orchestrated|choreographed]
book-trip: NEEDS := ARG_CUSTOMER
book-trip: need-args ready ## a trip saga: customer=NAME [fail=...] [crash=...] [style=orchestrated|choreographed]
	@$(MANAGE) book_trip "$$ARG_CUSTOMER" --wait --timeout 60 \
	  $${ARG_FAIL:+--fail "$$ARG_FAIL"} $${ARG_CRASH:+--crash "$$ARG_CRASH"} \
	  $${ARG_STYLE:+--style "$$ARG_STYLE"}

show-saga: export ARG_ID := $(value id)
show-saga: USAGE := make show-saga id=N
show-saga: NEEDS := ARG_ID
show-saga: need-args ready ## a saga's log and bookings: id=N
	@$(MANAGE) show_saga "$$ARG_ID"

# The first prerequisite of a target that needs values: make's own usage line (the target's
# USAGE) and exit 2 when one of NEEDS is empty, before anything starts.
need-args:
	@for v in $(NEEDS); do [ -n "$${!v}" ] || { echo "usage: $(USAGE)" >&2; exit 2; }; done

recover: ready ## recover sagas whose coordinator died (one pass)
	@$(MANAGE) recover_sagas --once

reconcile: ready ## enqueue again the welcome emails a store lost (outbox and que; one pass)
	@$(MANAGE) reconcile

experiment: export ARG_PRESET := $(value preset)
experiment: export ARG_SEED := $(value seed)
# The long runs start PostgreSQL and Redis if they are not running, and stop them afterwards.
experiment: $(STAMP) ## one experiment: preset=talk|smoke|chaos [seed=N]; admin -> Experiments shows it
	@$(STORES) bash -c '$(MANAGE) migrate --no-input -v 0 && \
	  $(MANAGE) experiment --preset "$${ARG_PRESET:-talk}" $${ARG_SEED:+--seed "$$ARG_SEED"}'

chaos: export ARG_SEED := $(value seed)
chaos: $(STAMP) ## the big experiment: 10,000 signups per mode, 50 kills, 3 PostgreSQL restarts, 1,000 trips in each saga style
	@$(STORES) bash -c '$(MANAGE) migrate --no-input -v 0 && \
	  $(MANAGE) experiment --preset chaos $${ARG_SEED:+--seed "$$ARG_SEED"}'

lab-up: export ARG_HOSTS := $(value hosts)
lab-up: $(STAMP) ## simulated hosts (root): PostgreSQL, Redis, relay and hosts=N worker hosts over TCP (docs/lab.md)
	@$(LAB) up --hosts "$${ARG_HOSTS:-2}"

lab-down: ## remove every namespace, link and process of the lab (also after a crash)
	@$(LAB) down

lab-status: ## the lab's hosts, their programs, and which are cut off
	@$(LAB) status || true

relay: ready ## relay the outbox once
	@$(MANAGE) relay_outbox --once

faults: ready ## list the fault points
	@$(MANAGE) faults list

bench: $(STAMP) ## throughput, latency, crashes: ours and the peers side by side (docs/benchmarks.md)
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt 2>&1 \
	  | { grep -v 'is ignored: it is neither a file' || true; }
	@$(STORES) bash -c '$(PY) -m bench.run && { [ -n "$$BENCH_ONLY" ] || $(PY) -m bench.peers.run; }'

bench-scale: $(STAMP) ## a year of history (1M users): dashboard, checks, admin lists, prune (docs/benchmarks.md)
	@$(STORES) $(PY) -m bench.scale

prune: ready ## delete what is older than its retention window (manage.py prune; docs/retention.md)
	@$(MANAGE) prune

lock: ## rebuild requirements.txt from requirements.in in a scratch venv
	@rm -rf /tmp/reliable-lock && $(PYTHON_SYS) -m venv /tmp/reliable-lock
	@/tmp/reliable-lock/bin/pip install --quiet -r requirements.in
	@{ echo "# Lock file: every package pinned. Regenerate with 'make lock' after editing requirements.in."; \
	  /tmp/reliable-lock/bin/pip freeze; } > requirements.txt
	@echo "requirements.txt updated"

clean: ## remove the venv, logs, mail and caches (not the database: make db-reset)
	@$(SUPERVISE) stop >/dev/null 2>&1 || true
	rm -rf $(VENV) var/log var/mail var/run .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
