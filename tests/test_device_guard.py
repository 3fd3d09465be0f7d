"""A guard that keeps the model path device- and dtype-correct (docs/architecture.md, "Deployment"): tensors and modules follow the model.

Two rules, checked on the source of `sr_search/` (AST, so it fails on CPU for code that would only break on a GPU):

1. A tensor factory (`torch.zeros`, `torch.tensor`, `torch.arange`, ...) names its `device=` (and, when it makes
   floating-point values, its `dtype=`), or is placed at once with `.to(...)`. Factories inside `__init__` are
   build time: they make parameters and buffers on the default device, which travel with the module's `.to()`.
   `*_like` and `tensor.new_*` follow their source and are always fine.
2. On the deploy path (methods that fuse a trained block into its inference form, and the fusion algebra), a
   module with weights is made with `device=` and `dtype=`: it must land where the trained model lives.

Code that is CPU-only by design is listed in ALLOWED with the reason; keep the list short.
"""

import ast
from pathlib import Path

import sr_search

ROOT = Path(sr_search.__file__).parent

#: factories whose values are indices (integers): a device is enough
INDEX_FACTORIES = {"arange", "randint", "randperm"}
FLOAT_FACTORIES = {"zeros", "ones", "empty", "full", "rand", "randn", "eye", "linspace", "logspace", "tensor",
                   "as_tensor"}
#: nn modules that own parameters or buffers (containers and activations without weights are placement-free)
WEIGHTED_MODULES = {"Conv2d", "ConvTranspose2d", "Linear", "BatchNorm2d", "PReLU", "LayerNorm", "GroupNorm",
                    "Conv1d", "Conv3d", "Embedding"}
#: methods and modules that turn a trained model into its deployed form
DEPLOY_METHODS = {"to_deploy", "kernel", "fuse", "deploy"}
DEPLOY_MODULES = {"model/blocks/fuse.py", "model/deploy.py"}

#: (file relative to sr_search/, enclosing function) -> why the factory there may ignore the model's placement
ALLOWED = {
    ("run/data.py", "_resize_matrix"): "MATLAB bicubic weights are built once in float64 on the CPU, cached, and moved "
                                   "to the image's device and dtype where they are applied (`_resize_dim`)",
    ("run/data.py", "batch"): "patch positions are drawn from a CPU generator so a seed gives the same patches on "
                          "every device; only Python floats leave it",
    ("run/data.py", "_taps"): "the taps of a 1-D resize are built once in float64 on the CPU and cached, like "
                          "`_resize_matrix`; `_resize_dim` moves what it applies to the image's device and dtype",
    ("run/data.py", "_resize_dim"): "index arithmetic over the CPU tap table; the gathered indices move to the "
                                "image's device (`.to(x.device)`) before they touch it",
    ("run/data.py", "cut"): "the host half of the batch feed: uint8 buffers (pinned for a non-blocking copy) and "
                        "draws from a CPU generator; `finish` copies the batch to the model's device and dtype",
    ("model/cost.py", "count_macs"): "thop counts on the meta device, or on a CPU float32 copy when an op has no meta "
                               "kernel; counting never touches the model being trained",
}


def _calls(tree: ast.AST):
    """(call, enclosing function name, the call's parent) for every call in the module."""
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func, up = "<module>", parents.get(node)
        while up is not None:
            if isinstance(up, (ast.FunctionDef, ast.AsyncFunctionDef)):
                func = up.name
                break
            up = parents.get(up)
        yield node, func, parents.get(node)


def _attr_chain(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _keywords(call: ast.Call) -> set[str]:
    return {k.arg for k in call.keywords if k.arg}


def _placed_at_once(call: ast.Call, parent: ast.AST | None) -> bool:
    """`torch.rand(...).to(device, dtype)`: the factory is the receiver of an immediate `.to(...)`."""
    return isinstance(parent, ast.Attribute) and parent.attr == "to" and parent.value is call


def violations(source: str, rel: str) -> list[str]:
    found = []
    deploy_module = rel in DEPLOY_MODULES
    for call, func, parent in _calls(ast.parse(source)):
        name = _attr_chain(call.func)
        where = f"{rel}:{call.lineno} in {func}()"
        if (rel, func) in ALLOWED:
            continue
        if name.startswith("torch.") and name.count(".") == 1:
            factory = name.split(".")[1]
            if factory not in INDEX_FACTORIES | FLOAT_FACTORIES or func == "__init__":
                continue
            if _placed_at_once(call, parent):
                continue
            missing = {"device"} | ({"dtype"} if factory in FLOAT_FACTORIES else set())
            missing -= _keywords(call)
            if missing:
                found.append(f"{where}: {name}(...) without {', '.join(sorted(missing))}= (make it on the "
                             f"source tensor's device/dtype, e.g. src.new_zeros(...), or allowlist it with a reason)")
        elif name.startswith("nn.") and name.split(".")[-1] in WEIGHTED_MODULES:
            if not (deploy_module or func in DEPLOY_METHODS):
                continue
            missing = {"device", "dtype"} - _keywords(call)
            if missing:
                found.append(f"{where}: {name}(...) on the deploy path without {', '.join(sorted(missing))}= "
                             f"(the deployed module must live where the trained one lives)")
    return found


def test_model_path_creates_tensors_and_modules_where_the_model_lives():
    problems = []
    for path in sorted(ROOT.rglob("*.py")):
        problems += violations(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())
    assert not problems, "\n".join(problems)


def test_every_allowlisted_place_still_exists_and_says_why():
    for (rel, func), reason in ALLOWED.items():
        tree = ast.parse((ROOT / rel).read_text(encoding="utf-8"))
        names = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        assert func in names, f"ALLOWED names {rel}:{func}(), which no longer exists: drop the entry"
        assert len(reason) > 40


def test_the_guard_catches_what_broke_the_gpu_path():
    """The landed code's mistakes, as the guard sees them (so the guard itself cannot silently pass)."""
    landed = '''
def conv_kernel(conv):
    w = conv.weight
    b = torch.zeros(w.shape[0], dtype=w.dtype)
    return w, b

def to_conv(kernel):
    w, b = kernel
    return nn.Conv2d(w.shape[1], w.shape[0], 3, padding=1)

class EdgeBranch:
    def __init__(self):
        self.mask = torch.tensor([1.0])

    def kernel(self):
        dense = torch.zeros(4, 4, 3, 3)
        idx = torch.arange(4)
        return dense, idx
'''
    found = violations(landed, "model/blocks/fuse.py")
    assert len(found) == 4, found  # conv_kernel's zeros, to_conv's Conv2d, kernel's zeros and arange
    assert not any("__init__" in f for f in found)
    fixed = landed.replace("torch.zeros(w.shape[0], dtype=w.dtype)", "w.new_zeros(w.shape[0])")
    assert len(violations(fixed, "model/blocks/fuse.py")) == 3
