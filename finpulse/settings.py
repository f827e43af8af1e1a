"""All of finpulse's configuration, in one place.

Values come from, highest priority first: keyword arguments, environment variables
(``FINPULSE_`` prefix, ``__`` between sections, e.g. ``FINPULSE_KAFKA__BOOTSTRAP_SERVERS``),
an optional YAML file, then the defaults below. The CLI loads settings once and passes
them down; library code never reads ``os.environ``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from finpulse.errors import ConfigError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(Section):
    """The broker and topics. No ``bootstrap_servers`` means: start the embedded broker (demo)."""

    bootstrap_servers: str | None = None
    news_topic: str = "finpulse.news"
    social_topic: str = "finpulse.social"
    scored_topic: str = "finpulse.scored"
    dlq_topic: str = "finpulse.dlq"
    group_id: str = "finpulse-scorer"
    # Production defaults (Kafka's own). The demo and the tests set 6000/1000, which makes
    # group joins take ~3 s instead of ~23 s but evicts a consumer after a 6 s stall.
    session_timeout_ms: int = Field(default=45000, ge=1000)
    heartbeat_interval_ms: int = Field(default=3000, ge=100)
    # Longest gap between two polls before the group gives the partitions away; the scorer
    # polls while it waits out an outage, so only one batch's work must fit in it.
    max_poll_interval_ms: int = Field(default=300000, ge=1000)
    # Large enough that an oversized message is fetched and refused to the DLQ, never stuck.
    max_partition_fetch_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    fetch_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    request_timeout_ms: int = Field(default=30000, ge=1000)
    # Topics finpulse creates when they are missing (existing topics are left as they are).
    topic_partitions: int = Field(default=3, ge=1)
    topic_replication_factor: int = Field(default=1, ge=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None

    @property
    def raw_topics(self) -> tuple[str, str]:
        return (self.news_topic, self.social_topic)


class ModelSettings(Section):
    """Which classifier scores posts, and how."""

    # None: the default model bundled in models/default/.
    path: Path | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: torch on CUDA; on a CPU the ONNX Runtime int8 graph when onnxruntime is
    # installed, torch otherwise or for prompt-tuned models (docs/configuration.md).
    backend: Literal["auto", "torch", "onnx"] = "auto"
    # auto: int8 on the onnx backend; on torch bf16 on CUDA and on CPUs with native bf16,
    # else fp32.
    # float32/bfloat16 with backend auto select torch; int8 needs the onnx backend.
    dtype: Literal["auto", "float32", "bfloat16", "int8"] = "auto"
    # Where built ONNX graphs are cached (None: ~/.cache/finpulse/onnx), keyed by version.
    cache_dir: Path | None = None
    max_length: int = Field(default=256, ge=8, le=4096)
    # Upper bound on padded tokens per forward pass (batch size adapts to text length).
    # None: the backend's default (512 for the onnx graph, 16384 for torch).
    batch_tokens: int | None = Field(default=None, ge=64)
    # onnx backend: batches scored at once, each on a single-threaded session. None: one per
    # CPU thread (fastest on small batches); 1: one session whose threads split each batch.
    workers: int | None = Field(default=None, ge=1, le=256)


class ScorerSettings(Section):
    """Micro-batching of the scorer service and input limits."""

    # 256 over 128: end to end 225.6 vs 214.7 posts/s (0.77 vs 0.73 of the bare engine) at the
    # same p99 at half capacity (0.98 s), bench/e2e.py --n 4000 on a 2-core AVX2 EPYC.
    max_batch_size: int = Field(default=256, ge=1, le=10000)
    max_wait_ms: int = Field(default=200, ge=0, le=60000)
    max_text_chars: int = Field(default=20000, ge=1)
    # Larger raw messages go to the DLQ as ``oversized`` (only their first 64 KiB are kept there).
    max_message_bytes: int = Field(default=1024 * 1024, ge=1024)
    # A post dated further ahead of its consume time goes to the DLQ as ``future_timestamp``.
    future_tolerance_s: float = Field(default=300.0, ge=0)
    # Capped exponential back-off (with jitter) while the database or the broker is down.
    retry_base_s: float = Field(default=0.5, gt=0)
    retry_cap_s: float = Field(default=30.0, gt=0)
    # Score the next batch on a worker thread while this one is stored, published and
    # committed (in poll order); off: one batch at a time, start to commit (for debugging).
    pipeline: bool = True
    # A partition with messages waiting whose position has not moved for this long is
    # reported as stalled (finpulse_scorer_stalled_partitions, a warning in the log); the
    # scorer checks every quarter of it, with one end-offsets request to the broker.
    stall_after_s: float = Field(default=120.0, ge=1)
    # Posts the in-memory near-duplicate index keeps (the oldest leave first; also bounded by
    # 3 days of event time). Each costs ~4.3 KB of the scorer's memory (measured: 100,000
    # posts ~430-540 MB), so RSS grows until the index is full and then stays there.
    dedup_max_posts: int = Field(default=100_000, ge=1, le=10_000_000)


class AlertSettings(Section):
    """Alert rules: a YAML file of rules (alerts-as-code); None uses the bundled defaults."""

    rules_file: Path | None = None


class MonitorSettings(Section):
    """The monitor's event-time handling and pass size."""

    # A late post re-opens (and re-judges) its window only if the window ended less than
    # this long (event time) before its ticker's judged progress; later ones are stored
    # and counted in finpulse_monitor_late_posts_total{outcome="too_late"}.
    allowed_lateness_s: float = Field(default=6 * 3600.0, ge=0)
    # A partition with no new data for this long (wall clock) stops holding the watermark back.
    idle_partition_s: float = Field(default=60.0, gt=0)
    # At most this many dirty (ticker, minute) buckets are re-aggregated per pass.
    max_dirty_per_pass: int = Field(default=20000, ge=1)


