"""Keras model configs (``.keras`` config.json, ``.h5`` model_config): Lambda bytecode, custom objects."""

from __future__ import annotations

import json
from typing import Any

from bastion.scan.engine import Context
from bastion.scan.findings import Severity

_MAX_NODES = 1_000_000


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: layer ``class_name`` values that Keras 2 (tf.keras 2.x, tf_keras) and Keras 3 deserialise from their own
#: code: models, every public layer, the legacy aliases and the TF-op wrappers functional models record.
#: A layer with no ``module`` key whose class is not here is a custom object: loading looks it up among the
#: caller's ``custom_objects`` or the registered classes, i.e. code from outside Keras.
BUILTIN_LAYERS: frozenset[str] = _names("""
    Sequential Functional Model InputLayer Layer Wrapper
    Dense EinsumDense Activation Dropout Flatten Reshape Permute RepeatVector Lambda Masking Identity
    ActivityRegularization SpatialDropout1D SpatialDropout2D SpatialDropout3D Embedding
    TFOpLambda SlicingOpLambda ClassMethod InstanceMethod InstanceProperty
    Conv1D Conv2D Conv3D Conv1DTranspose Conv2DTranspose Conv3DTranspose Convolution1D Convolution2D
    Convolution3D Convolution1DTranspose Convolution2DTranspose Convolution3DTranspose Deconvolution2D
    Deconvolution3D SeparableConv1D SeparableConv2D SeparableConvolution1D SeparableConvolution2D
    DepthwiseConv1D DepthwiseConv2D Cropping1D Cropping2D Cropping3D UpSampling1D UpSampling2D UpSampling3D
    ZeroPadding1D ZeroPadding2D ZeroPadding3D ConvLSTM1D ConvLSTM2D ConvLSTM3D LocallyConnected1D
    LocallyConnected2D
    MaxPooling1D MaxPooling2D MaxPooling3D AveragePooling1D AveragePooling2D AveragePooling3D MaxPool1D
    MaxPool2D MaxPool3D AvgPool1D AvgPool2D AvgPool3D GlobalMaxPooling1D GlobalMaxPooling2D GlobalMaxPooling3D
    GlobalAveragePooling1D GlobalAveragePooling2D GlobalAveragePooling3D GlobalMaxPool1D GlobalMaxPool2D
    GlobalMaxPool3D GlobalAvgPool1D GlobalAvgPool2D GlobalAvgPool3D
    Add Subtract Multiply Average Maximum Minimum Concatenate Dot
    BatchNormalization LayerNormalization UnitNormalization GroupNormalization SyncBatchNormalization
    SpectralNormalization Normalization
    RNN SimpleRNN SimpleRNNCell GRU GRUCell LSTM LSTMCell StackedRNNCells Bidirectional TimeDistributed
    CuDNNGRU CuDNNLSTM PeepholeLSTMCell
    Attention AdditiveAttention MultiHeadAttention GroupQueryAttention
    ReLU LeakyReLU PReLU ELU ThresholdedReLU Softmax
    GaussianNoise GaussianDropout AlphaDropout
    Rescaling Resizing CenterCrop RandomCrop RandomFlip RandomRotation RandomZoom RandomTranslation
    RandomContrast RandomHeight RandomWidth RandomBrightness Discretization CategoryEncoding Hashing
    HashedCrossing IntegerLookup StringLookup TextVectorization DenseFeatures SequenceFeatures
    RandomFourierFeatures
""")
#: non-layer objects a Keras config names under ``keras.*`` modules: initializers, regularizers,
#: constraints, optimizers and schedules, losses, metrics, dtype policies. A name under a keras module that
#: is neither here nor a built-in layer is not trusted for its module alone (keras.utils.get_file is keras too)
KERAS_CONFIG_OBJECTS: frozenset[str] = _names("""
    GlorotUniform GlorotNormal HeUniform HeNormal LecunUniform LecunNormal Zeros Ones Constant RandomNormal
    RandomUniform TruncatedNormal Orthogonal Identity VarianceScaling IdentityInitializer
    L1 L2 L1L2 OrthogonalRegularizer MaxNorm MinMaxNorm NonNeg UnitNorm RadialConstraint
    Adam AdamW Adamax Adagrad Adadelta Adafactor Ftrl Lion Nadam RMSprop SGD LossScaleOptimizer
    ExponentialDecay PiecewiseConstantDecay PolynomialDecay InverseTimeDecay CosineDecay CosineDecayRestarts
    BinaryCrossentropy CategoricalCrossentropy SparseCategoricalCrossentropy MeanSquaredError
    MeanAbsoluteError Huber Hinge KLDivergence Poisson CosineSimilarity BinaryFocalCrossentropy
    Accuracy BinaryAccuracy CategoricalAccuracy SparseCategoricalAccuracy TopKCategoricalAccuracy AUC
    Precision Recall Mean Sum MeanMetricWrapper DTypePolicy FloatDTypePolicy Policy Functional Sequential
    Model InputSpec KerasTensor __tensor__ __numpy__ __keras_tensor__ __tuple__ __typespec__
""")
#: built-in layers that read a file named in their config (a vocabulary path) when they are built
FILE_READING_LAYERS = frozenset({"StringLookup", "IntegerLookup", "TextVectorization"})
#: keys under which a Keras config nests layers: one layer, or a list of them
_LAYER_KEYS = frozenset({"layer", "backward_layer", "forward_layer", "cell"})
_LAYER_LIST_KEYS = frozenset({"layers", "cells"})


