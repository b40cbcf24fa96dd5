from django.apps import AppConfig


class PeerJobsConfig(AppConfig):
    name = "bench.peers.jobs"
    label = "peerjobs"
    verbose_name = "Peer benchmark jobs"
    default_auto_field = "django.db.models.BigAutoField"
