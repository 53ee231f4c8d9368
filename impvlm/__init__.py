"""impvlm: the Imp / LLaVA-Phi model core and training pipeline.

Importing the package registers :class:`ImpConfig` and :class:`ImpForCausalLM` with transformers'
Auto classes, so ``AutoConfig`` / ``AutoModelForCausalLM.from_pretrained(path)`` load impvlm
checkpoints without ``trust_remote_code``. (The import name is ``impvlm`` because Python 3.11's
deprecated stdlib module ``imp`` shadows a package of that name; the console command is ``imp``.)
"""

from transformers import AutoConfig, AutoModelForCausalLM

from impvlm.config import ImpConfig
from impvlm.modeling import ImpForCausalLM
from impvlm.presets import PRESETS, build_config, get_preset
from impvlm.templates import TEMPLATES, get_template

AutoConfig.register(ImpConfig.model_type, ImpConfig, exist_ok=True)
AutoModelForCausalLM.register(ImpConfig, ImpForCausalLM, exist_ok=True)

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
