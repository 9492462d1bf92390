"""LiteRT (TFLite) flatbuffers: convert, inspect, run and time (docs/architecture.md,
deployment layer).

Kinds: "tflite" (float32), "tflite_sparse" (float32, sparse-encoded weights),
"tflite_int8" (int8 weights and activations, float input and output) and
"tflite_sparse_int8" (both). Only built-in ops are allowed, and every file is checked by
loading it in LiteRT's default interpreter. Files run with `ai_edge_litert`.

Sparse encoding is not always a win: at low sparsity the index arrays make the file larger
than the dense one, and LiteRT densifies unstructured sparse weights at load time (only
fully-connected weights with 1x4 zero blocks, 1x16 for int8, stay sparse while running).
`convert_with_fallback` keeps the dense file when the sparse one is larger or does not run.
"""

from __future__ import annotations

import os
import statistics
import time

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from export.bake import check_plain
from export.saved_model import serving_module

KINDS = ("tflite", "tflite_sparse", "tflite_int8", "tflite_sparse_int8")
SPARSE_KINDS = ("tflite_sparse", "tflite_sparse_int8")
INT8_KINDS = ("tflite_int8", "tflite_sparse_int8")
DENSE_KIND = {"tflite_sparse": "tflite", "tflite_sparse_int8": "tflite_int8"}

_OP_NAMES = {
    code: name for name, code in vars(schema.BuiltinOperator).items() if name.isupper()
}
_BUILTIN_NAMES = frozenset(_OP_NAMES.values()) - {"CUSTOM"}


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(
            f"Unknown kind {kind!r}. Allowed: {', '.join(KINDS)}. Received: kind={kind!r}"
        )


def convert(plain_model: keras.Model, kind: str, representative_images=None) -> bytes:
    """The flatbuffer of `plain_model` for `kind`, built-in ops only, checked by loading.

    int8 kinds need `representative_images` (about 100 training images, float32 in [0, 1])
    for post-training calibration; input and output stay float32.
    """
    check_kind(kind)
    check_plain(plain_model)
    module = serving_module(plain_model, plain_model.inputs[0].shape[1:], with_probabilities=False)
    representative_dataset = None
    if kind in INT8_KINDS:
        if representative_images is None or len(representative_images) == 0:
            raise ValueError(
                f"kind={kind!r} needs representative_images (about 100 training images) to "
                "calibrate int8 activations. Received: representative_images=None or empty"
            )
        representative_dataset = representative_examples(
            [np.asarray(representative_images, dtype=np.float32)])
    return convert_module(module, kind, representative_dataset)


def representative_examples(arrays: list):
    """A representative dataset: one example at a time of each input array, in order."""
    count = len(arrays[0])
    if any(len(array) != count for array in arrays):
        raise ValueError("Every representative input array needs the same number of rows.")

    def dataset():
        for index in range(count):
            yield [array[index:index + 1] for array in arrays]

    return dataset


def convert_module(module, kind: str, representative_dataset=None) -> bytes:
    """The flatbuffer of a module's `serve` function for `kind`, built-in ops only, checked.

    `representative_dataset` (int8 kinds) yields lists of arrays, one per input, batch 1.
    """
    check_kind(kind)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.serve.get_concrete_function()], module
    )
    optimizations = []
    if kind in INT8_KINDS:
        if representative_dataset is None:
            raise ValueError(
                f"kind={kind!r} needs representative data (about 100 examples) to calibrate "
                "int8 activations. Received: None"
            )
        optimizations.append(tf.lite.Optimize.DEFAULT)
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    else:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if kind in SPARSE_KINDS:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    try:
        model_bytes = bytes(converter.convert())
    except Exception as error:  # TensorFlow's ConverterError is not public API
        if type(error).__name__ != "ConverterError":
            raise
        raise ValueError(conversion_failure(str(error))) from error
    check_builtin_ops(model_bytes)
    return model_bytes


def conversion_failure(message: str) -> str:
    """One line on why LiteRT's converter refused a model, and what would convert."""
    if "TensorList" in message:
        return ("LiteRT's built-in ops cannot express this model's recurrent loop (TensorList "
                "ops, from an LSTM, GRU or RNN layer), and tf_lth writes built-in-op files "
                "only. Allowed: build the recurrent layer with unroll=True (a fixed sequence "
                "length), or serve the SavedModel (export_saved_model) instead.")
    errors = [line.split("error:", 1)[1].strip() for line in message.splitlines()
              if "error:" in line]
    first = errors[0] if errors else (message.strip().splitlines() or ["no message"])[0]
    return f"LiteRT's converter refused the model (built-in ops only): {first}"


