"""Tests for anomclust_lite.features.models.resolve_model (never touches the network)."""

from __future__ import annotations

import socket
import types
from pathlib import Path
from typing import Any, List

import pytest

from anomclust_lite.features import models
from anomclust_lite.features.models import (
    CHECKPOINT_FILE_NAME,
    MODEL_ENV,
    MODEL_FILE_NAME,
    OFFLINE_ENV,
    ModelNotFoundError,
    downloads_disabled,
    resolve_model,
)


@pytest.fixture(autouse=True)
def no_network_and_clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.delenv(MODEL_ENV, raising=False)
    monkeypatch.delenv(OFFLINE_ENV, raising=False)
    monkeypatch.setenv("ANOMCLUST_CACHE", str(tmp_path / "user_cache"))


class FakeWrn50(types.ModuleType):
    """Stands in for anomclust_lite.backbones.wrn50: records calls, writes small files."""

    def __init__(self, cache: Path, *, download_fails: bool = False, export_fails: bool = False) -> None:
        super().__init__("anomclust_lite.backbones.wrn50")
        self.cache = cache
        self.calls: List[str] = []
        self.download_fails = download_fails
        self.export_fails = export_fails

    def download_checkpoint(self, dest: Path, *, progress: Any = None) -> Path:
        self.calls.append("download")
        if self.download_fails:
            raise OSError("could not download https://example.invalid: network unreachable")
        Path(dest).write_bytes(b"checkpoint")
        if progress is not None:
            progress(10, 10)
        return Path(dest)

    def export_wrn50_onnx(self, checkpoint: Path, out: Path, *, allow_unverified: bool = False) -> Path:
        self.calls.append(f"export {Path(checkpoint).name} -> {Path(out).name}")
        if self.export_fails:
            raise ImportError("the WRN-50 export needs the onnx package")
        Path(out).write_bytes(b"onnx")
        return Path(out)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeWrn50:
    module = FakeWrn50(tmp_path / "cache")
    monkeypatch.setattr(models, "wrn50", module)
    monkeypatch.setenv("ANOMCLUST_CACHE", str(module.cache))  # the user cache folder
    return module


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_order_explicit_then_env_then_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeWrn50) -> None:
    explicit = _touch(tmp_path / "explicit.onnx")
    env = _touch(tmp_path / "env.onnx")
    cached = _touch(fake.cache / MODEL_FILE_NAME)
    monkeypatch.setenv(MODEL_ENV, str(env))
    assert resolve_model(explicit) == explicit
    assert resolve_model(str(explicit)) == explicit
    assert resolve_model() == env
    monkeypatch.delenv(MODEL_ENV)
    assert resolve_model() == cached
    monkeypatch.setenv(MODEL_ENV, "")  # empty counts as unset
    assert resolve_model() == cached
    assert fake.calls == []


def test_missing_explicit_or_env_path_is_an_error_not_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeWrn50
) -> None:
    _touch(fake.cache / MODEL_FILE_NAME)
    monkeypatch.setenv(MODEL_ENV, str(_touch(tmp_path / "env.onnx")))
    with pytest.raises(ModelNotFoundError, match="model .*nope.onnx does not exist") as info:
        resolve_model(tmp_path / "nope.onnx")
    assert isinstance(info.value, FileNotFoundError)
    monkeypatch.setenv(MODEL_ENV, str(tmp_path / "gone.onnx"))
    with pytest.raises(ModelNotFoundError, match=r"\$ANOMCLUST_MODEL .*gone.onnx does not exist"):
        resolve_model()
    with pytest.raises(ModelNotFoundError, match="not a file"):
        resolve_model(tmp_path)


def test_builds_from_cached_checkpoint(fake: FakeWrn50) -> None:
    _touch(fake.cache / CHECKPOINT_FILE_NAME)
    out = resolve_model(allow_download=False)
    assert out == fake.cache / MODEL_FILE_NAME and out.is_file()
    assert fake.calls == [f"export {CHECKPOINT_FILE_NAME} -> {MODEL_FILE_NAME}"]
    assert resolve_model(allow_download=False) == out  # now cached: no second build
    assert len(fake.calls) == 1


def test_build_failure_is_one_clear_error(fake: FakeWrn50) -> None:
    fake.export_fails = True
    _touch(fake.cache / CHECKPOINT_FILE_NAME)
    with pytest.raises(ModelNotFoundError, match="building .* failed .*onnx package.*--model PATH"):
        resolve_model()


def test_downloads_then_builds_when_allowed(fake: FakeWrn50) -> None:
    seen = []
    out = resolve_model(progress=lambda done, total: seen.append((done, total)))
    assert out == fake.cache / MODEL_FILE_NAME
    assert fake.calls == ["download", f"export {CHECKPOINT_FILE_NAME} -> {MODEL_FILE_NAME}"]
    assert seen == [(10, 10)]


def test_download_failure_is_one_clear_error(fake: FakeWrn50) -> None:
    fake.download_fails = True
    with pytest.raises(ModelNotFoundError, match="downloading .* failed .*network unreachable.*ANOMCLUST_MODEL"):
        resolve_model()


@pytest.mark.parametrize("how", ["argument", "env"])
def test_offline_without_model_says_how_to_provide_one(
    fake: FakeWrn50, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    if how == "env":
        monkeypatch.setenv(OFFLINE_ENV, "1")
        assert downloads_disabled()
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model(allow_download=(how == "env"))  # env wins over True
    message = str(info.value)
    assert fake.calls == []
    assert "\n" not in message
    assert "--model PATH" in message
    assert f"{MODEL_ENV}=PATH" in message
    expected_out = str(fake.cache / MODEL_FILE_NAME)
    assert f"python tools/export_wrn50.py --checkpoint {CHECKPOINT_FILE_NAME} --out {expected_out}" in message
    if how == "env":
        assert OFFLINE_ENV in message


def test_offline_env_values(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, disabled in [("", False), ("0", False), ("1", True), ("yes", True)]:
        monkeypatch.setenv(OFFLINE_ENV, value)
        assert downloads_disabled() is disabled


def test_bad_allow_download(fake: FakeWrn50) -> None:
    with pytest.raises(ValueError, match="allow_download"):
        resolve_model(allow_download="no")  # type: ignore[arg-type]


def test_real_user_cache_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the real wrn50 module: $ANOMCLUST_CACHE is where the model is looked for."""
    wrn50 = pytest.importorskip("anomclust_lite.backbones.wrn50")
    assert MODEL_FILE_NAME == wrn50.WRN50_ONNX_FILENAME
    assert CHECKPOINT_FILE_NAME == wrn50.WRN50_CHECKPOINT_FILENAME
    cached = _touch(tmp_path / "user_cache" / MODEL_FILE_NAME)
    assert resolve_model(allow_download=False) == cached
    cached.unlink()
    with pytest.raises(ModelNotFoundError, match="user_cache"):
        resolve_model(allow_download=False)


def test_extractor_without_model_offline(fake: FakeWrn50, monkeypatch: pytest.MonkeyPatch) -> None:
    from anomclust_lite.features.extractor import Extractor

    with pytest.raises(ModelNotFoundError, match="--model PATH"):
        Extractor(allow_download=False)
    monkeypatch.setenv(OFFLINE_ENV, "1")
    with pytest.raises(ModelNotFoundError, match="--model PATH"):
        Extractor()
    assert fake.calls == []
