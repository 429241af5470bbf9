"""Logging set up per run: a colour console handler and a text file under config['log_dir']."""
import hashlib
import logging
import os
import uuid
from typing import List, Optional

import colorlog
from recbole.utils import get_local_time
from recbole.utils.logger import RemoveColorFilter, log_colors_config

from recbole_milk import distributed

_HANDLER_TAG = "_recbole_milk_handler"


def init_logger(config) -> Optional[str]:
    """Route the root logger to the console and to a new file in config['log_dir']; return the file's path.

    Unlike logging.basicConfig this also works for the second run in the same process (tests, tuning). In a
    multi-process run only rank 0 writes a file (None elsewhere): the others report errors on the console only.
    """
    level = getattr(logging, str(config["state"] or "INFO").upper(), logging.INFO)
    log_dir = os.path.join(config["log_dir"], config["model"])
    digest = hashlib.md5("".join(map(str, config.final_config_dict.values())).encode()).hexdigest()[:6]
    path = os.path.join(log_dir, f"{config['model']}-{config['dataset']}-{get_local_time()}-{digest}-"
                                 f"{uuid.uuid4().hex[:6]}.log")
    handlers: List[logging.Handler] = []
    if distributed.is_writer():
        os.makedirs(log_dir, exist_ok=True)
        file_handler = logging.FileHandler(path)
        file_handler.setFormatter(logging.Formatter("%(asctime)-15s %(levelname)s  %(message)s",
                                                    "%a %d %b %Y %H:%M:%S"))
        file_handler.addFilter(RemoveColorFilter())
        handlers.append(file_handler)
    stream_handler = logging.StreamHandler()
    stream_handler.setFormatter(colorlog.ColoredFormatter("%(log_color)s%(asctime)-15s %(levelname)s  %(message)s",
                                                          "%d %b %H:%M", log_colors=log_colors_config))
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_TAG, False):
            root.removeHandler(handler)
            handler.close()
    for handler in (stream_handler, *handlers):
        handler.setLevel(level)
        setattr(handler, _HANDLER_TAG, True)
        root.addHandler(handler)
    root.setLevel(level)
    return path if handlers else None
