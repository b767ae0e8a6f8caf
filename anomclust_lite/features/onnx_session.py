"""The ONNX backbone: an onnxruntime session checked for a feature extractor's inputs and outputs.

:class:`BackboneSession` reads a model file once (regular file, at most
:data:`MAX_MODEL_BYTES`), checks and reads its external data
(:mod:`~anomclust_lite.features.onnx_external`), and gives onnxruntime those
bytes and arrays, never the path: what was checked and hashed is what runs,
whatever happens to the files afterwards. It checks that the model takes one
``(batch, 3, H, W)`` float32 image input of the preprocessed size and has the
chosen 4-D ``(N, C, h, w)`` output, and runs it on batches (padding the last
batch of a model with a fixed batch size). onnxruntime is imported when a
session is opened.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..files.safe_open import UnsafeFileError, read_regular
from .images import display_path
from .onnx_external import ExternalData, load_external_data

__all__ = ["CUDA_OPTIONS", "MAX_MODEL_BYTES", "POOLED_METADATA_KEY", "BackboneSession", "ModelRunError"]

#: Largest model file opened: 2 GiB, protobuf's own limit (larger weights belong
#: in external data, which must sit in the model's folder).
MAX_MODEL_BYTES = 2**31

#: ONNX metadata key; value ``"1"`` means the graph already applies the 3x3 pooling.
POOLED_METADATA_KEY = "anomclust_lite.pooled"

logger = logging.getLogger(__name__)


#: CUDA provider options: full float32 products (no TF32) and cuDNN's heuristic
#: choice of convolution algorithm rather than a timed search, so that bags stay
#: within float32 rounding of the CPU's and a rerun chooses the same kernels.
CUDA_OPTIONS = {"use_tf32": "0", "cudnn_conv_algo_search": "HEURISTIC"}


def _runs_on_cuda(session: Any) -> bool:
    return "CUDAExecutionProvider" in session.get_providers()


def _preload_cuda_libraries(ort: Any) -> bool:
    """Load CUDA and cuDNN from the ``nvidia-*`` pip packages, as onnxruntime-gpu documents; False if unavailable.

    onnxruntime-gpu installed with its ``cuda,cudnn`` extras finds those
    libraries only after ``onnxruntime.preload_dlls()``; a session whose CUDA
    provider failed to start is then created once more.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return False
    logger.info("the CUDA provider did not start; loading CUDA and cuDNN with onnxruntime.preload_dlls() and retrying")
    try:
        preload()
    except Exception as exc:  # onnxruntime raises OSError or its own types
        logger.warning("onnxruntime.preload_dlls() failed: %s", exc)
        return False
    return True


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ImportError(
            'feature extraction needs onnxruntime: pip install "anomclust_lite[onnx]"'
        ) from exc
    return ort


class ModelRunError(ValueError):
    """onnxruntime failed, or gave an output that is not the expected feature map; names the model."""


