"""What `dacli config` checks beyond the schema and `config.validate`: the files and directories a run
would read, with no network and no model loaded, so that a researcher checking a config sees what a
run would refuse. (The stages check the same again, and hub ids against the hub, before any engine.)"""
from pathlib import Path

from .errors import DacliError
from .models import locate


def check(cfg) -> None:
    from .compose import msm_spec_config
    from .spec import load_spec, names

    load_spec(cfg.spec, names(cfg))  # the spec file exists and parses
    if cfg.msm.spec:
        load_spec(msm_spec_config(cfg), names(cfg))
    if cfg.model.name_or_path:
        locate(cfg.model.name_or_path, "model.name_or_path", network=False)
    for key, engine in (("generator", cfg.generator), ("judge", cfg.judge), ("eval.engine", cfg.eval.engine),
                        ("eval.grader.engine", cfg.eval.grader.engine), ("eval.monitor.engine", cfg.eval.monitor.engine)):
        if engine.model_path and engine.backend != "openai":
            locate(engine.model_path, f"{key}.model_path", network=False)
    if cfg.eval.checkpoint not in ("auto", "base"):
        locate(cfg.eval.checkpoint, "eval.checkpoint", network=False)
    source = cfg.data.source
    if source not in ("bundled", "generated") and not source.startswith("hf:") and not Path(source).expanduser().is_file():
        raise DacliError(f"data.source={source}: no such file (a .jsonl, .csv or .parquet file, bundled, "
                         f"generated, or hf:<dataset>)")
