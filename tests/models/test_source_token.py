"""Source-aware models: the news/social marker in training and in the engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.artifact import read_manifest
from models.config import TrainConfig
from models.data import Example, source_kind, text_key, with_marker
from models.inference import SentimentEngine
from models.train import model_texts, train
from tests.models.tiny import build_tiny_base, make_rows, write_csv


@pytest.mark.parametrize(("name", "kind"), [
    ("news", "news"), ("social", "social"), ("twitter_fin_train", "social"),
    ("stockemotions", "social"), ("phrasebank_allagree", "news"), ("finentity", "news"),
    ("reddit", "social"), ("blog", "news"),
])
def test_source_kind(name: str, kind: str) -> None:
    assert source_kind(name) == kind


def test_an_example_is_social_only_when_all_its_files_are() -> None:
    def example(*sources: str) -> Example:
        return Example("t", "neutral", text_key("t"), sources)

    assert example("twitter_fin_train").kind == "social"
    assert example("phrasebank_50agree", "phrasebank_allagree").kind == "news"
    assert example("phrasebank_50agree", "twitter_fin_train").kind == "news"


def test_training_texts_carry_the_marker_only_when_asked() -> None:
    examples = [Example("shares up", "positive", text_key("shares up"), ("twitter_fin_train",)),
                Example("profit fell", "negative", text_key("profit fell"), ("phrasebank_allagree",))]
    assert model_texts(examples, TrainConfig()) == ["shares up", "profit fell"]
    marked = model_texts(examples, TrainConfig(source_token=True))
    assert marked == ["social: shares up", "news: profit fell"]
    assert with_marker("x", "news") == "news: x"


@pytest.fixture(scope="module")
def source_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("source")
    base = build_tiny_base(root / "base", extra_words=("news", "social", ":"))
    news = write_csv(root / "news.csv", make_rows(200, seed=2))
    social = write_csv(root / "twitter_posts.csv", make_rows(200, seed=3))
    config = TrainConfig(data=[str(news), str(social)], base=str(base), method="lora", epochs=1,
                         batch_size=16, max_length=16, lora_r=2, lora_alpha=4, progress=False,
                         autocast="off", source_token=True)
    train(config, root / "model", device="cpu")
    return root / "model"


def test_the_engine_puts_the_sources_marker_after_cls_in_every_chunk(
        source_artifact: Path) -> None:
    assert read_manifest(source_artifact)["source_markers"] == {"news": "news:",
                                                               "social": "social:"}
    engine = SentimentEngine.load(source_artifact, device="cpu", dtype="float32", max_length=8)
    assert engine.info["source_token"] is True
    tok = engine.tokenizer
    cls, sep = tok.cls_token_id, tok.sep_token_id
    social = tok("social :", add_special_tokens=False)["input_ids"]
    news = tok("news :", add_special_tokens=False)["input_ids"]
    text = "profit the company said report quarter market shares"  # 8 words: 2 chunks of 4
    chunks, owners = engine._chunk([text, "loss"], ["social", "news"])
    assert [len(chunk) for chunk in chunks] == [8, 8, 5]
    assert owners.tolist() == [0, 0, 1]
    assert chunks[0][:3] == [cls, *social] and chunks[1][:3] == [cls, *social]
    assert chunks[2][:3] == [cls, *news] and chunks[2][-1] == sep
    # No source: read as news. One name applies to all texts.
    assert engine._chunk(["loss"])[0] == engine._chunk(["loss"], "news")[0]
    assert engine._chunk(["loss", "gain"], "twitter")[0][1][1:3] == social
    # The marker changes what the model reads.
    as_news = engine.predict_proba([text], sources=["news"])
    as_social = engine.predict_proba([text], sources=["social"])
    assert not (as_news == as_social).all()


def test_sources_must_match_the_texts(source_artifact: Path) -> None:
    engine = SentimentEngine.load(source_artifact, device="cpu", dtype="float32")
    with pytest.raises(ValueError, match="2 sources for 1 texts"):
        engine.predict(["loss"], sources=["news", "social"])


def test_a_model_without_source_token_ignores_sources(tiny_artifact: Path) -> None:
    engine = SentimentEngine.load(tiny_artifact, device="cpu", dtype="float32")
    assert engine.info["source_token"] is False
    texts = ["profit the company", "loss"]
    assert (engine.predict_proba(texts, sources=["news", "social"])
            == engine.predict_proba(texts)).all()
