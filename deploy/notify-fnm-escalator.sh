#!/bin/sh
exec "${FNM_ESCALATOR_BIN:-/usr/local/bin/fnm-escalator}" notify --config "${FNM_ESCALATOR_CONFIG:-/etc/fnm-escalator/config.toml}" "$@"
