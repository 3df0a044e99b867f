"""One-line ``repr`` for the result types: what a REPL or a log line should show of them.

    Evaluation(n=10000, accuracy=0.9966, loss=0.0123)
    TrainResult(architecture='cnn-fast', accuracy=0.9911, epochs=2, train_seconds=8.4213, model_path='m.safetensors')

Fields that are None or False say nothing and are left out; floats are rounded; arrays, models and long
lists are named by their shape, class or length, never printed whole (a 28x28 array is ~30 lines).
"""

from __future__ import annotations

LIST_SHOWN = 4  # longer lists are shown by their length


def compact_repr(obj, fields: dict, places: int = 4) -> str:
    """``Type(name=value, ...)`` for the given name -> value pairs."""
    parts = [f"{name}={_short(value, places)}" for name, value in fields.items()
             if value is not None and value is not False]
    return f"{type(obj).__name__}({', '.join(parts)})"


def _short(value, places: int) -> str:
    if isinstance(value, float):
        return repr(round(value, places))
    shape = getattr(value, "shape", None)
    if shape is not None and not isinstance(value, (int, float)):  # numpy arrays and torch tensors
        return f"<{'x'.join(map(str, shape))} {getattr(value, 'dtype', '')}>".replace(" >", ">")
    if hasattr(value, "parameters") and callable(value.parameters):  # a torch module
        return f"<{type(value).__name__}>"
    if isinstance(value, (list, tuple)) and len(value) > LIST_SHOWN:
        return f"<{len(value)} items>"
    if isinstance(value, dict):
        return f"<{len(value)} keys>"
    return repr(value)
