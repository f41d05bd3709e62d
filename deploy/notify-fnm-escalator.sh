#!/bin/sh
exec /usr/local/bin/fnm-escalator notify --config /etc/fnm-escalator/config.toml "$@"
