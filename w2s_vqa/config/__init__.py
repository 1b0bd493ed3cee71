"""Experiment configs: Python files with a `get_config()` that returns a ConfigDict.

As in big_vision, a config is a small program; the run on a pod and the run on a laptop
share the file and differ by `--set key=value` overrides.

    schema   every key with its default (`defaults()`), the shared constants, ConfigError
    files    reading a config file or a shipped one by name, overrides, key checks, diffs
"""

from w2s_vqa.config.schema import (ConfigError, DEFAULT_CONFIG, DEFAULT_RULES, EVAL_KINDS, MESH_AXES, NAME_LIST_KEYS, RESUME_SAFE_KEYS, SHIPPED_CONFIGS, SHORTHAND_EVAL, VAL_PAIRS_SHORTHAND, defaults, ensure_eval, eval_entry, normalize_name_lists)
from w2s_vqa.config.files import (apply_overrides, as_json, check_known_keys, config_differences, flatten, from_section, load_config, parse_value, resolve_config_path, shipped_configs)
