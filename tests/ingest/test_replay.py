"""Reading post files, replaying them onto the broker, and `finpulse replay`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from finpulse.errors import ConfigError, DataError
from finpulse.settings import KafkaSettings, Settings
from ingest.producer import PostProducer
from ingest.replay import read_posts, replay, stable_post_id
from ingest.topics import ensure_topics
from tests.ingest.kafka_io import make_post, read_topic

CSV = """id,source,text,published_at,title,tickers
,news,"Boeing cuts deliveries, again",2024-05-01T10:00:00Z,Boeing,
s-1,social,"$AAPL to the moon
second line",2024-05-01T10:01:00+00:00,,"AAPL, MSFT"
n-2,news,Quiet day,2024-05-01T10:02:00Z,,XOM CVX
"""


def test_reads_csv_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "posts.csv"
    path.write_text(CSV, encoding="utf-8")
    posts = list(read_posts(path))
    assert [p.source for p in posts] == ["news", "social", "news"]
    assert posts[0].id == stable_post_id("Boeing cuts deliveries, again", "2024-05-01T10:00:00Z")
    assert posts[0].id == list(read_posts(path))[0].id  # stable across reads
    assert posts[0].title == "Boeing" and posts[0].tickers == ()  # extracted when consumed
    assert posts[1].text == "$AAPL to the moon\nsecond line"
    assert posts[1].tickers == ("AAPL", "MSFT")
    assert posts[2].tickers == ("XOM", "CVX")


def test_csv_source_defaults_to_news(tmp_path: Path) -> None:
    path = tmp_path / "minimal.csv"
    path.write_text("text,published_at\nHello,2024-05-01T10:00:00Z\n", encoding="utf-8")
    [post] = read_posts(path)
    assert post.source == "news" and post.text == "Hello"


def test_reads_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "posts.jsonl"
    posts = [make_post(i, tickers=("NVDA",)) for i in range(3)]
    path.write_text("\n".join(p.model_dump_json() for p in posts) + "\n\n", encoding="utf-8")
    assert list(read_posts(path)) == posts


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.csv", "text,published_at\nok,2024-05-01T10:00:00Z\nnaive,2024-05-01T10:00:00\n", ":3: published_at"),
        ("bad.csv", "text,published_at\n   ,2024-05-01T10:00:00Z\n", ":2: text"),
        ("bad.csv", "title,published_at\nx,2024-05-01T10:00:00Z\n", "needs the column(s) text"),
        ("bad.jsonl", '{"id": "a"}\n', ":1: source"),
        ("bad.jsonl", '\n\n{"id": \n', ":3: not JSON"),
        ("bad.jsonl", "[1]\n", ":1: not a JSON object"),
        ("posts.txt", "hello\n", "unsupported file type .txt"),
        ("missing.csv", None, "no such file"),
    ],
)
def test_bad_files_raise_data_error_naming_the_line(
    tmp_path: Path, name: str, content: str | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        list(read_posts(path))


def test_not_utf8_file_raises_data_error(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("text,published_at\ncafé,2024-05-01T10:00:00Z\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        list(read_posts(path))


def test_skip_invalid_keeps_the_good_rows(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    good = [make_post(i) for i in range(2)]
    path.write_text(f"{good[0].model_dump_json()}\nnot json\n{{}}\n{good[1].model_dump_json()}\n")
    assert list(read_posts(path, skip_invalid=True)) == good


def test_replay_publishes_in_file_order_to_the_right_topics(
    tmp_path: Path, kafka_settings: KafkaSettings
) -> None:
    ensure_topics(kafka_settings, partitions=1)
    path = tmp_path / "posts.jsonl"
    posts = [make_post(i, source="news" if i % 3 else "social") for i in range(9)]
    path.write_text("\n".join(p.model_dump_json() for p in posts), encoding="utf-8")
    with PostProducer(kafka_settings) as producer:
        assert replay(path, producer, rate=200.0) == 9
    news = read_topic(kafka_settings, kafka_settings.news_topic, 6)
    social = read_topic(kafka_settings, kafka_settings.social_topic, 3)
    assert [json.loads(r.value)["id"] for r in news] == [p.id for p in posts if p.source == "news"]
    assert [json.loads(r.value)["id"] for r in social] == [p.id for p in posts if p.source == "social"]
    # Posts without tickers are keyed by id.
    assert [r.key.decode() for r in news] == [p.id for p in posts if p.source == "news"]


def test_replay_rejects_a_non_positive_rate(tmp_path: Path, kafka_settings: KafkaSettings) -> None:
    path = tmp_path / "posts.jsonl"
    path.write_text(make_post(1).model_dump_json())
    with PostProducer(kafka_settings) as producer, pytest.raises(ValueError, match="rate"):
        replay(path, producer, rate=0)


def _run_command(argv: list[str], settings: Settings) -> int:
    from finpulse.commands import replay as command

    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args, settings)


def test_replay_command_publishes_the_file(
    tmp_path: Path, kafka_settings: KafkaSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "posts.csv"
    path.write_text(CSV, encoding="utf-8")
    settings = Settings.load(kafka=kafka_settings)
    assert _run_command(["replay", str(path), "--rate", "100"], settings) == 0
    assert "published 3 post(s)" in capsys.readouterr().out
    assert len(read_topic(kafka_settings, kafka_settings.news_topic, 2)) == 2


def test_replay_command_without_a_broker_says_how_to_configure_one(tmp_path: Path) -> None:
    settings = Settings.load(kafka=KafkaSettings(bootstrap_servers=None))
    with pytest.raises(ConfigError, match="FINPULSE_KAFKA__BOOTSTRAP_SERVERS"):
        _run_command(["replay", str(tmp_path / "x.csv")], settings)


def test_replay_command_checks_the_file_before_reaching_for_the_broker(tmp_path: Path) -> None:
    # An unreachable broker would take ~30 s to fail; the missing file must be reported first.
    settings = Settings.load(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"))
    with pytest.raises(DataError, match="file not found"):
        _run_command(["replay", str(tmp_path / "missing.jsonl")], settings)
