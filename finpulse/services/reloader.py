"""Which models the scorer runs: the configured one, else the registry's champion, hot-reloaded;
and the registry's shadow version beside it, if one is flagged."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from finpulse.errors import ModelError
from finpulse.schemas import Post
from finpulse.settings import Settings
from finpulse.storage.registry import ModelRegistry
from models import DEFAULT_MODEL_DIR
from models.inference import SentimentEngine

logger = logging.getLogger(__name__)


def model_input(post: Post) -> str:
    """The text the classifier reads: the title, when there is one, then the body."""
    if post.title and post.title.strip() and post.title.strip() not in post.text:
        return f"{post.title.strip()}. {post.text}"
    return post.text


def load_engine(settings: Settings, path: str | Path | None) -> SentimentEngine:
    """Load a model with the engine options from settings (None: the bundled default)."""
    cfg = settings.model
    return SentimentEngine.load(
        path,
        device=cfg.device,
        dtype=cfg.dtype,
        max_length=cfg.max_length,
        batch_tokens=cfg.batch_tokens,
        backend=cfg.backend,
        cache_dir=cfg.cache_dir,
        workers=cfg.workers,
    )


def register_model(registry: ModelRegistry, engine: SentimentEngine, path: Path) -> None:
    """Record the model in use; the first model a database sees becomes its champion."""
    manifest = engine.manifest
    registry.register(
        engine.version,
        base=manifest["base"],
        method=manifest["method"],
        metrics=manifest.get("metrics", {}),
        artifact_path=str(Path(path).resolve()),
        trainable_params=manifest.get("trainable_params"),
    )
    if registry.champion() is None:
        registry.promote(engine.version)


class _Loading:
    """One engine being loaded on a daemon thread; ``result`` once ``done``."""

    def __init__(self, settings: Settings, version: str, path: str) -> None:
        self.version = version
        self.engine: SentimentEngine | None = None
        self.error: ModelError | None = None
        self._thread = threading.Thread(target=self._load, args=(settings, path),
                                        name=f"load-{version}", daemon=True)
        self._thread.start()

    def _load(self, settings: Settings, path: str) -> None:
        try:
            self.engine = load_engine(settings, path)
        except ModelError as exc:
            self.error = exc
        except Exception as exc:  # noqa: BLE001 - reported like a bad artifact, never raised in the thread
            self.error = ModelError(f"{type(exc).__name__}: {exc}")

    def done(self) -> bool:
        return not self._thread.is_alive()


class ModelReloader:
    """Follows the registry's champion; a model that fails to load never replaces a working one.

    Args:
        settings: the engine options new models are loaded with.
        registry: where the champion is read.
        interval_s: seconds between registry checks (``force`` checks at once).
        background: load a new champion on a thread while the current model keeps scoring,
            and switch on the first check after it has loaded (the scorer: building a
            model's int8 graph takes seconds, which would otherwise stall the stream).
            False loads it inside the check (one call switches).
    """

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        *,
        interval_s: float = 30.0,
        background: bool = False,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._interval_s = interval_s
        self._background = background
        self._loading: _Loading | None = None
        self._next_check = 0.0
        self._next_shadow_check = 0.0
        self._failed: set[str] = set()

    def initial(self) -> SentimentEngine:
        """The model to start with: the configured path, else the champion, else the bundled default.

        A model loaded from a path is registered, so every stored score's version is known.
        """
        path = self._settings.model.path
        if path is None:
            champion = self._registry.champion()
            if champion is not None:
                try:
                    return load_engine(self._settings, champion.artifact_path)
                except ModelError as exc:
                    logger.error("champion %s failed to load (%s); using the bundled default",
                                 champion.version, exc)
                    self._failed.add(champion.version)
        engine = load_engine(self._settings, path)
        register_model(self._registry, engine, path or DEFAULT_MODEL_DIR)
        return engine

    def maybe_reload(self, current: SentimentEngine, *, force: bool = False) -> SentimentEngine:
        """Return a new engine when the champion changed and loads cleanly, else ``current``.

        Raises:
            StorageError: the registry could not be read (the scorer retries it).
        """
        if self._settings.model.path is not None:
            return current
        loading = self._loading
        if loading is not None:
            if not loading.done():
                return current
            self._loading = None
            return self._switch(current, loading.version, loading.engine, loading.error)
        now = time.monotonic()
        if not force and now < self._next_check:
            return current
        # Read first: a database outage raises StorageError (transient) and the next call
        # checks again, instead of skipping the check for a whole interval.
        champion = self._registry.champion()
        self._next_check = now + self._interval_s
        if champion is None or champion.version in (current.version, *self._failed):
            return current
        if self._background:
            logger.info("loading new champion %s; %s scores meanwhile", champion.version,
                        current.version)
            self._loading = _Loading(self._settings, champion.version, champion.artifact_path)
            return current
        try:
            engine = load_engine(self._settings, champion.artifact_path)
        except ModelError as exc:
            return self._switch(current, champion.version, None, exc)
        return self._switch(current, champion.version, engine, None)

    def _switch(self, current: SentimentEngine, version: str, engine: SentimentEngine | None,
                error: ModelError | None) -> SentimentEngine:
        if engine is None:
            self._failed.add(version)
            logger.error("new champion %s failed to load, keeping %s: %s", version,
                         current.version, error)
            return current
        logger.info("switched model %s -> %s", current.version, engine.version)
        return engine

    def maybe_reload_shadow(
        self, current: SentimentEngine | None, champion: str, *, force: bool = False
    ) -> SentimentEngine | None:
        """The shadow engine to run beside the champion: ``current``, a newly loaded one, or None.

        None when the registry flags no shadow version, or flags the version the champion
        runs (it would only score every post twice), or one that failed to load before.

        Args:
            current: the shadow engine running now, if any.
            champion: the version the scorer runs live.
            force: check now, whatever the interval.

        Raises:
            StorageError: the registry could not be read.
            ModelError: the newly flagged version failed to load (it is not tried again).
        """
        now = time.monotonic()
        if not force and now < self._next_shadow_check:
            return current
        shadow = self._registry.shadow()
        self._next_shadow_check = now + self._interval_s
        if shadow is None or shadow.version == champion or shadow.version in self._failed:
            if current is not None:
                logger.info("stopped shadow model %s", current.version)
            return None
        if current is not None and current.version == shadow.version:
            return current
        try:
            engine = load_engine(self._settings, shadow.artifact_path)
        except ModelError:
            self._failed.add(shadow.version)
            raise
        logger.info("shadow model %s -> %s", current.version if current else None, engine.version)
        return engine
