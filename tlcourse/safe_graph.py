"""Check a TensorFlow graph before it runs: a model file is a program.

A frozen graph (``.pb``) or a SavedModel holds TensorFlow operations, and some operations read
and write files (``ReadFile``, ``WriteFile``, ``SaveV2``), run Python (``PyFunc``) or talk to
the outside world. TensorFlow's own security guidance says it plainly: running an untrusted model
is running untrusted code. So before the course runs a graph it did not just build (in
``label_image.py``, in the LiteRT conversion, in ``tflite.convert``), every operation in the graph
and in every function of its library is checked against ``ALLOWED_OPS``: the operations that
inference needs (those of the course's own exported models for every backbone, of the classic
Inception-v3 graph of the original tutorial, and of common image classifiers). Anything else is
refused with ``UnsafeModelError`` naming the operation and the file, before anything runs.

A SavedModel is checked from its protobuf (``saved_model.pb``) before ``tf.saved_model.load``,
because loading runs some of it. TensorFlow writes two more functions into every SavedModel, to
save and restore its variables (``SaveV2``, ``RestoreV2``, ...); those may hold these checkpoint
operations as long as nothing but the saver's own nodes calls them: ``tf.saved_model.load``
restores variables by itself and never runs them. A SavedModel without an object graph (the
TensorFlow 1 format, which loading runs through its saver and init ops) is refused.

What this does not check: the operations' kernels themselves (a bug in TensorFlow's C++ code can
still be reached with crafted inputs), ``.keras`` files (loaded in Keras' safe mode, which refuses
Python code; their graph is checked when converted to LiteRT), and ``.tflite`` files (LiteRT runs
only its built-in operations). Explained in the README, after the options of ``label_image.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from tlcourse.errors import TLCourseError

ALLOWED_OPS = frozenset(
    # graph plumbing and control flow (the functions they call are checked too)
    "Const Placeholder PlaceholderWithDefault Identity IdentityN NoOp StopGradient CheckNumerics "
    "Switch Merge If StatelessIf PartitionedCall StatefulPartitionedCall ReadVariableOp "
    # shapes, slices and casts
    "Shape Size Rank Reshape Squeeze ExpandDims Pack Unpack ConcatV2 Concat Split SplitV Slice StridedSlice "
    "Transpose Tile Fill Range BroadcastTo BroadcastArgs ZerosLike OnesLike Cast Pad PadV2 MirrorPad GatherV2 "
    # arithmetic, comparisons and reductions
    "Add AddV2 AddN Sub Mul Div RealDiv FloorDiv FloorMod Neg Abs Square Sqrt Rsqrt Exp Log Pow Erf Floor Round "
    "Maximum Minimum SquaredDifference ClipByValue Greater GreaterEqual Less LessEqual Equal NotEqual "
    "LogicalAnd LogicalOr LogicalNot Select SelectV2 Sum Mean Max Min Prod ArgMax ArgMin "
    # the network: convolutions, normalisation, activations, pooling, the new layer
    "Conv2D DepthwiseConv2dNative BiasAdd MatMul BatchMatMulV2 Einsum FusedBatchNorm FusedBatchNormV3 "
    "BatchNormWithGlobalNormalization Relu Relu6 Elu Selu LeakyRelu Sigmoid Tanh Softplus Softmax LogSoftmax "
    "MaxPool AvgPool "
    # preprocessing: the course's resizes, and the classic graph's JPEG decoder (bytes in a tensor, no file)
    "ScaleAndTranslate ResizeBicubic ResizeBilinear ResizeArea ResizeNearestNeighbor DecodeJpeg".split()
)
# In the main graph of a SavedModel only: its variables and their initialisers (TensorFlow 2 loading never runs them).
SAVED_MODEL_GRAPH_OPS = frozenset({"VarHandleOp", "VarIsInitializedOp", "AssignVariableOp"})
# In the saver's own functions only: writing and reading the model's checkpoint (loading never runs them).
SAVER_OPS = frozenset(
    "SaveV2 RestoreV2 MergeV2Checkpoints ShardedFilename StringJoin StaticRegexFullMatch AssignVariableOp "
    "DisableCopyOnRead".split()
)


class UnsafeModelError(TLCourseError, ValueError):
    """A model file whose graph holds an operation inference does not need (a file read or write, Python, ...)."""


def _called_functions(node, library: set[str]) -> Iterator[str]:
    """The library functions ``node`` calls: as its operation, or in a function-valued attribute."""
    if node.op in library:
        yield node.op
    for value in node.attr.values():
        if value.func.name:
            yield value.func.name
        yield from (function.name for function in value.list.func)


def _reachable(roots: Iterable[str], calls: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += calls.get(name, ())
    return seen


def _refuse(path, op: str, node: str, where: str) -> UnsafeModelError:
    return UnsafeModelError(
        f"{path}: refused before running it: operation {op!r} (node {node!r} {where}) is not one that labelling "
        "images needs. A model file is a program, and this one could read or write files or run code. If you "
        "trust whoever made it, run it with TensorFlow yourself; else ask for a model written by retrain.py."
    )


def check_graph_def(graph_def, path, main_extra=frozenset(), saver_nodes: Iterable[str] = (), run: Iterable[str] = ()):
    """Raise ``UnsafeModelError`` unless every operation of ``graph_def`` and of its functions is allowed.

    ``main_extra``: operations also allowed in the main graph. ``saver_nodes``: main-graph nodes
    whose functions may also hold ``SAVER_OPS``, if neither another node nor ``run`` (functions
    the loader may call: a SavedModel's object graph) reaches them.
    """
    functions = {function.signature.name: function for function in graph_def.library.function}
    library = set(functions)
    calls = {name: {c for n in f.node_def for c in _called_functions(n, library)} for name, f in functions.items()}
    saver_nodes = set(saver_nodes)
    called_by_saver, called_by_others = [], list(run)
    for node in graph_def.node:
        if node.op not in ALLOWED_OPS | main_extra and node.op not in library:
            raise _refuse(path, node.op, node.name, "in the main graph")
        (called_by_saver if node.name in saver_nodes else called_by_others).extend(_called_functions(node, library))
    saver_only = _reachable(called_by_saver, calls) - _reachable(called_by_others, calls)
    for name, function in functions.items():
        allowed = ALLOWED_OPS | SAVER_OPS if name in saver_only else ALLOWED_OPS
        for node in function.node_def:
            if node.op not in allowed and node.op not in library:
                raise _refuse(path, node.op, node.name, f"in function {name!r}")


def check_saved_model(directory) -> None:
    """Check a SavedModel folder from its ``saved_model.pb``, before ``tf.saved_model.load`` runs any of it."""
    from tensorflow.core.protobuf import saved_model_pb2

    directory = Path(directory)
    proto_path = directory / "saved_model.pb"
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString(proto_path.read_bytes())  # a missing or damaged file: the caller's ModelFileError
    for meta_graph in saved_model.meta_graphs:
        if len(meta_graph.object_graph_def.nodes) <= 1:
            raise UnsafeModelError(
                f"{directory}: a TensorFlow 1 SavedModel (no object graph): loading it runs its own init and restore "
                "operations, so the course does not open it. Export it again with TensorFlow 2 (retrain.py does)."
            )
        saver = meta_graph.saver_def
        saver_nodes = {saver.save_tensor_name.split(":")[0], saver.restore_op_name.split(":")[0]} - {""}
        objects = meta_graph.object_graph_def
        run = {*objects.concrete_functions}
        for node in objects.nodes:
            run.update(node.function.concrete_functions)
            run.add(node.bare_concrete_function.concrete_function_name)
        check_graph_def(meta_graph.graph_def, proto_path, SAVED_MODEL_GRAPH_OPS, saver_nodes, run - {""})
