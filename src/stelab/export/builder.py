"""A small ONNX graph builder: named constants, nodes, and the model around them."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

QONNX_DOMAIN = "qonnx.custom_op.general"


class Builder:
    """Collects nodes and initializers; every name it hands out is unique."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._names: dict[str, int] = {}
        self.uses_qonnx = False

    def name(self, hint: str) -> str:
        hint = hint.replace("/", ".")
        n = self._names.get(hint, 0)
        self._names[hint] = n + 1
        return hint if n == 0 else f"{hint}_{n}"

    def const(self, value: np.ndarray | float | int, hint: str, dtype=np.float32) -> str:
        """A named initializer; a Python number becomes a 0-d array of ``dtype``."""
        array = value if isinstance(value, np.ndarray) else np.asarray(value, dtype=dtype)
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def int64s(self, values, hint: str) -> str:
        return self.const(np.asarray(values, dtype=np.int64), hint)

    def op(self, op_type: str, inputs: list[str], hint: str, domain: str = "", **attrs) -> str:
        out = self.name(hint)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, domain=domain, **attrs))
        if domain == QONNX_DOMAIN:
            self.uses_qonnx = True
        return out

    def model(self, input_name: str, input_shape: tuple[int, ...], output: str, num_outputs: int,
              doc: str, metadata: dict[str, str]) -> onnx.ModelProto:
        x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", *input_shape[1:]])
        y = helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", num_outputs])
        graph = helper.make_graph(self.nodes, "stelab", [x], [y], self.inits, doc_string=doc)
        opsets = [helper.make_opsetid("", self.opset)]
        if self.uses_qonnx:
            opsets.append(helper.make_opsetid(QONNX_DOMAIN, 1))
        model = helper.make_model(graph, opset_imports=opsets, producer_name="stelab", doc_string=doc)
        model.ir_version = min(model.ir_version, _ir_version(self.opset))
        helper.set_model_props(model, metadata)
        return model


def _ir_version(opset: int) -> int:
    """The oldest IR version that has ``opset`` (so older runtimes can open the file), from onnx's own table of
    releases: rows ``(release, ir_version, ai.onnx opset, ...)``."""
    versions = [row[1] for row in helper.VERSION_TABLE if row[2] >= opset]
    return min(versions) if versions else onnx.IR_VERSION
