"""Builds the BiomedCLIP model package folder (see ``operators/inference/model_package.py`` for its layout).

Weights come from the Hugging Face hub or its local cache
(``hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``), from a local open_clip snapshot
folder with its BiomedBERT text model beside it (docs/models.md), or — fully offline — from a seeded
random initialisation of the exact BiomedCLIP architecture (timm ViT-B/16 image tower with CLS pooling
and a linear 768→512 projection; BiomedBERT-base text tower with MLP projection, context 256). A random
package says so in its manifest, in every SR's algorithm parameters and in a warning at start-up.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import string
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from operators.imaging.preprocessing import IMAGE_SIZE
from operators.inference.backends.fp8 import FP8_MAX
from operators.inference.model_package import FORMAT_VERSION, MANIFEST, Manifest, Weights, sha256_file
from operators.inference.triton_repository import TensorShapes, write_repository
from operators.inference.zero_shot import LabelSet, ensemble_prompt_embeddings

HERE = Path(__file__).resolve().parent
BIOMEDCLIP_CONFIG = HERE / "biomedclip_open_clip_config.json"
DEFAULT_LABELS = HERE / "labels.json"
HUB_REPO = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
HUB_ID = f"hf-hub:{HUB_REPO}"
#: The text model BiomedCLIP's open_clip_config.json names (text tower configuration and tokenizer).
TEXT_REPO = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
PACKAGE_VERSION = "1.0.0"
ONNX_OPSET = 17
BERT_VOCAB_SIZE = 30522


def write_text_model(folder: Path) -> None:
    """A BiomedBERT-base text model's files as its repository names them (config.json, vocab.txt,
    tokenizer_config.json, special_tokens_map.json), with a generated WordPiece vocab: enough to build
    the text tower offline. Only ``[PAD] = 0`` matters for the attention mask; the other ids merely need to exist.
    """
    from transformers import BertConfig

    BertConfig(vocab_size=BERT_VOCAB_SIZE).save_pretrained(folder)
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens += pieces + ["##" + p for p in pieces]
    tokens += [f"[unused{i}]" for i in range(99, 99 + BERT_VOCAB_SIZE - len(tokens))]
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512})
    )
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}
    ))


#: The files of a BERT text model (tokenizer included) that the text tower and its tokenizer read.
TEXT_MODEL_FILES = ("config.json", "vocab.txt")


def find_text_model(folder: Path, text_model: Path | None, hub_name: str) -> Path:
    """The local folder of the text model that ``open_clip_config.json`` names by its hub id (``hub_name``):
    ``text_model`` if given, else ``folder`` itself or its sub-folder named after the repository, whichever
    holds ``TEXT_MODEL_FILES``. Raises ``FileNotFoundError`` with one line saying what is missing."""
    candidates = [text_model.resolve()] if text_model is not None else [folder, folder / hub_name.rsplit("/", 1)[-1]]
    for candidate in candidates:
        if all((candidate / name).is_file() for name in TEXT_MODEL_FILES):
            return candidate
    where = " or ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"text model {hub_name} not found in {where} (needs {', '.join(TEXT_MODEL_FILES)} + tokenizer files): "
        "pass --text-model DIR, or use the Hugging Face cache (docs/models.md)"
    )


class UnusableWeights(ValueError):
    """The weights were found but cannot be loaded (a damaged download, another model's checkpoint)."""


def load_biomedclip(weights: str | None, seed: int | None, workdir: Path, text_model: Path | None = None) -> tuple[Any, Any, Weights]:
    """Return ``(open_clip model, tokenizer, Weights)``; ``weights=None`` means seeded random init.

    ``weights`` is ``hf-hub:<repo>`` (the Hugging Face cache, or the hub) or a local snapshot folder
    (open_clip_config.json + open_clip_pytorch_model.bin) whose text model (``text_model``, else found by
    ``find_text_model``) is read from disk: the hub is never asked."""
    import open_clip
    import torch

    if weights is None:
        if seed is None:
            raise ValueError("random initialisation needs a seed")
        folder = workdir / "biomedclip-random"
        folder.mkdir(parents=True)
        write_text_model(folder)
        config = json.loads(BIOMEDCLIP_CONFIG.read_text())
        config["model_cfg"]["text_cfg"]["hf_model_name"] = str(folder)
        config["model_cfg"]["text_cfg"]["hf_tokenizer_name"] = str(folder)
        (folder / "open_clip_config.json").write_text(json.dumps(config))
        torch.manual_seed(seed)
        model = open_clip.create_model(f"local-dir:{folder}", pretrained_text=False)
        tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
        info = Weights("random-init", True, seed, None)
    elif weights.startswith("hf-hub:"):
        from open_clip.pretrained import download_pretrained_from_hf

        try:
            model = open_clip.create_model(weights)
        except (OSError, RuntimeError) as exc:  # offline and not in the cache, or no route to the hub
            raise FileNotFoundError(
                f"{weights}: not loadable from the Hugging Face cache or the hub ({type(exc).__name__}); offline, the cache "
                "(HF_HUB_CACHE or HF_HOME/hub) must hold it and its text model (docs/models.md)"
            ) from exc
        tokenizer = open_clip.get_tokenizer(weights)
        checkpoint = Path(download_pretrained_from_hf(weights.removeprefix("hf-hub:")))
        info = Weights(weights, False, None, sha256_file(checkpoint))
    else:
        folder = Path(weights).resolve()
        if not (folder / "open_clip_config.json").is_file():
            raise FileNotFoundError(f"{folder}: no open_clip_config.json (copy the whole {HUB_REPO} snapshot; docs/models.md)")
        checkpoints = sorted(folder.glob("open_clip_pytorch_model.*")) + sorted(folder.glob("open_clip_model.*"))
        if not checkpoints:
            raise FileNotFoundError(f"{folder}: no open_clip checkpoint (open_clip_pytorch_model.bin/.safetensors)")
        config = json.loads((folder / "open_clip_config.json").read_text())
        text = find_text_model(folder, text_model, config["model_cfg"]["text_cfg"]["hf_model_name"])
        # One folder, as the random route makes it: open_clip reads a local-dir model's tokenizer from that folder
        # whatever its config names, and the text tower's config from the path the config names.
        local = workdir / "biomedclip-local"
        local.mkdir(parents=True)
        own = ("open_clip_config.json", checkpoints[0].name)
        for path in [checkpoints[0], *(p for p in text.iterdir() if p.is_file() and p.name not in own)]:
            (local / path.name).symlink_to(path.resolve())
        config["model_cfg"]["text_cfg"]["hf_model_name"] = config["model_cfg"]["text_cfg"]["hf_tokenizer_name"] = str(local)
        (local / "open_clip_config.json").write_text(json.dumps(config))
        try:
            model = open_clip.create_model(f"local-dir:{local}", pretrained_text=False)  # every weight is in the checkpoint
        except Exception as exc:  # torch.load / load_state_dict raise many kinds for a damaged or foreign file
            raise UnusableWeights(f"{checkpoints[0]}: not a BiomedCLIP checkpoint open_clip can load ({type(exc).__name__}; "
                                  "compare its sha256 with the one recorded when it was downloaded, docs/models.md)") from exc
        tokenizer = open_clip.get_tokenizer(f"local-dir:{local}")
        info = Weights(str(folder), False, None, sha256_file(checkpoints[0]))
    model.eval()
    return model, tokenizer, info


def image_tower(model: Any) -> Any:
    """The image encoder as exported: pixel_values -> image_features (not normalised)."""
    import torch

    class ImageEncoder(torch.nn.Module):
        def __init__(self, visual: torch.nn.Module) -> None:
            super().__init__()
            self.visual = visual

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.visual(pixel_values)

    return ImageEncoder(model.visual).eval()


def export_onnx(model: Any, path: Path) -> None:
    import torch

    example = torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    # The TorchScript exporter: the dynamo exporter also works but is 2x slower here.
    torch.onnx.export(
        image_tower(model),
        (example,),
        str(path),
        input_names=["pixel_values"],
        output_names=["image_features"],
        dynamic_axes={"pixel_values": {0: "batch"}, "image_features": {0: "batch"}},
        opset_version=ONNX_OPSET,
        dynamo=False,
    )


#: ONNX variants ``--variants`` can add to a package (see operators/inference/model_package.py).
VARIANTS = ("fp16", "fp16-ort", "int8-dynamic", "int8-qdq", "fp8-qdq")
#: Real DICOM images that ship with pydicom: the default calibration set for int8-qdq and fp8-qdq.
DEFAULT_CALIBRATION = Path(pydicom.__file__).parent / "data" / "test_files"


def to_fp16(model: Any) -> Any:
    """fp16 weights and activations (inputs/outputs too), for TensorRT strongly typed networks; FP8
    initializers of a Q/DQ graph stay FP8."""
    from onnx import TensorProto
    from onnxconverter_common import float16

    model = float16.convert_float_to_float16(model, keep_io_types=False)
    for node in model.graph.node:  # the converter leaves Cast(to=float) inside attention: make them fp16
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT:
                attribute.i = TensorProto.FLOAT16
    return model


def onnx_fp16(src: Path, dst: Path) -> None:
    import onnx

    onnx.save(to_fp16(onnx.load(str(src))), str(dst))


def export_onnx_fused_for_onnxruntime(model: Any, path: Path, fp16: bool) -> dict[str, int]:
    """The image encoder as ONNX Runtime's own fused graph, for its CUDA provider: the dynamo exporter
    (opset 18), then onnxscript's ONNX Runtime fusions into the ``com.microsoft`` contrib ops
    MultiHeadAttention, SkipLayerNormalization and BiasGelu (the TorchScript export's packed-QKV attention
    matches none of ONNX Runtime's own fusion patterns). Only ONNX Runtime runs these ops: TensorRT
    takes the plain artefacts. fp16 keeps float32 input and output. Returns the fusion counts."""
    import onnx
    import onnx_ir
    import torch
    from onnxruntime.transformers.onnx_model import OnnxModel
    from onnxscript.rewriter import ort_fusions

    program = torch.onnx.export(image_tower(model), (torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE),), dynamo=True, opset_version=18,
                                input_names=["pixel_values"], output_names=["image_features"],
                                dynamic_shapes=({0: torch.export.Dim("batch")},))
    fused, counts = ort_fusions.optimize_for_ort(program.model)
    proto = onnx_ir.to_proto(fused)
    if fp16:
        converted = OnnxModel(proto)
        converted.convert_float_to_float16(keep_io_types=True)
        proto = converted.model
    onnx.save(proto, str(path))
    return {name: count for name, count in counts.items() if count}