def load_interpreter(model, num_threads: int = 1, default_delegates: bool = True) -> Interpreter:
    """A LiteRT `Interpreter` for flatbuffer bytes or a .tflite path (not yet allocated).

    `default_delegates=False` uses the builtin op resolver without the default (XNNPACK)
    delegate.
    """
    resolver = OpResolverType.AUTO
    if not default_delegates:
        resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    options = {"num_threads": int(num_threads), "experimental_op_resolver_type": resolver}
    if isinstance(model, (bytes, bytearray)):
        return Interpreter(model_content=bytes(model), **options)
    if isinstance(model, (str, os.PathLike)):
        return Interpreter(model_path=os.fspath(model), **options)
    raise ValueError(
        "model must be flatbuffer bytes or a path to a .tflite file. "
        f"Received: model={type(model).__name__}"
    )


def read_model(model) -> bytes:
    """The flatbuffer bytes of `model` (bytes as they are, or the file at a path)."""
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    with open(model, "rb") as stream:
        return stream.read()


def _main_graph(model) -> tuple:
    """The flatbuffer's main subgraph, and its ops in order (name, input/output tensors)."""
    flatbuffer = schema.Model.GetRootAs(read_model(model), 0)
    codes = []
    for index in range(flatbuffer.OperatorCodesLength()):
        code = flatbuffer.OperatorCodes(index)
        # Codes above 127 live in BuiltinCode; older files use the deprecated byte field.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        custom = code.CustomCode()
        codes.append(custom.decode() if custom else _OP_NAMES.get(builtin, f"BUILTIN_{builtin}"))
    graph = flatbuffer.Subgraphs(0)
    ops = [
        {
            "op": codes[graph.Operators(index).OpcodeIndex()],
            "inputs": [int(i) for i in graph.Operators(index).InputsAsNumpy()],
            "outputs": [int(i) for i in graph.Operators(index).OutputsAsNumpy()],
        }
        for index in range(graph.OperatorsLength())
    ]
    return graph, ops


def operators(model) -> list:
    """The ops of the main subgraph, in order: name, and input/output tensor indices."""
    return _main_graph(model)[1]


def check_builtin_ops(model) -> None:
    """Raises unless every op is a LiteRT built-in and the default interpreter loads it."""
    names = [item["op"] for item in operators(model)]
    foreign = sorted({name for name in names if name not in _BUILTIN_NAMES})
    if foreign:
        raise RuntimeError(f"The converted model uses non-built-in (custom or Flex) ops: {foreign}")
    try:
        load_interpreter(model).allocate_tensors()  # the default resolver fails on unknown ops
    except RuntimeError:
        # XNNPACK refuses some valid files (int8 FULLY_CONNECTED fed by DENSIFY); LiteRT's
        # built-in kernels must still load them.
        load_interpreter(model, default_delegates=False).allocate_tensors()


def runs_in_default_interpreter(model, default_delegates: bool = True) -> str | None:
    """None when one invoke succeeds in LiteRT's default interpreter, else the error text.

    Some valid files fail there: XNNPACK, the default delegate, cannot prepare an int8
    fully-connected op fed by a DENSIFY op (LiteRT 2.3).
    """
    try:
        interpreter = load_interpreter(model, default_delegates=default_delegates)
        interpreter.allocate_tensors()
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"],
                                   np.zeros(detail["shape"], dtype=detail["dtype"]))
        interpreter.invoke()
    except (RuntimeError, ValueError) as error:
        return str(error)
    return None


def weight_storage(model) -> list:
    """For each FULLY_CONNECTED and CONV_2D op, how LiteRT holds its weights at run time.

    "sparse": the op reads the sparse-encoded tensor itself (its sparse kernel runs);
    "densified": a DENSIFY op expands it to dense first; "dense": stored dense.
    `shape` is LiteRT's: (out, in) for fully connected, (out, h, w, in) for conv.
    """
    graph, ops = _main_graph(model)
    producer = {output: item for item in ops for output in item["outputs"]}
    records = []
    for item in ops:
        if item["op"] not in ("FULLY_CONNECTED", "CONV_2D"):
            continue
        weights = item["inputs"][1]
        tensor = graph.Tensors(weights)
        block = None
        source = producer.get(weights)
        if source is not None and source["op"] == "DENSIFY":
            storage = "densified"
            tensor = graph.Tensors(source["inputs"][0])  # the sparse-encoded constant
        elif tensor.Sparsity() is not None:
            storage = "sparse"
        else:
            storage = "dense"
        sparsity = tensor.Sparsity()
        if sparsity is not None and sparsity.BlockMapLength() > 0:
            last = sparsity.DimMetadata(sparsity.DimMetadataLength() - 1)
            block = [1, int(last.DenseSize())]
        shape = [int(dim) for dim in tensor.ShapeAsNumpy()]
        records.append({"op": item["op"], "shape": shape, "storage": storage, "block": block})
    return records


