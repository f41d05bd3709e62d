#!/bin/sh
# FastNetMon Advanced: connect it to fnm-escalator. Run once as root; replace TOKEN with a token of
# the notify role (its name is "fastnetmon" in the example config).
set -eu
TOKEN="${1:?usage: $0 TOKEN}"

# Either the web callback (the JSON document is POSTed as is, Basic auth from the URL)...
fcli set main web_callback_enabled enable
fcli set main web_callback_url "http://fastnetmon:${TOKEN}@127.0.0.1:8650/api/v1/notifications"
fcli set main web_callback_attack_status_updates true

# ...or the JSON notify script (install deploy/notify-fnm-escalator.sh first). Either one is
# enough; both at once are harmless (duplicates fold into one ban episode).
# fcli set main notify_script_enabled enable
# fcli set main notify_script_path /usr/local/bin/notify-fnm-escalator
# fcli set main notify_script_format json

# The REST API, polled by fnm-escalator for the ban list and live per-host counters
# ([fastnetmon] api_url, api_user, api_password in fnm-escalator's config).
fcli set main web_api_login admin
fcli set main web_api_password "change-this-password"

fcli commit