class BackboneSession:
    """An ONNX feature-extractor model, opened and checked.

    Parameters
    ----------
    model_path : pathlib.Path
        The ``.onnx`` file.
    output : str or None
        Output to use; None when the model has exactly one.
    resize, crop : int, int or None
        The preprocessing (:func:`~anomclust_lite.features.preprocess.preprocess`);
        a model with a fixed input size must match it.
    device : {"cpu", "cuda"}
        Execution provider.
    threads : int or None
        onnxruntime ``intra_op_num_threads`` (None: onnxruntime's default).
    batch_size : int
        Images per model run when the model's batch dimension is dynamic.

    Raises
    ------
    ImportError, FileNotFoundError, ValueError
        As :class:`~anomclust_lite.features.extractor.Extractor`.

    Examples
    --------
    >>> BackboneSession(Path("m.onnx"), output=None, resize=256, crop=224, device="cpu",
    ...                 threads=None, batch_size=8).grid     # doctest: +SKIP
    (28, 28)
    """

    def __init__(
        self,
        model_path: Path,
        *,
        output: Optional[str],
        resize: int,
        crop: Optional[int],
        device: str,
        threads: Optional[int],
        batch_size: int,
    ) -> None:
        self.model_path = model_path
        self.resize, self.crop = resize, crop
        self.device = device
        self._model_hash = ""
        self._external = ExternalData()
        self.ort_session = self._open(threads)
        self.input_name, self.model_batch = self._check_input()
        self.output = self._choose_output(output)
        self.step = self.model_batch or batch_size
        meta = self.ort_session.get_modelmeta().custom_metadata_map
        self.pooling_in_graph = meta.get(POOLED_METADATA_KEY) == "1"
        self._feature_shape: Optional[Tuple[int, int, int]] = None

    @property
    def _where(self) -> str:
        return f"model {display_path(self.model_path)}"

    def _open(self, threads: Optional[int]) -> Any:
        """Read and check the model, then create the onnxruntime session from its bytes."""
        ort = _import_onnxruntime()
        providers = self._providers(ort)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        data = self._read_model()
        if self._external.names:
            # onnxruntime keeps pointers into these: they stay referenced by the session object.
            self._ort_values = [ort.OrtValue.ortvalue_from_numpy(a) for a in self._external.arrays]
            options.add_external_initializers(list(self._external.names), self._ort_values)
        session = self._session(ort, data, options, providers)
        if self.device == "cuda" and not _runs_on_cuda(session) and _preload_cuda_libraries(ort):
            session = self._session(ort, data, options, providers)
        if self.device == "cuda" and not _runs_on_cuda(session):
            raise ValueError(
                "device='cuda' was requested but onnxruntime could not start the CUDA provider "
                "(check the CUDA/cuDNN installation, for example pip install \"onnxruntime-gpu[cuda,cudnn]\"); "
                "use device='cpu'"
            )
        return session

    def _session(self, ort: Any, data: bytes, options: Any, providers: List[Any]) -> Any:
        try:
            return ort.InferenceSession(data, sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            reason = " ".join(str(exc).split())[:300]
            raise ValueError(
                f"{self._where} could not be loaded as an ONNX model ({type(exc).__name__}: {reason})"
            ) from exc

    def _read_model(self) -> bytes:
        """The model's bytes (a regular, non-empty file of at most MAX_MODEL_BYTES), its external data read too.

        Sets the model hash from exactly these bytes (and the external data's).
        """
        try:
            data = read_regular(self.model_path, MAX_MODEL_BYTES)
        except UnsafeFileError as exc:
            raise ValueError(f"{self._where} cannot be used: {exc.reason}") from None
        except OSError as exc:
            raise FileNotFoundError(f"{self._where} cannot be read ({exc})") from exc
        if not data:
            raise ValueError(f"{self._where} is an empty file, not an ONNX model")
        self._external = load_external_data(data, self.model_path, self._where)
        digest = hashlib.sha256(data).hexdigest()
        if self._external.digest:
            digest = hashlib.sha256(f"{digest}+external:{self._external.digest}".encode()).hexdigest()
        self._model_hash = digest
        return data

    def _providers(self, ort: Any) -> List[Any]:
        if self.device != "cuda":
            return ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError(
                "device='cuda' needs onnxruntime's CUDAExecutionProvider, which this onnxruntime does not "
                f"have (available: {', '.join(ort.get_available_providers())}); replace it with the GPU build "
                "(pip uninstall onnxruntime, then pip install \"onnxruntime-gpu[cuda,cudnn]\") or use device='cpu'"
            )
        return [("CUDAExecutionProvider", dict(CUDA_OPTIONS)), "CPUExecutionProvider"]

    def _check_input(self) -> Tuple[str, Optional[int]]:
        """The image input's name and its fixed batch size (None when dynamic)."""
        inputs = self.ort_session.get_inputs()
        where = self._where
        if len(inputs) != 1:
            raise ValueError(f"{where} has {len(inputs)} inputs; a feature extractor needs exactly one image input")
        inp = inputs[0]
        shape = list(inp.shape) if inp.shape is not None else []
        if len(shape) != 4:
            raise ValueError(f"{where} input {inp.name!r} has shape {shape}; expected 4-D (batch, 3, H, W)")
        if isinstance(shape[1], int) and shape[1] != 3:
            raise ValueError(f"{where} input {inp.name!r} has {shape[1]} channels; expected 3 (RGB)")
        if inp.type != "tensor(float)":
            raise ValueError(f"{where} input {inp.name!r} has type {inp.type}; expected tensor(float) (float32)")
        side = self.input_size[0]
        for axis, name in ((2, "height"), (3, "width")):
            if isinstance(shape[axis], int) and shape[axis] != side:
                raise ValueError(
                    f"{where} expects input {name} {shape[axis]} but crop={self.crop}, resize={self.resize} "
                    f"give {side}; set crop (or resize with crop=None) to {shape[axis]}"
                )
        batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        return inp.name, batch

    def _choose_output(self, output: Optional[str]) -> str:
        outputs = self.ort_session.get_outputs()
        names = [o.name for o in outputs]
        listed = ", ".join(repr(n) for n in names)
        where = self._where
        if output is None:
            if len(names) != 1:
                raise ValueError(f"{where} has outputs {listed}; choose one with output=/--model-output")
            output = names[0]
        elif output not in names:
            raise ValueError(f"output {output!r} is not an output of {where}; it has {listed}")
        shape = next(o.shape for o in outputs if o.name == output)
        if shape is not None and len(shape) != 4:
            raise ValueError(
                f"output {output!r} of {where} has shape {list(shape)}; expected a 4-D feature map (N, C, h, w)"
            )
        return output

    @property
    def model_hash(self) -> str:
        """Hex SHA-256 of the model bytes that run (read once, when the session opened).

        For a model with external data, the SHA-256 of that hash and the
        external tensors' digest (:class:`~anomclust_lite.features.onnx_external.ExternalData`),
        so changed external weights change it too.
        """
        return self._model_hash

    @property
    def input_size(self) -> Tuple[int, int]:
        """(H, W) of the preprocessed images fed to the model."""
        side = self.crop if self.crop is not None else self.resize
        return side, side

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run the model on ``(n, 3, H, W)`` float32 and return the chosen output ``(n, C, h, w)``.

        Every output is checked (4-D, one map per image, the same ``(C, h, w)``
        as the model's first run); a failure inside onnxruntime or a wrong
        output raises :class:`ModelRunError` naming the model.
        """
        n = batch.shape[0]
        step = self.step
        parts = []
        for s in range(0, n, step):
            chunk = batch[s : s + step]
            if self.model_batch is not None and chunk.shape[0] != self.model_batch:
                pad = np.zeros((self.model_batch - chunk.shape[0],) + chunk.shape[1:], dtype=np.float32)
                chunk = np.concatenate([chunk, pad])
            out = self._checked(self._run_once(chunk), chunk.shape[0])
            parts.append(out[: min(step, n - s)])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _run_once(self, chunk: np.ndarray) -> np.ndarray:
        try:
            (out,) = self.ort_session.run([self.output], {self.input_name: chunk})
            return np.asarray(out)
        except MemoryError:
            raise ModelRunError(f"{self._where} ran out of memory at run time") from None
        except Exception as exc:  # onnxruntime raises its own exception types
            reason = " ".join(str(exc).split())[:300]
            raise ModelRunError(f"{self._where} failed at run time ({type(exc).__name__}: {reason})") from exc

    def _checked(self, out: np.ndarray, n: int) -> np.ndarray:
        """``out`` if it is a 4-D map per image of the expected (C, h, w); else ModelRunError."""
        what = f"output {self.output!r} of {self._where}"
        if out.ndim != 4 or out.shape[0] != n or min(out.shape[1:], default=0) < 1:
            raise ModelRunError(f"{what} has shape {out.shape}; expected a 4-D feature map ({n}, C, h, w)")
        if self._feature_shape is not None and tuple(out.shape[1:]) != self._feature_shape:
            raise ModelRunError(
                f"{what} has shape {out.shape[1:]} per image here but {self._feature_shape} on the first run; "
                "a feature extractor must give every image the same (C, h, w)"
            )
        if out.dtype.kind != "f":
            raise ModelRunError(f"{what} has dtype {out.dtype}; expected floating-point features")
        return out

    def feature_map_shape(self) -> Tuple[int, int, int]:
        """(C, h, w) of one image's output, from a run on zeros (a declared shape is not trusted)."""
        if self._feature_shape is None:
            h, w = self.input_size
            out = self.run(np.zeros((1, 3, h, w), dtype=np.float32))
            actual = tuple(int(v) for v in out.shape[1:])
            declared = next(o.shape for o in self.ort_session.get_outputs() if o.name == self.output)
            for got, said in zip(actual, list(declared or [])[1:]):
                if isinstance(said, int) and said > 0 and said != got:
                    raise ModelRunError(
                        f"output {self.output!r} of {self._where} declares shape {list(declared)} but gives "
                        f"(1, {', '.join(map(str, actual))}); refused"
                    )
            self._feature_shape = actual  # type: ignore[assignment]
        return self._feature_shape  # type: ignore[return-value]

    @property
    def providers(self) -> List[str]:
        """onnxruntime execution providers in use."""
        return list(self.ort_session.get_providers())

    def thread_settings(self) -> Dict[str, object]:
        """onnxruntime's thread settings (``"default"`` = onnxruntime's choice)."""
        options = self.ort_session.get_session_options()
        intra = options.intra_op_num_threads
        inter = options.inter_op_num_threads
        return {
            "intra_op_num_threads": intra if intra > 0 else "default",
            "inter_op_num_threads": inter if inter > 0 else "default",
            "execution_mode": str(options.execution_mode).rsplit(".", 1)[-1],
        }
