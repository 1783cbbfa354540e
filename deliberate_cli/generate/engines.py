"""The generator's and the judge's engines, loaded on first use only; one engine when they are the same
model on the same backend (a 135M model on a laptop never holds two copies)."""
from ..backends import Backend, open_backend
from ..models import locate, resolve


def model_of(engine, key: str) -> str:
    """engine.model_path, checked (models.locate) unless a server serves it by name (an OpenAI-compatible
    one, or a model Inspect names)."""
    return engine.model_path if engine.backend == "openai" or engine.model else locate(engine.model_path, key)


def model_identity(engine) -> dict:
    """Which model an engine runs, not where or how fast: what keys of outputs made with the engine's
    own sampling settings hold (the MSM corpus and the prompt pool)."""
    identity = {k: engine[k] for k in ("backend", "model_path", "served_model_name", "dtype", "seed")}
    if engine.model:  # only when set, so that the keys of outputs made before the field existed still hold
        identity["model"] = engine.model
    return identity


class Engines:
    """Loads the generator and the judge on first use only; one engine when they are the same."""

    def __init__(self, cfg):
        self.cfg, self.current, self.key = cfg, None, None
        g, j = cfg.generator, cfg.judge
        self.generator_path = (g.model if g.model and not g.model_path else
                               model_of(g, "generator.model_path") if g.model_path else resolve(cfg.model))
        if j.enabled and j.model_path:  # before any engine starts, like the generator's
            model_of(j, "judge.model_path")

    def _get(self, engine, path: str, role: str) -> Backend:
        key = (engine.backend, engine.model, path, engine.base_url)
        if key != self.key:
            self.close()
            self.current, self.key = open_backend(engine, path, self.cfg.model, role=role), key
        return self.current

    def generator(self) -> Backend:
        return self._get(self.cfg.generator, self.generator_path, "generator")

    def judge_path(self) -> str:
        j = self.cfg.judge
        return j.model_path or j.model or (j.served_model_name if j.backend == "openai" else None) or self.generator_path

    def _judge_engine(self):
        j = self.cfg.judge
        same = (j.backend, j.model, self.judge_path()) == (self.cfg.generator.backend, self.cfg.generator.model,
                                                           self.generator_path)
        return self.cfg.generator if same else j

    def judge(self) -> Backend:
        engine = self._judge_engine()
        return self._get(engine, self.judge_path(), "generator" if engine is self.cfg.generator else "judge")

    def judge_continues(self) -> bool:
        """Whether the judge can be asked to continue after `Score:` (a local engine can; an OpenAI-compatible
        server or a model Inspect names takes no assistant prefix)."""
        engine = self._judge_engine()
        return engine.backend != "openai" and not engine.model

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
        self.current, self.key = None, None
