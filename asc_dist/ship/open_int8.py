"""An int8 student whose int8 weights are visible as what they are: `nn.Parameter`s of dtype int8.

torch's int8 modules keep their weights in packed objects that `model.parameters()` does not list, and TorchScript
hides the module tree from forward hooks; the DCASE 2025 Task 1 complexity check (torchinfo MACs on the network
input, parameter bytes summed over `model.parameters()` by dtype: CPJKU/dcase2025_task1_inference,
`complexity.py`) therefore sees 0 MACs and 0 bytes in either. Here each int8 convolution and linear layer keeps
its integer weights as an int8 `weight` parameter and its float bias as a `bias` parameter, so the check counts
1 byte per weight, 4 per bias, and the MACs of every layer. The arithmetic is torch's own int8 kernels on the very
same numbers (the packed weights are rebuilt from the parameters on first use), so outputs equal the converted
model's bit for bit.

`open_int8(model)` swaps the modules in a converted (`asc_dist.nets.quantize.convert_int8`) model; `trace_open`
makes it a `torch.fx.GraphModule` that pickles without the student's classes (`load_open` reads it back, also
from a copy of this file inside another package). This file imports nothing but
torch: the DCASE package ships a copy of it.
"""

from __future__ import annotations

import torch
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.quantized as nnq
from torch import nn


class _OpenInt8Layer(nn.Module):
    """Shared storage: int8 weight and float bias as parameters, quantisation constants as buffers."""

    def __init__(self, qweight: torch.Tensor, bias: torch.Tensor | None, out_scale: float, out_zero_point: int, relu: bool):
        super().__init__()
        self.weight = nn.Parameter(qweight.int_repr(), requires_grad=False)
        self.bias = nn.Parameter(bias.detach().float().clone(), requires_grad=False) if bias is not None else None
        if qweight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            self.register_buffer("weight_scales", qweight.q_per_channel_scales().float())
            self.register_buffer("weight_zero_points", qweight.q_per_channel_zero_points())
            self.axis = int(qweight.q_per_channel_axis())
        else:
            self.register_buffer("weight_scales", torch.tensor([qweight.q_scale()], dtype=torch.float32))
            self.register_buffer("weight_zero_points", torch.tensor([qweight.q_zero_point()]))
            self.axis = -1
        self.out_scale, self.out_zero_point, self.relu = float(out_scale), int(out_zero_point), relu
        self._packed = None

    def quantized_weight(self) -> torch.Tensor:
        if self.axis < 0:
            return torch._make_per_tensor_quantized_tensor(self.weight.data, float(self.weight_scales[0]), int(self.weight_zero_points[0]))
        return torch._make_per_channel_quantized_tensor(self.weight.data, self.weight_scales.double(), self.weight_zero_points, self.axis)

    def packed(self):
        if self._packed is None:
            self._packed = self.pack()
        return self._packed

    def __getstate__(self):  # the packed weights are a cache of the parameters: never copied or pickled
        return {**self.__dict__, "_packed": None}

    def _apply(self, fn, recurse=True):  # .float(), .to(...): the parameters may change, so repack on next use
        self._packed = None
        return super()._apply(fn, recurse)


class OpenInt8Conv2d(_OpenInt8Layer):
    """`nnq.Conv2d` / `nniq.ConvReLU2d` with visible int8 weights ("Conv" in the name: torchinfo counts its MACs
    as a convolution's)."""

    def __init__(self, q: nnq.Conv2d):
        super().__init__(q.weight(), q.bias(), q.scale, q.zero_point, isinstance(q, nniq.ConvReLU2d))
        self.stride, self.padding, self.dilation, self.groups = list(q.stride), list(q.padding), list(q.dilation), q.groups
        if q.padding_mode != "zeros":
            raise ValueError(f"padding mode {q.padding_mode!r} is not supported")

    def pack(self):
        return torch.ops.quantized.conv2d_prepack(self.quantized_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        op = torch.ops.quantized.conv2d_relu if self.relu else torch.ops.quantized.conv2d
        return op(x, self.packed(), self.out_scale, self.out_zero_point)


class OpenInt8Linear(_OpenInt8Layer):
    """`nnq.Linear` / `nniq.LinearReLU` with visible int8 weights."""

    def __init__(self, q: nnq.Linear):
        super().__init__(q.weight(), q.bias(), q.scale, q.zero_point, isinstance(q, nniq.LinearReLU))

    def pack(self):
        return torch.ops.quantized.linear_prepack(self.quantized_weight(), self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        op = torch.ops.quantized.linear_relu if self.relu else torch.ops.quantized.linear
        return op(x, self.packed(), self.out_scale, self.out_zero_point)


OPEN = {nnq.Conv2d: OpenInt8Conv2d, nniq.ConvReLU2d: OpenInt8Conv2d, nnq.Linear: OpenInt8Linear, nniq.LinearReLU: OpenInt8Linear}


def open_int8(model: nn.Module) -> nn.Module:
    """Swap, in place, every int8 convolution and linear layer of a converted model for its open twin."""
    for name, child in list(model.named_children()):
        if type(child) in OPEN:
            setattr(model, name, OPEN[type(child)](child))
        elif any(isinstance(p, torch.Tensor) for p in getattr(child, "_weight_bias", lambda: ())() or ()):
            raise ValueError(f"{name}: int8 module {type(child).__name__} has no open form")
        else:
            open_int8(child)
    return model


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _OpenInt8Layer) or super().is_leaf_module(m, qualname)


def trace_open(int8_model: nn.Module) -> torch.fx.GraphModule:
    """A converted int8 student (log-mel in, logits out) with open layers, as a GraphModule: its code is generated
    and its leaves are torch's modules and the open layers of this file, so it unpickles where torch and this file
    are importable, without the student's code. (The front end stays TorchScript: it has shape checks fx cannot
    follow, and no parameters.)"""
    model = open_int8(int8_model).eval()
    graph = _Tracer().trace(model)
    for node in graph.nodes:  # `from __future__ import annotations` leaves strings the generated code cannot import
        node.type = None
    return torch.fx.GraphModule(model, graph, class_name="OpenInt8Student")


def load_open(path, here: str = __name__) -> torch.fx.GraphModule:
    """Unpickle a `trace_open` file; `here` is this file's module name where it is loaded (a copy inside a package)."""
    import pickle
    import types

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            return super().find_class(here if module == __name__ or module == "asc_dist.ship.open_int8" else module, name)

    remap = types.SimpleNamespace(Unpickler=Unpickler, load=pickle.load, __name__="pickle")
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=remap).eval()
