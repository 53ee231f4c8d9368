"""impvlm: the Imp / LLaVA-Phi model core and training pipeline.

Importing :mod:`impvlm.modeling` (or using ``impvlm.ImpForCausalLM``) registers :class:`ImpConfig` and
:class:`ImpForCausalLM` with transformers' Auto classes, so ``AutoConfig`` / ``AutoModelForCausalLM.from_pretrained(path)`` load impvlm
checkpoints without ``trust_remote_code``. (The import name is ``impvlm`` because Python 3.11's
deprecated stdlib module ``imp`` shadows a package of that name; the console command is ``imp``.)
"""

from impvlm.lazy import lazy_getattr

#: Public names and the module each lives in. They are imported on first use, so that importing a
#: light submodule (errors, templates, image processing: what the exported runtimes need) does not
#: pull torch and transformers into a deployment process.
_EXPORTS = {
    "ImpConfig": "impvlm.config",
    "ImpForCausalLM": "impvlm.modeling",
    "PRESETS": "impvlm.presets",
    "build_config": "impvlm.presets",
    "get_preset": "impvlm.presets",
    "TEMPLATES": "impvlm.templates",
    "get_template": "impvlm.templates",
}

__getattr__ = lazy_getattr(__name__, _EXPORTS)

__version__ = "0.1.0"
__all__ = [
    "PRESETS",
    "TEMPLATES",
    "ImpConfig",
    "ImpForCausalLM",
    "build_config",
    "get_preset",
    "get_template",
]
