"""The default config: a tiny random student trained on the demo pool, on one CPU.

Every key and its meaning: w2s_vqa.config.defaults(), which is exactly this run.
"""

from w2s_vqa.config import defaults


def get_config():
    return defaults()
