"""pgbroker's workers read django-q2's signed packages with PackageReader (the HMAC key derived
once): it must accept exactly what django-q2's SignedPackage.loads accepts, and refuse what it
refuses."""

from __future__ import annotations

import pytest
from django_q import core_signing
from django_q.conf import Conf
from django_q.signing import BadSignature, PickleSerializer, SignedPackage

from pgbroker.cluster.worker import PackageReader

TASK = {"id": "a" * 32, "name": "x", "func": "math.floor", "args": (1,), "kwargs": {"é": "ü" * 300}}


@pytest.mark.parametrize("compressed", [False, True])
def test_it_reads_what_django_q2_signs_as_django_q2_does(compressed):
    package = SignedPackage.dumps(TASK, compressed)
    assert PackageReader().loads(package) == SignedPackage.loads(package) == TASK
    assert PackageReader().loads(package.encode()) == TASK  # Redis gives bytes


def test_it_refuses_what_django_q2_refuses():
    package = SignedPackage.dumps(TASK, False)
    last = package[-1]
    tampered = package[:-1] + ("A" if last != "A" else "B")
    other_key = core_signing.dumps(TASK, key="another secret key", salt=Conf.PREFIX,
                                   serializer=PickleSerializer)
    for bad in (tampered, other_key, "no separator"):
        with pytest.raises(BadSignature):
            SignedPackage.loads(bad)
        with pytest.raises(BadSignature):
            PackageReader().loads(bad)
    # bytes that are not text: django-q2 raises a decode error (its worker would crash on
    # it); the reader refuses it as a bad package, which the worker parks with its reason
    with pytest.raises(UnicodeDecodeError):
        SignedPackage.loads(b"\xff\xfe not text")
    with pytest.raises(BadSignature):
        PackageReader().loads(b"\xff\xfe not text")