def scan_keras_config_json(ctx: Context, raw: bytes, where: str) -> None:
    try:
        config = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        ctx.emit("BASTION-PARSE", Severity.HIGH, where, "", f"Keras config is not valid JSON ({exc})")
        return
    scan_keras_config(ctx, config, where)


def _is_keras_module(module: str) -> bool:
    return module == "keras" or module.startswith(("keras.", "tf_keras", "tensorflow.keras", "tensorflow.python.keras"))


def scan_keras_config(ctx: Context, config: Any, where: str, prefix: str = "", root_is_layer: bool = True) -> None:
    """Walk a config tree (iteratively: configs can be deep) and flag what runs code on load.

    ``root_is_layer``: the tree is a model config (``model_config``, ``config.json``), so its root is a
    layer too; a ``training_config`` is not.
    """
    # (node, path, role): role "layer" for a layer's dict, "layers" for a list of layers, "" otherwise
    todo: list[tuple[Any, str, str]] = [(config, "", "layer" if root_is_layer else "")]
    seen = 0
    while todo and seen < _MAX_NODES:
        node, path, role = todo.pop()
        seen += 1
        if isinstance(node, list):
            item_role = "layer" if role == "layers" else ""
            todo.extend((v, f"{path}[{i}]", item_role) for i, v in enumerate(node))
            continue
        if not isinstance(node, dict):
            continue
        cls = node.get("class_name")
        name = node.get("config", {}).get("name") if isinstance(node.get("config"), dict) else None
        label = f"{prefix}{path or '/'}" + (f" ({cls} {name!r})" if cls else "")
        reported = False
        if cls == "Lambda":
            fn = node.get("config", {}).get("function") if isinstance(node.get("config"), dict) else None
            ftype = node.get("config", {}).get("function_type") if isinstance(node.get("config"), dict) else None
            if isinstance(fn, (list, tuple)) or ftype == "lambda" or (isinstance(fn, dict)
                                                                       and fn.get("class_name") == "__lambda__"):
                ctx.emit("BASTION-KERAS-LAMBDA", Severity.CRITICAL, where, label,
                         "Lambda layer carries marshalled Python bytecode that runs when the model is loaded")
            else:
                ctx.emit("BASTION-KERAS-CUSTOM", Severity.HIGH, where, label,
                         f"Lambda layer calls the Python function {fn!r}")
        elif cls == "__lambda__":
            ctx.emit("BASTION-KERAS-LAMBDA", Severity.CRITICAL, where, label,
                     "serialized lambda with marshalled Python bytecode")
        module = node.get("module")
        if isinstance(module, str) and cls and not _is_keras_module(module):
            ctx.emit("BASTION-KERAS-CUSTOM", Severity.HIGH, where, label,
                     f"object {cls!r} comes from module {module!r}, outside Keras (imported when loaded)")
            reported = True
        elif isinstance(module, str) and isinstance(cls, str) and cls not in BUILTIN_LAYERS \
                and cls not in KERAS_CONFIG_OBJECTS:
            ctx.emit("BASTION-KERAS-CUSTOM", Severity.HIGH, where, label,
                     f"{module}.{cls} is not a reviewed Keras layer or config object (a keras module is not "
                     "trusted for its name: keras also holds file and network helpers)")
            reported = True
        conf = node.get("config")
        if cls in FILE_READING_LAYERS and isinstance(conf, dict) and isinstance(conf.get("vocabulary"), str):
            ctx.emit("BASTION-KERAS-CUSTOM", Severity.HIGH, where, label,
                     f"{cls} reads its vocabulary from the file {conf['vocabulary']!r} when built")
            reported = True
        registered = node.get("registered_name")
        if isinstance(registered, str) and ">" in registered and not registered.startswith("keras"):
            ctx.emit("BASTION-KERAS-CUSTOM", Severity.HIGH, where, label,
                     f"custom registered object {registered!r} (its code must be importable to load)")
            reported = True
        if (role == "layer" and not reported and isinstance(cls, str) and not isinstance(module, str)
                and cls not in BUILTIN_LAYERS):
            # Keras 2 names no module: the class is found among custom objects, i.e. code outside Keras
            ctx.emit("BASTION-KERAS-CUSTOM", Severity.HIGH, where, label,
                     f"layer class {cls!r} is not a built-in Keras layer: loading looks it up among custom "
                     "objects (code from outside Keras, run when the model is built)")
        for key, value in node.items():
            if isinstance(value, (dict, list)):
                child = ""
                if key in _LAYER_LIST_KEYS or (key == "cell" and isinstance(value, list)):
                    child = "layers"
                elif key in _LAYER_KEYS:
                    child = "layer"
                todo.append((value, f"{path}/{key}", child))
