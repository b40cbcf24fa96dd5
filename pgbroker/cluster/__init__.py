"""A django-q2 cluster whose processes can each be SIGKILLed at any moment.

django-q2's stock cluster passes tasks pusher -> workers -> monitor through two shared
multiprocessing queues. A worker killed while it waits for a task holds the task queue's read
lock forever, and every respawned worker then blocks on it (django-q2 #23, django-q #200 and
#394; #339 is the same for the result queue's write lock). The pusher and monitor hold the
queues' other ends, so where a task is at a given moment is known to nobody.

Here one process, the dispatcher, is pusher, monitor and sentinel at once, and each worker has
a pipe of its own. The modules, in the order a job meets them:

    main.py        the main process: keeps one dispatcher alive, kills a hung one
    dispatcher.py  the loop: waits on everything at once, feeds workers, settles their ends
    sources.py     where jobs come from: the interface, and any other django-q2 broker
    postgres.py    ... pgbroker's own table: claims, outcomes, retries, reconnecting
    claiming.py    when to claim, and how to sleep without missing a job (a state machine)
    session.py     the dispatcher's session, which holds the cluster's key (SQL)
    pool.py        the workers as the dispatcher sees them (Slot), starting one
    messages.py    what the dispatcher and a worker say to each other
    worker.py      the worker process: its pipe, its key, reading packages, writing results
    runner.py      ... the loop that runs the tasks: django-q2's worker contract, lean
    workerkey.py   a worker's own hold on its cluster's key
    flusher.py     the thread that writes finished jobs while the loop goes on
    writer.py      ... what it writes, in one transaction per batch
    liveness.py    the fence (a cut-off cluster stops its workers) and the sweep (taking back)

With the PostgreSQL broker the dispatcher's database session holds the advisory lock named by
the cluster's `owner`, and so does every worker's; every claimed job carries it. Liveness
replaces leases: a job is taken back when its worker dies (at once, by its own cluster) or
when every session of its cluster has ended (by any other cluster, after a grace period that
lets a dispatcher whose connection merely broke reconnect and keep its jobs). A dispatcher cut
off from the database stops its busy workers itself before that can happen (pgbroker.timing),
so no job runs in two places at once.

Every process dies with its parent (PR_SET_PDEATHSIG): a SIGKILLed `qcluster` leaves no ghost
workers consuming the queue, and a SIGKILLed dispatcher takes its workers with it (the main
process starts a new one). Workers ignore SIGTERM and SIGINT: a stop, even one sent to the
whole process group, is the dispatcher's to run, and it hands unstarted jobs back at once
instead of draining them.

With another broker (`Q_BROKER=orm`, Redis) the same process model runs and the same
crash-safety of the cluster itself holds; delivery after a crash is then that broker's (the
ORM broker's lease).
"""

from pgbroker.cluster.main import MainProcess

__all__ = ["MainProcess"]