class MetricsSettings(Section):
    """The Prometheus endpoint. ``port=0`` picks a free port."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535)


class ApiSettings(Section):
    """The history API (``finpulse api``)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # Every list endpoint: items per page when ``limit`` is not given, and the most allowed.
    default_limit: int = Field(default=100, ge=1, le=10000)
    max_limit: int = Field(default=1000, ge=1, le=10000)


class SmtpSettings(Section):
    """The SMTP server e-mail subscriptions are sent through."""

    host: str = "127.0.0.1"
    port: int = Field(default=25, ge=1, le=65535)
    sender: str = "finpulse@localhost"
    username: str | None = None
    password: SecretStr | None = None
    starttls: bool = False
    # CA bundle to verify the server's certificate with (STARTTLS); None: the system's.
    ca_file: Path | None = None
    timeout_s: float = Field(default=10.0, gt=0)


class NotifierSettings(Section):
    """Delivery of alert events to subscribers (``finpulse notifier``)."""

    # Seconds between polls of the outbox and the due deliveries when there is no work.
    poll_interval_s: float = Field(default=1.0, gt=0, le=60)
    # Deliveries sent at the same time; a slow subscriber holds one of them at most.
    workers: int = Field(default=8, ge=1, le=256)
    # Attempts before a delivery is marked dead.
    max_attempts: int = Field(default=8, ge=1, le=100)
    # Back-off between attempts: exponential from base to cap, with jitter.
    backoff_base_s: float = Field(default=2.0, gt=0)
    backoff_cap_s: float = Field(default=300.0, gt=0)
    # Timeout of one HTTP delivery (webhook, slack) and of the Kafka publish.
    timeout_s: float = Field(default=10.0, gt=0, le=600)
    smtp: SmtpSettings = SmtpSettings()
class RetrainSettings(Section):
    """The retraining job: where challengers go, how data are mixed, and the promotion gate."""

    # New challenger artifacts are written under this directory, one per run.
    output_dir: Path = Path("retrained-models")
    # A split file whose "test" rows are the frozen gold set; None: the bundled model's.
    gold_split: Path | None = None
    # Continue training from the champion (replaying base data) when it was trained the
    # same way (method, base); otherwise train from the base encoder on all the base data.
    warm_start: bool = True
    replay_examples: int = Field(default=2000, ge=0)
    feedback_holdout: float = Field(default=0.2, ge=0.0, lt=1.0)
    feedback_weight: float = Field(default=3.0, gt=0.0)
    feedback_half_life_days: float = Field(default=30.0, gt=0.0)
    # The gate: gold macro-F1 may fall at most gold_tolerance, one class's F1 at most
    # max_class_drop; held-back feedback macro-F1 must rise by more than min_feedback_gain.
    gold_tolerance: float = Field(default=0.01, ge=0.0, le=1.0)
    max_class_drop: float = Field(default=0.03, ge=0.0, le=1.0)
    min_feedback_gain: float = Field(default=0.0, ge=0.0, le=1.0)
    # Encoder learning rate of a warm start, per method, unless the --train-config given
    # sets lr: continuing a converged model wants less than training from scratch. LoRA's
    # 2e-4 rests on one comparison on this project's data (docs/retraining.md).
    warm_start_lr: dict[str, float] = {"lora": 2e-4}
    # --every: a firing model-health alert starts a run early, at most once per cooldown.
    health_trigger: bool = True
    health_cooldown_s: float = Field(default=6 * 3600.0, ge=0)
    # --every: how often the schedule looks at the database (alerts, other processes' runs).
    poll_s: float = Field(default=60.0, gt=0)
    # One run at a time across processes: a database lease of this term, renewed every third.
    lease_s: float = Field(default=600.0, ge=10)

    @field_validator("warm_start_lr")
    @classmethod
    def _positive_lr(cls, value: dict[str, float]) -> dict[str, float]:
        for method, lr in value.items():
            if not 0.0 < lr <= 1.0:
                raise ValueError(f"{method}: a learning rate in (0, 1]")
        return value


class Settings(BaseSettings):
    """Top-level settings; see the module docstring for where values come from."""

    model_config = SettingsConfigDict(
        env_prefix="FINPULSE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    database_url: str = "sqlite:///finpulse.db"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    kafka: KafkaSettings = KafkaSettings()
    model: ModelSettings = ModelSettings()
    scorer: ScorerSettings = ScorerSettings()
    alerts: AlertSettings = AlertSettings()
    monitor: MonitorSettings = MonitorSettings()
    metrics: MetricsSettings = MetricsSettings()
    api: ApiSettings = ApiSettings()
    notifier: NotifierSettings = NotifierSettings()
    retrain: RetrainSettings = RetrainSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls))

    @classmethod
    def load(cls, config_file: str | Path | None = None, **overrides: Any) -> Settings:
        """Build settings from overrides, the environment and an optional YAML file.

        Raises:
            ConfigError: the file is missing or a value is invalid (the message names the field).
        """
        target: type[Settings] = cls
        if config_file is not None:
            path = Path(config_file)
            if not path.is_file():
                raise ConfigError(f"config file not found: {path}", field="config")

            class _FromFile(cls):  # type: ignore[valid-type,misc]
                model_config = SettingsConfigDict(yaml_file=str(path))

            target = _FromFile
        try:
            return target(**overrides)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            raise ConfigError(f"{field}: {first['msg']}", field=field) from exc
