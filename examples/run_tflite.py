"""Classify a few test images with each exported LiteRT (.tflite) file, as on a device.

    python examples/run_tflite.py --export_dir=RUN_DIR/export [--data_dir=...]

Uses only `ai_edge_litert` (the LiteRT interpreter; tf.lite.Interpreter is deprecated).
Sparse int8 files whose report says they need LiteRT's built-in kernels are run with the
XNNPACK delegate turned off.
"""

import json
import os

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from _images import parse_arguments


def classify(path, images, default_delegates=True):
    resolver = OpResolverType.AUTO if default_delegates else \
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_path=path, num_threads=1,
                              experimental_op_resolver_type=resolver)
    input_detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(input_detail["index"], [1, *images.shape[1:]])
    interpreter.allocate_tensors()
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    predictions = []
    for image in images:
        value = image[None]
        if input_detail["dtype"] != np.float32:  # fully integer input: quantize
            scale, zero_point = input_detail["quantization"]
            value = np.round(value / scale + zero_point).astype(input_detail["dtype"])
        interpreter.set_tensor(input_detail["index"], value)
        interpreter.invoke()
        predictions.append(int(np.argmax(interpreter.get_tensor(output_detail["index"]))))
    return predictions


def main():
    arguments, images, labels = parse_arguments(__doc__)
    report_path = os.path.join(arguments.export_dir, "export_report.json")
    report = json.load(open(report_path)) if os.path.exists(report_path) else {"formats": {}}
    for name in sorted(os.listdir(arguments.export_dir)):
        if not name.endswith(".tflite"):
            continue
        entry = next((e for e in report["formats"].values() if e.get("file") == name), {})
        delegates = not entry.get("requires_default_delegates_off", False)
        predictions = classify(os.path.join(arguments.export_dir, name), images, delegates)
        print(f"{name:26s} predictions {predictions}")
    if labels is not None:
        print(f"{'labels':26s}             {labels.tolist()}")


if __name__ == "__main__":
    main()