def onnx_int8_dynamic(src: Path, dst: Path) -> None:
    """Dynamic INT8 (weights per channel offline, activations per batch at run time): ONNX Runtime CPU."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)


def model_inputs_from_dicom(folder: Path, limit: int) -> np.ndarray:
    """Up to ``limit`` model inputs from the DICOM images under ``folder``, through the app's own
    preprocessing (at most 2 images per file): calibration and validation sets."""
    from pydicom import dcmread

    from operators.imaging.preprocessing import preprocess_series
    from operators.imaging.sampling import SamplingPolicy
    from operators.intake.inventory import scan_input

    batches: list[np.ndarray] = []
    for item in scan_input(folder):
        if item.skip_reason is None and sum(len(b) for b in batches) < limit:
            try:
                ds = dcmread(item.path)
                batches.append(preprocess_series("", "", [ds], SamplingPolicy(2).plan([ds])).pixel_values)
            except (ValueError, AttributeError, KeyError):  # malformed test files: calibration needs good ones
                continue
    images = np.concatenate([b for b in batches if len(b)])[:limit]
    if len(images) == 0:
        raise ValueError(f"{folder}: no usable DICOM image")
    return images


def calibration_reader(calibration: np.ndarray) -> Any:
    """ONNX Runtime's calibration input: the images in batches of 8."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"pixel_values": calibration[i : i + 8]} for i in range(0, len(calibration), 8)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    return Reader()


