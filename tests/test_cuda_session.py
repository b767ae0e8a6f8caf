"""device="cuda" without a GPU: the provider list, the preload-and-retry step and the refusals.

A stand-in for onnxruntime wraps the real one: sessions run on the CPU but
report the CUDA provider as started or not, as a machine with or without
working CUDA libraries would. The CUDA path itself was checked on an H200
(BENCHMARKS.md, "The CUDA path").
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_onnx import make_model  # noqa: E402

import anomclust_lite.features.onnx_session as onnx_session  # noqa: E402
from anomclust_lite.features.extractor import Extractor  # noqa: E402

ort = pytest.importorskip("onnxruntime")
SMALL = dict(resize=32, crop=32)


class _Session:
    def __init__(self, real: Any, cuda: bool) -> None:
        self._real, self._cuda = real, cuda

    def get_providers(self) -> List[str]:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"] if self._cuda else ["CPUExecutionProvider"]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class FakeOrt:
    """onnxruntime whose CUDA provider starts only after ``preload_dlls`` (or never, or at once)."""

    SessionOptions = ort.SessionOptions
    OrtValue = ort.OrtValue

    def __init__(self, *, cuda_at_first: bool = False, preload_starts_cuda: bool = True) -> None:
        self.cuda = cuda_at_first
        self.preload_starts_cuda = preload_starts_cuda
        self.providers_asked: List[Any] = []
        self.preloads = 0

    def get_available_providers(self) -> List[str]:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    def InferenceSession(self, data: bytes, *, sess_options: Any, providers: List[Any]) -> _Session:  # noqa: N802
        self.providers_asked.append(providers)
        real = ort.InferenceSession(data, sess_options=sess_options, providers=["CPUExecutionProvider"])
        return _Session(real, self.cuda)

    def preload_dlls(self) -> None:
        self.preloads += 1
        self.cuda = self.cuda or self.preload_starts_cuda


class OldOrt(FakeOrt):
    """An onnxruntime from before ``preload_dlls`` (1.20 and older)."""

    def __getattribute__(self, name: str) -> Any:
        if name == "preload_dlls":
            raise AttributeError(name)
        return super().__getattribute__(name)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return make_model(tmp_path / "dyn.onnx")


def _use(monkeypatch: pytest.MonkeyPatch, fake: FakeOrt) -> FakeOrt:
    monkeypatch.setattr(onnx_session, "_import_onnxruntime", lambda: fake)
    return fake


def test_cuda_asks_for_full_float32_and_heuristic_algorithms(monkeypatch, model: Path) -> None:
    fake = _use(monkeypatch, FakeOrt(cuda_at_first=True))
    ext = Extractor(model, device="cuda", **SMALL)
    assert fake.providers_asked == [[("CUDAExecutionProvider", {"use_tf32": "0", "cudnn_conv_algo_search": "HEURISTIC"}),
                                     "CPUExecutionProvider"]]
    assert fake.preloads == 0
    assert ext.providers[0] == "CUDAExecutionProvider"
    assert ext.describe()["device"] == "cuda"


def test_cpu_never_asks_for_cuda(monkeypatch, model: Path) -> None:
    fake = _use(monkeypatch, FakeOrt(cuda_at_first=True))
    Extractor(model, device="cpu", **SMALL)
    assert fake.providers_asked == [["CPUExecutionProvider"]] and fake.preloads == 0


def test_cuda_libraries_preloaded_then_session_retried(monkeypatch, model: Path, caplog) -> None:
    fake = _use(monkeypatch, FakeOrt(cuda_at_first=False))
    with caplog.at_level("INFO", logger="anomclust_lite.features.onnx_session"):
        ext = Extractor(model, device="cuda", **SMALL)
    assert fake.preloads == 1 and len(fake.providers_asked) == 2
    assert ext.providers[0] == "CUDAExecutionProvider"
    assert "preload_dlls" in caplog.text
    bags = ext.embed(np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32))  # it still runs
    assert bags.shape[0] == 2


@pytest.mark.parametrize("fake", [FakeOrt(preload_starts_cuda=False), OldOrt()], ids=["preload-fails", "no-preload"])
def test_cuda_that_never_starts_is_refused_not_run_on_cpu(monkeypatch, model: Path, fake: FakeOrt) -> None:
    _use(monkeypatch, fake)
    with pytest.raises(ValueError, match=r"device='cuda' was requested but onnxruntime could not start the CUDA "
                                         r"provider .*onnxruntime-gpu.*use device='cpu'"):
        Extractor(model, device="cuda", **SMALL)
    assert len(fake.providers_asked) == (1 if isinstance(fake, OldOrt) else 2)


def test_preload_that_raises_is_logged_and_refused(monkeypatch, model: Path, caplog) -> None:
    fake = FakeOrt()

    def broken() -> None:
        raise OSError("libcudnn.so.9: cannot open shared object file")

    fake.preload_dlls = broken  # type: ignore[method-assign]
    _use(monkeypatch, fake)
    with pytest.raises(ValueError, match="could not start the CUDA provider"):
        Extractor(model, device="cuda", **SMALL)
    assert "libcudnn.so.9" in caplog.text


def test_cuda_bags_never_share_cache_entries_with_cpu_bags(monkeypatch, model: Path, tmp_path: Path) -> None:
    from PIL import Image

    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(image)
    cache = tmp_path / "cache"
    cpu = Extractor(model, cache_dir=cache, **SMALL)
    assert "device" not in cpu.settings  # CPU keys as before: existing caches keep hitting
    assert cpu.extract_all([image]).computed == 1
    assert Extractor(model, cache_dir=cache, **SMALL).extract_all([image]).cache_hits == 1
    _use(monkeypatch, FakeOrt(cuda_at_first=True))
    cuda = Extractor(model, device="cuda", cache_dir=cache, **SMALL)
    assert cuda.settings["device"] == "cuda"
    first, again = cuda.extract_all([image]), cuda.extract_all([image])
    assert (first.computed, first.cache_hits, again.cache_hits) == (1, 0, 1)


def test_on_cuda_the_maps_of_a_batch_are_normalised_in_parallel_with_the_same_bits(monkeypatch, model: Path,
                                                                                    tmp_path: Path) -> None:
    import threading

    from PIL import Image

    import anomclust_lite.features.postprocess as postprocess

    rng = np.random.default_rng(1)
    images = []
    for i in range(7):
        images.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 255, (40, 44, 3), dtype=np.uint8)).save(images[-1])
    seen = set()
    original = postprocess.bag_of_feature_map

    def spy(*args, **kwargs):
        seen.add(threading.current_thread().name.split("_")[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(postprocess, "bag_of_feature_map", spy)
    on_cpu = Extractor(model, batch_size=4, decode_workers=3, **SMALL).extract(images)
    assert seen == {"MainThread"}  # the CPU's cores are the model's
    _use(monkeypatch, FakeOrt(cuda_at_first=True))
    seen.clear()
    on_gpu = Extractor(model, device="cuda", batch_size=4, decode_workers=3, **SMALL).extract(images)
    assert "anomclust-post" in seen
    seen.clear()
    one_thread = Extractor(model, device="cuda", batch_size=4, decode_workers=1, **SMALL).extract(images)
    assert seen == {"MainThread"}
    np.testing.assert_array_equal(on_gpu, on_cpu)
    np.testing.assert_array_equal(on_gpu, one_thread)


def test_assign_on_another_device_than_the_fit_warns(monkeypatch, tmp_path: Path, capsys) -> None:
    from PIL import Image

    from anomclust_lite.cli.main import main

    rng = np.random.default_rng(2)
    folder = tmp_path / "imgs"
    for kind in ("a", "b"):
        (folder / kind).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / kind / f"{i}.png")
    model = make_model(tmp_path / "m.onnx")
    common = ["--model", str(model), "--resize", "32", "--crop", "32", "--no-cache", "-q"]
    assert main([str(folder), "--k", "2", "--out", str(tmp_path / "o"), *common]) == 0
    assert main(["assign", str(tmp_path / "o" / "model.npz"), str(folder), "--out", str(tmp_path / "a1"),
                 "--no-cache"]) == 0
    assert "fitted with the backbone on" not in capsys.readouterr().err  # the same device: silent
    _use(monkeypatch, FakeOrt(cuda_at_first=True))
    assert main(["assign", str(tmp_path / "o" / "model.npz"), str(folder), "--out", str(tmp_path / "a2"),
                 "--device", "cuda", "--no-cache"]) == 0
    err = capsys.readouterr().err
    assert "the clusters were fitted with the backbone on cpu and it runs on cuda here" in err
    assert "--device cpu gives the fit's results exactly" in err
