"""tf_lth's absl flags (docs/architecture.md, Data flow of a lottery run) and their conversion into a `Config`.

CLI layer. Shared by `tf_lth.train` and `tf_lth.tune`. Bad flags print one line and exit 2.
One flag per `Config` field, made from the field's declaration (`tf_lth.core.config.setting`):
its name, type, default, help text, allowed names and preset default.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from tf_lth.core import config as config_lib

FLAGS = flags.FLAGS
# absl's flag kind for each `Config` value type; a tuple setting is a comma-separated string
_KINDS = {str: "string", int: "integer", float: "float", bool: "boolean", tuple: "string"}


def names() -> tuple:
    """tf_lth's own flag names: one per `Config` field, in declaration order."""
    return tuple(field.name for field in config_lib.settings())


def help_text(field) -> str:
    """A setting's flag help: its declared help, its allowed names, its preset default."""
    text = field.metadata["help"]
    if field.metadata["choices"]:
        text += f" Allowed: {', '.join(field.metadata['choices'])}."
    if field.metadata["preset"]:
        text += f" Default: {config_lib.preset_text(field.name)}."
    return text


def define_flags() -> None:
    """One absl flag per `Config` field (`tf_lth.core.config.setting`), defined once."""
    if names()[0] in FLAGS:
        return
    for field in config_lib.settings():
        kind = config_lib.value_type(field)
        value = field.default
        if kind is tuple:
            value = ",".join(str(item) for item in value)
        getattr(flags, f"DEFINE_{_KINDS[kind]}")(field.name, value, help_text(field))


def values() -> dict:
    """tf_lth's flags as parsed: name -> value (None where unset with no default)."""
    return {name: FLAGS[name].value for name in names()}


def flagfile_lines(flag_values: dict) -> list:
    """`flag_values` (name -> value) as flagfile lines, in flag order, without the unset
    ones (None) and without --resume and --overwrite (how a run starts, not which run)."""
    lines = []
    for field in config_lib.settings():
        value = flag_values.get(field.name)
        if value is None or not field.metadata["flagfile"]:
            continue
        if isinstance(value, bool):
            lines.append(f"--{field.name}" if value else f"--no{field.name}")
        else:
            lines.append(f"--{field.name}={value}")
    return lines


def own_flags_text() -> str:
    """tf_lth's flags as a re-runnable flagfile (absl's dump holds every module's flags)."""
    return "\n".join(flagfile_lines(values())) + "\n"


def to_config() -> config_lib.Config:
    return config_lib.make(**values())


def fail(message: str) -> None:
    """One line on stderr, exit status 2: the CLI's answer to bad input."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    os._exit(2) if os.environ.get("TF_LTH_HARD_EXIT") else sys.exit(2)


def parse_flags(argv):
    """absl's parser, but one line and exit status 2 on bad flags or flagfiles."""
    for argument in argv[1:]:
        if argument.startswith("--flagfile="):
            path = argument.split("=", 1)[1]
            if not os.path.isfile(path):
                fail(f"--flagfile={path!r}: no such file; allowed: a readable flagfile.")
    try:
        return FLAGS(argv)
    except flags.Error as error:
        message = str(error).splitlines()[0]
        if isinstance(error, flags.CantOpenFlagFileError):  # absl words it "ERROR:: ..."
            message = "--flagfile: " + message.replace("ERROR:: ", "", 1)
        fail(message)
    except (OSError, UnicodeDecodeError) as error:
        fail(f"--flagfile: cannot read ({error})")