def onnx_int8_qdq(src: Path, dst: Path, calibration: np.ndarray) -> None:
    """Explicit symmetric INT8 Q/DQ on MatMul/Gemm/Conv only (quantising every op costs accuracy:
    cosine 0.966 vs 0.998, facts.md), per-channel weights; the form TensorRT consumes (zero point 0)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(
        str(src), str(dst), calibration_reader(calibration), quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QDQ_OPS),
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    restrict_qdq_to(dst, QDQ_OPS)


QDQ_OPS = ("MatMul", "Gemm", "Conv")


def activation_amax(src: Path, calibration: np.ndarray, tensors: Sequence[str]) -> dict[str, float]:
    """max |x| of each named tensor over the calibration images (ONNX Runtime's MinMax calibrator)."""
    import tempfile

    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    with tempfile.TemporaryDirectory() as scratch:
        calibrator = create_calibrator(src, list(QDQ_OPS), augmented_model_path=str(Path(scratch) / "augmented.onnx"),
                                       calibrate_method=CalibrationMethod.MinMax, extra_options={"symmetric": True})
        calibrator.collect_data(calibration_reader(calibration))
        ranges = calibrator.compute_data().data
    return {name: float(np.abs(np.asarray(ranges[name].range_value, dtype=np.float64)).max()) for name in tensors}


def onnx_fp8_qdq(src: Path, dst: Path, calibration: np.ndarray) -> None:
    """Explicit FP8 (E4M3) Q/DQ for TensorRT's FP8 engines, in the placement and scaling NVIDIA
    ModelOpt uses: only the weight-bearing GEMMs (linear layers, patch convolution; attention's two
    matmuls stay in higher precision, as in the PyTorch FP8 path), activations per tensor at
    amax / 448 over the calibration images, weights per output channel at amax / 448 (saturating);
    everything else fp16 (a strongly typed network runs in the graph's types).
    ONNX Runtime's own FP8 quantiser allows only its Distribution calibration, which clips these
    activations hard (cosine 0.85 vs fp32 on real images, measured), hence this builder."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper, version_converter

    model = version_converter.convert_version(onnx.load(str(src)), 19)  # FP8 Q/DQ needs opset 19
    weights = {t.name: t for t in model.graph.initializer}
    gemms = [n for n in model.graph.node if n.op_type in QDQ_OPS and len(n.input) > 1 and n.input[1] in weights]
    gemm_ids = {id(n) for n in gemms}
    amax = activation_amax(src, calibration, sorted({n.input[0] for n in gemms}))

    def fp8(name: str, values: np.ndarray) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.FLOAT8E4M3FN, values.shape, values.flatten().tolist())

    nodes, quantised = [], {}
    for node in model.graph.node:
        if id(node) in gemm_ids:
            x = node.input[0]
            if x not in quantised:  # one Q/DQ pair per activation, however many GEMMs read it
                scale = numpy_helper.from_array(np.array(max(amax[x], 1e-12) / FP8_MAX, np.float32), f"{x}_fp8_scale")
                model.graph.initializer.extend([scale, fp8(f"{x}_fp8_zero", np.zeros((), np.float32))])
                nodes += [helper.make_node("QuantizeLinear", [x, scale.name, f"{x}_fp8_zero"], [f"{x}_fp8"]),
                          helper.make_node("DequantizeLinear", [f"{x}_fp8", scale.name, f"{x}_fp8_zero"], [f"{x}_fp8_dq"])]
                quantised[x] = f"{x}_fp8_dq"
            node.input[0] = quantised[x]
            w_name = node.input[1]
            if w_name in weights:  # not yet dequantised for another GEMM
                tensor = weights.pop(w_name)
                w = numpy_helper.to_array(tensor).astype(np.float32)
                transposed = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
                axis = 1 if node.op_type == "MatMul" or (node.op_type == "Gemm" and not transposed) else 0
                reduce_axes = tuple(i for i in range(w.ndim) if i != axis)
                channel_scale = np.maximum(np.abs(w).max(axis=reduce_axes), 1e-12) / FP8_MAX
                shape = [-1 if i == axis else 1 for i in range(w.ndim)]
                model.graph.initializer.remove(tensor)
                model.graph.initializer.extend([
                    fp8(f"{w_name}_fp8", np.clip(w / channel_scale.reshape(shape), -FP8_MAX, FP8_MAX)),
                    numpy_helper.from_array(channel_scale.astype(np.float32), f"{w_name}_fp8_scale"),
                ])
                nodes.append(helper.make_node("DequantizeLinear", [f"{w_name}_fp8", f"{w_name}_fp8_scale"], [w_name], axis=axis))
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(to_fp16(model), str(dst))


#: The variants built from calibration images, and their builders.
CALIBRATED_VARIANTS = {"int8-qdq": onnx_int8_qdq, "fp8-qdq": onnx_fp8_qdq}


def restrict_qdq_to(path: Path, ops: Sequence[str]) -> None:
    """Feed every non-GEMM consumer of a Q/DQ'd activation the original float tensor again.

    ONNX Runtime's quantizer replaces a quantised activation for all its consumers, so residual Adds,
    Softmax and Shape ops would see INT8 rounding. TensorRT's recommended placement (as NVIDIA
    ModelOpt makes it) quantises only the GEMM/convolution inputs; the rest stays in high precision.
    """
    import onnx

    model = onnx.load(str(path))
    nodes = list(model.graph.node)
    producer = {out: node for node in nodes for out in node.output}
    float_of = {}
    for node in nodes:
        if node.op_type == "DequantizeLinear" and node.input[0] in producer and producer[node.input[0]].op_type == "QuantizeLinear":
            float_of[node.output[0]] = producer[node.input[0]].input[0]
    for node in nodes:
        if node.op_type not in ops:
            for i, name in enumerate(node.input):
                if name in float_of:
                    node.input[i] = float_of[name]
    used = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    while True:  # drop Q/DQ pairs left without a consumer
        dead = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.output[0] not in used]
        if not dead:
            break
        for node in dead:
            model.graph.node.remove(node)
        used = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    for initializer in [t for t in model.graph.initializer if t.name not in used]:
        model.graph.initializer.remove(initializer)  # scales/zero points of the dropped pairs
    onnx.save(model, str(path))


def add_variants(staging: Path, variants: Sequence[str], calibration: Path, calibration_count: int, model: Any) -> dict[str, str]:
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variant(s) {sorted(unknown)}; choose from {list(VARIANTS)}")
    src, files = staging / "image_encoder.onnx", {}
    images = model_inputs_from_dicom(calibration, calibration_count) if set(variants) & set(CALIBRATED_VARIANTS) else None
    for variant in variants:
        dst = staging / f"image_encoder.{variant}.onnx"
        if variant == "fp16":
            onnx_fp16(src, dst)
        elif variant == "fp16-ort":  # exported afresh: ONNX Runtime's fusions need the dynamo export
            export_onnx_fused_for_onnxruntime(model, dst, fp16=True)
        elif variant == "int8-dynamic":
            onnx_int8_dynamic(src, dst)
        else:
            assert images is not None  # a calibrated variant: the images were read above
            CALIBRATED_VARIANTS[variant](src, dst, images)
        files[variant] = dst.name
    return files


def label_embeddings(model: Any, tokenizer: Any, labels: LabelSet) -> np.ndarray:
    import torch

    per_label = []
    with torch.no_grad():
        for label in labels.labels:
            per_label.append(model.encode_text(tokenizer(list(label.prompts))).float().numpy())
    return ensemble_prompt_embeddings(per_label)


def build_package(
    weights: str | None,
    seed: int | None,
    labels_path: Path,
    out: Path,
    variants: Sequence[str] = (),
    calibration: Path = DEFAULT_CALIBRATION,
    calibration_count: int = 64,
    text_model: Path | None = None,
) -> Manifest:
    """Build the package into ``out`` atomically (a half-built package is never visible there)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    labels = LabelSet.from_json(labels_path)
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with tempfile.TemporaryDirectory() as work:
            model, tokenizer, info = load_biomedclip(weights, seed, Path(work), text_model)
            export_onnx(model, staging / "image_encoder.onnx")
            save_file(
                {k: v.contiguous() for k, v in model.visual.state_dict().items()},
                str(staging / "image_encoder.safetensors"),
            )
            embeddings = label_embeddings(model, tokenizer, labels)
            logit_scale = float(model.logit_scale.exp().item())
        variant_files = add_variants(staging, variants, calibration, calibration_count, model)
        np.save(staging / "label_embeddings.npy", embeddings)
        shutil.copyfile(labels_path, staging / "labels.json")
        config = json.loads(BIOMEDCLIP_CONFIG.read_text())
        (staging / "open_clip_config.json").write_text(json.dumps(config, indent=2))
        encoder_sha256 = sha256_file(staging / "image_encoder.onnx")
        write_repository(staging, "image_encoder.onnx", TensorShapes("pixel_values", "image_features", int(embeddings.shape[1]),
                                                                     IMAGE_SIZE), encoder_sha256, variant_files)
        # every regular file, by its path in the package (the Triton repository's link to the ONNX graph is not one)
        files = {p.relative_to(staging).as_posix(): sha256_file(p)
                 for p in sorted(staging.rglob("*")) if p.is_file() and not p.is_symlink()}
        manifest = {
            "format_version": FORMAT_VERSION,
            "name": "biomedclip-zero-shot",
            "version": PACKAGE_VERSION,
            "model": "BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
            "intended_use": "research only (BiomedCLIP model card); not a medical device",
            "weights": {
                "source": info.source,
                "random_init": info.random_init,
                "seed": info.seed,
                "sha256": info.sha256,
            },
            "image_encoder": {
                "onnx": "image_encoder.onnx",
                "variants": variant_files,
                "safetensors": "image_encoder.safetensors",
                "input": "pixel_values",
                "output": "image_features",
                "opset": ONNX_OPSET,
            },
            "embed_dim": int(embeddings.shape[1]),
            "logit_scale": logit_scale,
            "labels_sha256": hashlib.sha256((staging / "labels.json").read_bytes()).hexdigest(),
            "preprocessing": {
                "image_size": IMAGE_SIZE,
                "resize": f"bicubic, shorter side to {IMAGE_SIZE}, centre crop",
                "mean": config["preprocess_cfg"]["mean"],
                "std": config["preprocess_cfg"]["std"],
            },
            "built_with": {
                "open_clip": open_clip.__version__,
                "torch": torch.__version__,
                "calibration": f"{calibration} ({calibration_count} images)" if set(CALIBRATED_VARIANTS) & set(variants) else None,
            },
            "files": files,
        }
        typed = Manifest.from_dict(manifest, staging / MANIFEST)  # the reader's schema checks what is written
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        for p in staging.rglob("*"):
            if not p.is_symlink():
                os.chmod(p, 0o755 if p.is_dir() else 0o644)
        os.chmod(staging, 0o755)
        if out.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, retired / out.name)
            os.replace(staging, out)
            shutil.rmtree(retired)
        else:
            os.replace(staging, out)
        return typed
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
