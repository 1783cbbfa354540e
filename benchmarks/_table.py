"""The table the throughput benchmarks end with: both sides' tokens, seconds and tokens/s, and the ratio."""


def print_ratio(header: str, plain: tuple, dacli: tuple, target: float = 0.95, seconds_ratio: bool = False) -> None:
    """plain and dacli are (tokens, seconds), measured in the same run."""
    rates = {name: tokens / seconds for name, (tokens, seconds) in (("plain", plain), ("dacli", dacli))}
    print(header)
    print(f"{'side':8} {'tokens':>8} {'seconds':>8} {'tok/s':>8}")
    for name, (tokens, seconds) in (("plain", plain), ("dacli", dacli)):
        print(f"{name:8} {tokens:8d} {seconds:8.1f} {rates[name]:8.1f}")
    line = f"ratio dacli/plain tokens/s: {rates['dacli'] / rates['plain']:.3f} (target >= {target})"
    if seconds_ratio:
        line += f"; seconds plain/dacli: {plain[1] / dacli[1]:.3f}"
    print(line)
