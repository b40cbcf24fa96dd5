import os
import sys

from django.conf import settings
from django.core.management.base import BaseCommand

from common.inputs import OneLineErrors, arg
from common.validate import text


class Command(OneLineErrors, BaseCommand):
    help = ("Run a django-q2 cluster whose processes survive any SIGKILL: one dispatcher, "
            "Q_CLUSTER['workers'] workers (pgbroker.cluster). Stops cleanly on SIGTERM.")

    def add_arguments(self, parser):
        parser.add_argument("-n", "--name", dest="cluster_name", default=None,
                            type=arg(text, what="the cluster name", max_length=100),
                            help="queue (cluster) name instead of Q_CLUSTER['name']")

    def handle(self, *args, cluster_name: str | None = None, **options):
        settings.SECRET_KEY  # noqa: B018 (payloads are signed with it: fail now, not per task)
        if cluster_name:
            os.environ["Q_CLUSTER_NAME"] = cluster_name
        from pgbroker.cluster import MainProcess

        sys.exit(MainProcess().run())
