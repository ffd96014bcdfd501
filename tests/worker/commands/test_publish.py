"""`leadscore plans publish` against the session's broker: what it writes, what it refuses."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from streams.cli import main
from streams.worker.plans.topic import FORMAT, plans_topic
from tests.worker.harness import EXAMPLE_PLANS, TopicReader, new_prefix

pytestmark = pytest.mark.integration

TEXT = EXAMPLE_PLANS.read_text()


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _publish(bootstrap: str, prefix: str, path: Path) -> int:
    return main(["plans", "publish", str(path), "--bootstrap", bootstrap, "--topic-prefix", prefix])


def _topic_exists(bootstrap: str, topic: str) -> bool:
    return topic in AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics


def test_an_invalid_file_is_refused_with_the_checks_message_and_nothing_is_written(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = new_prefix()
    bad = _file(tmp_path, "bad.yaml", TEXT.replace("points: 20", "points: lots"))
    assert main(["plans", "check", str(bad)]) == 2
    checked = capsys.readouterr().err
    assert _publish(kafka_bootstrap, prefix, bad) == 2
    assert capsys.readouterr().err == checked
    assert not _topic_exists(kafka_bootstrap, plans_topic(prefix))


def test_a_version_is_written_once_under_its_label_with_its_start(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = new_prefix()
    v1 = _file(tmp_path, "v1.yaml", "version: v1\n" + TEXT)
    assert _publish(kafka_bootstrap, prefix, v1) == 0
    assert capsys.readouterr().out.startswith("v1 (forward from ")
    assert _publish(kafka_bootstrap, prefix, v1) == 0  # the same file again: nothing written
    assert "already published" in capsys.readouterr().out

    reader = TopicReader(kafka_bootstrap, plans_topic(prefix))
    (record,) = reader.catch_up()
    envelope = orjson.loads(record.value())
    assert record.key() == b"v1"
    assert envelope["format"] == FORMAT and envelope["text"] == "version: v1\n" + TEXT
    assert envelope["effective_from"].endswith("Z")  # filled in with the publish time


@pytest.mark.parametrize(
    ("second", "message"),
    [
        pytest.param(
            'version: v0\neffective_from: "2020-01-01T00:00:00Z"\n' + TEXT,
            "takes over before the latest published version v1",
            id="earlier",
        ),
        pytest.param(
            "version: v1\n" + TEXT.replace("points: 20", "points: 25"),
            "version v1 is already published with other content",
            id="label-reused",
        ),
    ],
)
def test_a_version_every_worker_would_refuse_is_refused_before_it_is_written(
    kafka_bootstrap: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    second: str,
    message: str,
) -> None:
    prefix = new_prefix()
    first = 'version: v1\neffective_from: "2026-01-01T00:00:00Z"\n' + TEXT
    assert _publish(kafka_bootstrap, prefix, _file(tmp_path, "v1.yaml", first)) == 0
    assert _publish(kafka_bootstrap, prefix, _file(tmp_path, "v2.yaml", second)) == 2
    assert message in capsys.readouterr().err
    assert len(TopicReader(kafka_bootstrap, plans_topic(prefix)).catch_up()) == 1
