"""Kafka's murmur2 partitioning: Java's own test vectors, and aiokafka's (Faust's) choice."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner

from streams.kafka.partitioning import murmur2, partition_for

JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}
"""`org.apache.kafka.common.utils.UtilsTest.testMurmur2` (signed Java ints)."""


@pytest.mark.parametrize(("data", "java"), JAVA_VECTORS.items())
def test_murmur2_equals_the_java_clients(data: bytes, java: int) -> None:
    assert murmur2(data) == java & 0xFFFFFFFF


def test_partition_for_equals_aiokafkas_default_partitioner() -> None:
    chooser = random.Random(7)
    keys = [chooser.randbytes(chooser.randint(0, 80)) for _ in range(3000)]
    keys += [f"c-{i}".encode() for i in range(1000)] + ["Łódź-ä".encode(), b""]
    for partitions in (1, 2, 3, 6, 7, 12, 100):
        every = list(range(partitions))
        for key in keys:
            assert partition_for(key, partitions) == DefaultPartitioner()(key, every, every), key
