"""Which model runs: resolution order, the backbone store, provenance records, issue 19 (never touches the network)."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from anomclust_lite.backbones import store
from anomclust_lite.backbones.store import (
    BackboneNotReadyError,
    check_backbone_name,
    get_backbone,
    list_backbones,
    store_model,
)
from anomclust_lite.features.models import MODEL_ENV, ModelNotFoundError, resolve_backbone, resolve_model


@pytest.fixture(autouse=True)
def no_network_and_clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.delenv(MODEL_ENV, raising=False)
    monkeypatch.setenv("ANOMCLUST_CACHE", str(tmp_path / "user_cache"))
    return tmp_path / "user_cache"


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _store(name: str, verified: bool, data: bytes = b"model bytes", **kwargs: Any) -> Path:
    return store_model(name, data, architecture="wide_resnet50_2.layer2", source="/x/w.pth",
                       source_sha256="ab" * 32, verified=verified, **kwargs)


def test_default_is_the_embedded_backbone(tmp_path: Path) -> None:
    backbone = resolve_backbone()
    assert backbone.name == "resnet50v2" and backbone.ready and backbone.verified is True
    assert backbone.path is not None and backbone.path.parent == tmp_path / "user_cache"
    assert "resnet50-v2-7" in backbone.origin
    assert resolve_model() == backbone.path


def test_order_explicit_then_backbone_then_env_then_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = _touch(tmp_path / "explicit.onnx")
    env = _touch(tmp_path / "env.onnx")
    mine = _store("mine", verified=False)
    monkeypatch.setenv(MODEL_ENV, str(env))
    assert resolve_model(explicit) == explicit and resolve_model(str(explicit)) == explicit
    assert resolve_model(backbone="mine") == mine  # a name asked for wins over the environment
    assert resolve_backbone().origin == f"${MODEL_ENV}" and resolve_model() == env
    monkeypatch.delenv(MODEL_ENV)
    assert resolve_backbone().name == "resnet50v2"
    with pytest.raises(ValueError, match="not both"):
        resolve_backbone(explicit, backbone="mine")


def test_missing_explicit_or_env_path_is_an_error_not_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelNotFoundError, match="nope.onnx.*does not exist"):
        resolve_model(tmp_path / "nope.onnx")
    monkeypatch.setenv(MODEL_ENV, str(tmp_path / "gone.onnx"))
    with pytest.raises(ModelNotFoundError, match=r"\$ANOMCLUST_MODEL.*gone.onnx"):
        resolve_model()
    with pytest.raises(ModelNotFoundError, match="not a file"):
        resolve_model(tmp_path)


def test_not_built_and_unknown_names_say_which_command(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="`anomclust-lite backbones build wrn50`"):
        resolve_model(backbone="wrn50")
    _store("mine", verified=False)
    with pytest.raises(ModelNotFoundError, match=r"no backbone named 'other' \(known: resnet50v2, wrn50, mine\)"):
        resolve_model(backbone="other")
    with pytest.raises(ValueError, match="backbone name"):
        resolve_model(backbone="../etc")


def test_store_writes_a_provenance_record(no_network_and_clean_env: Path) -> None:
    path = _store("mine", verified=False)
    record = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert record["name"] == "mine" and record["verified"] is False and record["source_sha256"] == "ab" * 32
    assert record["source"] == "/x/w.pth" and record["created"].endswith("+00:00")
    assert record["model_sha256"] == hashlib.sha256(b"model bytes").hexdigest()
    backbone = get_backbone("mine")
    assert backbone.ready and backbone.verified is False and "NOT verified" in backbone.origin
    assert sorted(p.name for p in path.parent.iterdir()) == ["mine.json", "mine.onnx"]  # no temporary files


def test_only_a_verified_source_may_become_wrn50() -> None:
    """Issue 19: an unverified model never becomes the default wrn50."""
    with pytest.raises(ValueError, match="only torchvision's checksum-verified checkpoint"):
        _store("wrn50", verified=False)
    with pytest.raises(ValueError, match="embedded"):
        _store("resnet50v2", verified=True)
    assert not [b for b in list_backbones() if b.name == "wrn50" and b.ready]
    _store("wrn50", verified=True)
    assert get_backbone("wrn50").ready


@pytest.mark.parametrize("damage", ["model_changed", "record_missing", "record_garbage", "record_says_unverified",
                                    "model_missing", "record_other_name"])
def test_a_cached_model_not_matching_its_record_is_not_used(damage: str, caplog: pytest.LogCaptureFixture) -> None:
    path = _store("wrn50", verified=True)
    record_file = path.with_suffix(".json")
    record = json.loads(record_file.read_text(encoding="utf-8"))
    if damage == "model_changed":
        path.write_bytes(b"other weights")
    elif damage == "record_missing":
        record_file.unlink()
    elif damage == "record_garbage":
        record_file.write_text("{not json", encoding="utf-8")
    elif damage == "record_says_unverified":
        record_file.write_text(json.dumps(dict(record, verified=False)), encoding="utf-8")
    elif damage == "model_missing":
        path.unlink()
    else:
        record_file.write_text(json.dumps(dict(record, name="mine")), encoding="utf-8")
    with caplog.at_level(logging.WARNING), pytest.raises(BackboneNotReadyError, match="is not used.*rebuild"):
        get_backbone("wrn50")
    assert "is not used" in caplog.text
    listed = {b.name: b for b in list_backbones()}["wrn50"]
    assert listed.state.startswith("not usable: ") and listed.path is None


def test_legacy_cached_model_is_never_picked_up(no_network_and_clean_env: Path) -> None:
    """Issue 19: older versions copied any export to <cache>/wrn50_layer2.onnx; that file is not used."""
    _touch(no_network_and_clean_env / "wrn50_layer2.onnx")
    assert resolve_backbone().name == "resnet50v2"
    with pytest.raises(ModelNotFoundError, match="not built"):
        resolve_backbone(backbone="wrn50")


def test_list_backbones_states() -> None:
    _store("mine", verified=False)
    _touch(store._store(None) / "broken.onnx")
    listed = {b.name: b for b in list_backbones()}
    assert list(listed) == ["resnet50v2", "wrn50", "broken", "mine"]
    assert listed["resnet50v2"].ready and listed["wrn50"].state == "not built"
    assert listed["mine"].ready and listed["broken"].state.startswith("not usable")


@pytest.mark.parametrize("bad", ["", "A", "-x", "a/b", "a" * 65, 3, "a b"])
def test_bad_names(bad: object) -> None:
    with pytest.raises(ValueError, match="backbone name"):
        check_backbone_name(bad)


def test_extractor_reports_the_backbone(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    from anomclust_lite.features.extractor import Extractor

    ext = Extractor()
    assert ext.backbone_info.name == "resnet50v2" and ext.describe()["backbone"]["name"] == "resnet50v2"
    assert ext.dim == 512 and ext.pooling_in_graph
    with pytest.raises(ModelNotFoundError, match="backbones build wrn50"):
        Extractor(backbone="wrn50")