def _quantize(values: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    if dtype == np.float32:
        return values.astype(np.float32)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(values / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return values.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


def run(
    model,
    images: np.ndarray,
    num_threads: int = 1,
    batch_size: int = 1,
    default_delegates: bool = True,
) -> np.ndarray:
    """Logits of a .tflite model (bytes or path) on `images`, via ai_edge_litert.

    The input is resized to `batch_size` (and to the last, smaller batch) as needed.
    `default_delegates=False` turns off XNNPACK, LiteRT's default CPU delegate.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive int. Received: batch_size={batch_size!r}")
    images = np.asarray(images, dtype=np.float32)
    interpreter = load_interpreter(model, num_threads, default_delegates)
    input_detail = interpreter.get_input_details()[0]
    expected = tuple(int(d) for d in input_detail["shape"][1:])
    if images.ndim != len(expected) + 1 or tuple(images.shape[1:]) != expected:
        raise ValueError(
            f"images must be shaped (batch, {', '.join(map(str, expected))}). "
            f"Received: images.shape={images.shape}"
        )
    outputs = []
    current = None
    for start in range(0, len(images), int(batch_size)):
        batch = images[start : start + int(batch_size)]
        if current != len(batch):
            interpreter.resize_tensor_input(input_detail["index"], [len(batch), *expected])
            interpreter.allocate_tensors()
            current = len(batch)
            input_detail = interpreter.get_input_details()[0]
            output_detail = interpreter.get_output_details()[0]
        interpreter.set_tensor(input_detail["index"], _quantize(batch, input_detail))
        interpreter.invoke()
        outputs.append(_dequantize(interpreter.get_tensor(output_detail["index"]), output_detail))
    return np.concatenate(outputs, axis=0)


def latency_per_example(model, images: np.ndarray, num_threads: int = 1, repeats: int = 3,
                        default_delegates: bool = True) -> float:
    """Median seconds of one LiteRT invoke at batch 1 (set input, invoke, read output).

    Warms up on a few images first; every image is timed `repeats` times.
    """
    images = np.asarray(images, dtype=np.float32)
    if len(images) == 0:
        raise ValueError(
            "latency_per_example needs at least one image. Received: images with 0 rows"
        )
    interpreter = load_interpreter(model, num_threads, default_delegates=default_delegates)
    input_detail = interpreter.get_input_details()[0]
    if input_detail["shape"][0] != 1:
        interpreter.resize_tensor_input(input_detail["index"], [1, *images.shape[1:]])
    interpreter.allocate_tensors()
    input_detail = interpreter.get_input_details()[0]
    output_index = interpreter.get_output_details()[0]["index"]
    singles = [_quantize(image[None], input_detail) for image in images]
    for single in singles[:10]:  # warm-up: first invokes prepare kernels and caches
        interpreter.set_tensor(input_detail["index"], single)
        interpreter.invoke()
    times = []
    for _ in range(int(repeats)):
        for single in singles:
            start = time.perf_counter()
            interpreter.set_tensor(input_detail["index"], single)
            interpreter.invoke()
            interpreter.get_tensor(output_index)
            times.append(time.perf_counter() - start)
    return float(statistics.median(times))


def _choice(used: bool, reason: str, **sizes) -> dict:
    return {"sparse_encoding_used": used, "sparse_encoding_reason": reason, **sizes}


def _index_vector(values: np.ndarray, limit_uint8: bool = True):
    """The smallest LiteRT index vector (type, object) that holds `values`."""
    top = int(values.max()) if values.size else 0
    if limit_uint8 and top < 256:
        return schema.SparseIndexVector.Uint8Vector, schema.Uint8VectorT(), np.uint8
    if top < 65536:
        return schema.SparseIndexVector.Uint16Vector, schema.Uint16VectorT(), np.uint16
    return schema.SparseIndexVector.Int32Vector, schema.Int32VectorT(), np.int32


_VALUE_TYPES = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.INT8: np.int8}


def _decode_block_sparse(tensor, data: bytes) -> np.ndarray:
    """Dense (out, in) values (float32 or int8) of a 1xB block-sparse weight tensor."""
    sparsity = tensor.sparsity
    rows, columns = int(tensor.shape[0]), int(tensor.shape[1])
    block = int(sparsity.dimMetadata[2].denseSize)
    segments = np.asarray(sparsity.dimMetadata[1].arraySegments.values, np.int64)
    indices = np.asarray(sparsity.dimMetadata[1].arrayIndices.values, np.int64)
    dtype = _VALUE_TYPES[tensor.type]
    values = np.frombuffer(bytes(data), dtype).reshape(-1, block)
    dense = np.zeros((rows, columns), dtype)
    for row in range(rows):
        for position in range(segments[row], segments[row + 1]):
            start = indices[position] * block
            dense[row, start:start + block] = values[position]
    return dense


def reencode_blocks_as_csr(model_bytes: bytes) -> bytes | None:
    """Re-encodes block-sparse FULLY_CONNECTED weights (float or int8) as element-wise CSR.

    LiteRT's converter switches a very sparse layer to its 1x4 block encoding even when
    the zeros are not in whole blocks; partly filled blocks are stored whole, so the file
    can grow as pruning goes on. CSR stores each kept weight once (a DENSIFY op expands it
    at load). Returns None when no tensor was block-encoded.
    """
    import flatbuffers

    model = schema.ModelT.InitFromPackedBuf(bytes(model_bytes), 0)
    graph = model.subgraphs[0]
    codes = [code.builtinCode for code in model.operatorCodes]
    fully_connected = schema.BuiltinOperator.FULLY_CONNECTED
    targets = []
    for operator in graph.operators:
        if codes[operator.opcodeIndex] != fully_connected:
            continue
        tensor = graph.tensors[operator.inputs[1]]
        sparsity = tensor.sparsity
        if (sparsity is not None and sparsity.blockMap is not None and len(sparsity.blockMap)
                and tensor.type in _VALUE_TYPES and len(tensor.shape) == 2):
            targets.append(operator)
    if not targets:
        return None
    if schema.BuiltinOperator.DENSIFY not in codes:
        code = schema.OperatorCodeT()
        code.builtinCode = schema.BuiltinOperator.DENSIFY
        code.deprecatedBuiltinCode = min(schema.BuiltinOperator.DENSIFY, 127)
        code.version = 1
        model.operatorCodes.append(code)
        codes.append(schema.BuiltinOperator.DENSIFY)
    densify_index = codes.index(schema.BuiltinOperator.DENSIFY)
    new_operators = []
    for operator in targets:
        weight_index = int(operator.inputs[1])
        tensor = graph.tensors[weight_index]
        dense = _decode_block_sparse(tensor, model.buffers[tensor.buffer].data)
        nonzero = dense != 0
        counts = nonzero.sum(axis=1)
        segments = np.concatenate([[0], np.cumsum(counts)])
        columns = np.nonzero(nonzero)[1]
        segment_type, segment_vector, segment_dtype = _index_vector(segments)
        index_type, index_vector, index_dtype = _index_vector(columns)
        segment_vector.values = segments.astype(segment_dtype)
        index_vector.values = columns.astype(index_dtype)
        row_metadata = schema.DimensionMetadataT()
        row_metadata.format = schema.DimensionType.DENSE
        row_metadata.denseSize = dense.shape[0]
        column_metadata = schema.DimensionMetadataT()
        column_metadata.format = schema.DimensionType.SPARSE_CSR
        column_metadata.arraySegmentsType = segment_type
        column_metadata.arraySegments = segment_vector
        column_metadata.arrayIndicesType = index_type
        column_metadata.arrayIndices = index_vector
        sparsity = schema.SparsityParametersT()
        sparsity.traversalOrder = np.array([0, 1], np.int32)
        sparsity.blockMap = np.array([], np.int32)
        sparsity.dimMetadata = [row_metadata, column_metadata]
        tensor.sparsity = sparsity
        model.buffers[tensor.buffer].data = np.frombuffer(dense[nonzero].tobytes(), np.uint8)
        expanded = schema.TensorT()
        expanded.shape = np.array(dense.shape, np.int32)
        expanded.type = tensor.type
        expanded.quantization = tensor.quantization  # per-channel scales are unchanged
        expanded.buffer = 0
        expanded.name = (tensor.name or b"weights") + b"/densified"
        graph.tensors.append(expanded)
        densify = schema.OperatorT()
        densify.opcodeIndex = densify_index
        densify.inputs = np.array([weight_index], np.int32)
        densify.outputs = np.array([len(graph.tensors) - 1], np.int32)
        densify.builtinOptionsType = schema.BuiltinOptions.DensifyOptions
        densify.builtinOptions = schema.DensifyOptionsT()
        new_operators.append(densify)
        inputs = np.array(operator.inputs, np.int32)
        inputs[1] = len(graph.tensors) - 1
        operator.inputs = inputs
    graph.operators = new_operators + list(graph.operators)  # weights expand before use
    builder = flatbuffers.Builder(len(model_bytes))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _same_outputs(first: bytes, second: bytes, num_examples: int = 8,
                  default_delegates: bool = True) -> bool:
    """Whether two LiteRT models give the same outputs (1e-5) on random inputs."""
    try:
        if len(load_interpreter(first).get_input_details()) > 1 or \
                len(load_interpreter(first).get_output_details()) > 1:
            inputs = random_inputs(first, num_examples)
            a = run_signature(first, inputs)
            b = run_signature(second, inputs, default_delegates=default_delegates)
            return all(np.allclose(a[key], b[key], atol=1e-5) for key in a)
        detail = load_interpreter(first).get_input_details()[0]
        shape = [num_examples, *[int(dim) for dim in detail["shape"][1:]]]
        images = np.random.default_rng(0).uniform(size=shape).astype(np.float32)
        return bool(np.allclose(run(first, images),
                                run(second, images, default_delegates=default_delegates),
                                atol=1e-5))
    except (RuntimeError, ValueError):
        return False


def random_inputs(model, num_examples: int = 8, seed: int = 0) -> dict:
    """{input name: uniform [0, 1) float (or small int) batch} for the model's signature."""
    interpreter = load_interpreter(model)
    runner = interpreter.get_signature_runner()
    rng = np.random.default_rng(seed)
    inputs = {}
    for name, detail in runner.get_input_details().items():
        shape = [num_examples, *[int(dim) for dim in detail["shape"][1:]]]
        if np.issubdtype(detail["dtype"], np.integer):
            inputs[name] = rng.integers(0, 2, size=shape).astype(detail["dtype"])
        else:
            inputs[name] = rng.uniform(size=shape).astype(detail["dtype"])
    return inputs


def run_signature(model, inputs, num_threads: int = 1, default_delegates: bool = True) -> dict:
    """{output name: array} of a .tflite model's signature on `inputs`, via ai_edge_litert.

    `inputs` is {input name: array}, or one array for a one-input model; the batch size is
    free. Integer-quantized inputs and outputs are converted from and to float.
    """
    interpreter = load_interpreter(model, num_threads, default_delegates)
    runner = interpreter.get_signature_runner()
    details = runner.get_input_details()
    if not isinstance(inputs, dict):
        if len(details) != 1:
            raise ValueError(
                f"The model takes inputs {sorted(details)}; pass a dict. Received: one array"
            )
        inputs = {next(iter(details)): inputs}
    unknown = sorted(set(inputs) - set(details))
    missing = sorted(set(details) - set(inputs))
    if unknown or missing:
        raise ValueError(
            f"inputs must name {sorted(details)}. Missing: {missing}; unknown: {unknown}"
        )
    feed = {name: _quantize(np.asarray(value), details[name])
            if details[name]["dtype"] != np.asarray(value).dtype else np.asarray(value)
            for name, value in inputs.items()}
    outputs = runner(**feed)
    output_details = runner.get_output_details()
    return {name: _dequantize(value, output_details[name]) if np.issubdtype(
        output_details[name]["dtype"], np.integer) else value
        for name, value in outputs.items()}


def convert_with_fallback(plain_model: keras.Model, kind: str, representative_images=None) -> tuple:
    """`(bytes, info)`: for sparse kinds, the sparse file unless the dense one is better.

    The dense file of the same precision is kept when the sparse-encoded one is not smaller
    (index arrays cost more than the zeros they save at low sparsity) or does not run in
    LiteRT's default interpreter. `info` records the choice, the reason and both sizes.
    """
    check_kind(kind)
    return _with_fallback(lambda name: convert(plain_model, name, representative_images), kind)


def convert_module_with_fallback(module, kind: str, representative_dataset=None) -> tuple:
    """`convert_with_fallback` for a module's `serve` function (any model's signature)."""
    check_kind(kind)
    return _with_fallback(lambda name: convert_module(module, name, representative_dataset),
                          kind)


def _with_fallback(make, kind: str) -> tuple:
    """The first of a flat sequence of named attempts that holds (see `_sparse_attempts`);
    every attempt tried is recorded in `info["attempts"]` with its size and outcome."""
    model_bytes = make(kind)
    if kind not in SPARSE_KINDS:
        return model_bytes, _choice(False, "dense format")
    dense_bytes = make(DENSE_KIND[kind])
    attempts = []
    for name, candidate, outcome in _sparse_attempts(model_bytes, dense_bytes, kind):
        attempts.append({"attempt": name, "size_bytes": None if candidate is None
                         else len(candidate), "accepted": outcome.accepted,
                         "why": outcome.why})
        if outcome.accepted:
            return candidate, _choice(name != "dense", outcome.why, attempts=attempts,
                                      **outcome.extra)
    raise AssertionError("the dense attempt always holds")


class _Outcome:
    """Whether an attempt holds, why, and what the report records with it."""

    def __init__(self, accepted: bool, why: str, **extra):
        self.accepted, self.why, self.extra = accepted, why, extra


def _sparse_attempts(sparse: bytes, dense: bytes, kind: str):
    """(name, file, outcome) in order of preference, each computed only when reached:
    element-wise CSR re-encoding of LiteRT's partly filled blocks, the sparse file on the
    default interpreter (XNNPACK), the sparse file on LiteRT's built-in kernels, the dense
    file. Each interpreter check runs at most once."""
    int8 = kind in INT8_KINDS
    sizes = {"sparse_encoded_size_bytes": len(sparse), "dense_encoded_size_bytes": len(dense)}
    smaller = len(sparse) < len(dense)
    not_smaller = (f"sparse encoding ({len(sparse)} bytes) is not smaller than dense "
                   f"({len(dense)} bytes) at this sparsity")
    default_failure = runs_in_default_interpreter(sparse) if smaller else not_smaller

    csr = reencode_blocks_as_csr(sparse) if smaller and default_failure is None else None
    if csr is None:
        why = ("no partly filled blocks to re-encode" if smaller and default_failure is None
               else "needs a smaller sparse file that runs in the default interpreter")
        yield "csr_reencoded", None, _Outcome(False, why)
    elif len(csr) >= len(sparse):
        yield "csr_reencoded", csr, _Outcome(False, "not smaller than the block encoding")
    elif not _same_outputs(sparse, csr, default_delegates=not int8):
        yield "csr_reencoded", csr, _Outcome(False, "outputs differ from the block encoding")
    else:
        yield "csr_reencoded", csr, _Outcome(
            True, f"sparse encoding is smaller ({len(csr)} vs {len(dense)} bytes); LiteRT's "
            f"block encoding of partly filled blocks ({len(sparse)} bytes, faster) was "
            "re-encoded as element-wise CSR"
            + (", which runs on LiteRT's built-in kernels, not XNNPACK" if int8 else ""),
            reencoded_as_csr=True, block_encoded_size_bytes=len(sparse),
            **({"requires_default_delegates_off": True} if int8 else {}), **sizes)
    if default_failure is None:
        yield "sparse_default_interpreter", sparse, _Outcome(
            True, f"sparse encoding is smaller ({len(sparse)} vs {len(dense)} bytes)", **sizes)
        return
    yield "sparse_default_interpreter", sparse, _Outcome(False, default_failure.strip())
    builtin_failure = (runs_in_default_interpreter(sparse, default_delegates=False)
                       if smaller else not_smaller)
    if builtin_failure is None:
        # XNNPACK refuses int8 FULLY_CONNECTED fed by DENSIFY; LiteRT's own kernels run it.
        yield "sparse_builtin_kernels", sparse, _Outcome(
            True, f"sparse encoding is smaller ({len(sparse)} vs {len(dense)} bytes); it runs "
            "with LiteRT's built-in kernels, not the XNNPACK delegate "
            f"({default_failure.strip().splitlines()[0]})",
            requires_default_delegates_off=True, **sizes)
        return
    yield "sparse_builtin_kernels", sparse, _Outcome(False, builtin_failure.strip())
    why = (f"{not_smaller}; kept the dense file" if not smaller else
           f"the sparse-encoded file does not run in LiteRT's default interpreter "
           f"({default_failure.strip()}); kept the dense file")
    yield "dense", dense, _Outcome(True, why, **sizes)
