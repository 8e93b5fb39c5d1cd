#!/usr/bin/env bash
# The generated "bad input" sweep: schemathesis (PyPI) against the running
# debug binary, every operation of /openapi.json, every check.
#
#   scripts/schemathesis.sh            # MAX_EXAMPLES=50 per operation, MAX_TIME=240 s
#
# 1. installs schemathesis into target/schemathesis-venv (once);
# 2. builds and starts the debug binary on a fresh SQLite file, a free port;
# 3. creates with the CLI an admin (enterprise plan, 60,000,000 requests per
#    minute, so that the plan's limit never trips), an admin API key, and a
#    confidential client (client_credentials, --introspect);
# 4. runs `schemathesis run --checks all` with the API key as the `bearer`
#    scheme (/v1, registration) and the client's credentials as the
#    `client_secret_basic` scheme (token, introspection, revocation, PAR);
# 5. prints the number of test cases and exits non-zero on any failure
#    (3: schemathesis could not be installed).
#
# The limit of unauthenticated /v1 requests per address
# (DZDESK_AUTH_FAILURES_PER_MIN) is raised too, because schemathesis sends many
# requests without credentials; rate limits stay on (429 is documented).
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES=${MAX_EXAMPLES:-50}
MAX_TIME=${MAX_TIME:-240}
venv=target/schemathesis-venv
st=$venv/bin/schemathesis

if ! "$st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "==> installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  # Exit 3: it cannot be installed here (no venv/pip, no registry);
  # scripts/test.sh reports that as a skip, except under CI=true.
  python3 -m venv "$venv" || exit 3
  "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION" || exit 3
fi

cargo build -q --bin dzdesk-auth
bin=target/debug/dzdesk-auth

work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  if [ -n "${SCHEMATHESIS_KEEP:-}" ]; then
    echo "kept: $work (it holds the run's API keys and client secret: delete it when done)" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export DATABASE_URL="sqlite://$work/st.db" DZDESK_LISTEN=127.0.0.1:$port \
  DZDESK_ISSUER=http://127.0.0.1:$port RUST_LOG=${RUST_LOG:-warn} \
  DZDESK_AUTH_FAILURES_PER_MIN=100000

"$bin" migrate >/dev/null
echo 'schemathesis admin password' |
  "$bin" user create --email admin@example.com --role admin --password-stdin >/dev/null
"$bin" user set-plan --email admin@example.com --plan enterprise --rate-limit 60000000 >/dev/null
api_key=$("$bin" api-key create --email admin@example.com --name schemathesis --scope admin |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
# A second admin account, a bystander: the operations that could take the
# run's own credential away (rotating or revoking a key, the IP allowlist)
# run as the bystander, on keys of the bystander's, so that the rest of the
# run keeps a working, unrotated admin key (a stateful link from the key
# list rotated the run's key once, and every later call that manages
# credentials was 403).
echo 'schemathesis bystander password' |
  "$bin" user create --email bystander@example.com --role admin --password-stdin >/dev/null
"$bin" user set-plan --email bystander@example.com --plan enterprise --rate-limit 60000000 >/dev/null
bystander_key=$("$bin" api-key create --email bystander@example.com --name bystander --scope admin |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
client=$("$bin" client create --name schemathesis \
  --scope "requests:read users:read" --grant-type client_credentials --introspect)
client_id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["client_id"])' "$client")
client_secret=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["client_secret"])' "$client")

"$bin" serve >"$work/server.log" 2>&1 &
pid=$!
healthy=
for _ in $(seq 1 100); do
  if curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then healthy=1; break; fi
  sleep 0.1
done
if [ -z "$healthy" ]; then
  echo "the server did not become healthy in 10 s; its log:" >&2
  cat "$work/server.log" >&2
  exit 1
fi
base=http://127.0.0.1:$port

# Real ids, so that the operations on one key or one user reach their
# success paths too (random ids only ever find 404): a key the admin key
# minted, for the usage log; keys the bystander minted, to rotate and to
# revoke; a user for getUser and updateUser and another for deleteUser
# (never the admin the run authenticates as).
created_id() { # method path bearer body
  curl -sf -X "$1" -H "Authorization: Bearer $3" -H 'Content-Type: application/json' -d "$4" "$base$2" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["id"])'
}
usage_key_id=$(created_id POST /v1/api-keys "$api_key" '{"name": "usage target", "scopes": ["requests:read"]}')
rotate_key_id=$(created_id POST /v1/api-keys "$bystander_key" '{"name": "rotation target", "scopes": ["requests:read"]}')
revoke_key_id=$(created_id POST /v1/api-keys "$bystander_key" '{"name": "revocation target", "scopes": ["requests:read"]}')
target_user_id=$(created_id POST /v1/users "$api_key" '{"email": "target@example.com", "password": "schemathesis target password"}')
doomed_user_id=$(created_id POST /v1/users "$api_key" '{"email": "doomed@example.com", "password": "schemathesis doomed password"}')

# An OpenID Connect access token of the admin (code flow with curl, as in
# README's walkthrough), so that UserInfo reaches its success path: with
# the API key every call would be 401 (API keys never carry openid).
oidc=$("$bin" client create --name schemathesis-oidc --scope "openid email profile" \
  --redirect-uri http://127.0.0.1/cb)
oidc_id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["client_id"])' "$oidc")
oidc_secret=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["client_secret"])' "$oidc")
jar=$work/jar
csrf_of() { grep -o 'name="csrf_token" value="[^"]*"' | cut -d'"' -f4; }
login_csrf=$(curl -fsS -c "$jar" "$base/login" | csrf_of)
curl -fsS -b "$jar" -c "$jar" -o /dev/null --data-urlencode "csrf_token=$login_csrf" \
  --data-urlencode "email=admin@example.com" --data-urlencode "password=schemathesis admin password" "$base/login"
authorize="$base/oauth/authorize?response_type=code&client_id=$oidc_id&redirect_uri=http://127.0.0.1/cb&scope=openid%20email%20profile&state=st&nonce=n"
consent_csrf=$(curl -fsS -b "$jar" "$authorize" | csrf_of)
location=$(curl -fsS -b "$jar" -o /dev/null -w '%{redirect_url}' --data-urlencode "csrf_token=$consent_csrf" \
  -d decision=approve "$authorize")
code=$(python3 -c 'import sys,urllib.parse as u; print(u.parse_qs(u.urlsplit(sys.argv[1]).query)["code"][0])' "$location")
openid_token=$(curl -fsS -u "$oidc_id:$oidc_secret" -d grant_type=authorization_code --data-urlencode "code=$code" \
  --data-urlencode "redirect_uri=http://127.0.0.1/cb" "$base/oauth/token" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

# Credentials by security scheme of the document: only the operations that
# name a scheme get its credentials.
cat >"$work/schemathesis.toml" <<EOF
[auth.openapi.bearer]
bearer = "$api_key"

[auth.openapi.client_secret_basic]
username = "$client_id"
password = "$client_secret"

# Requests that match the document and still cannot succeed, because their
# validity is state or syntax no JSON Schema states: an opaque cursor the
# API returned, room for one more API key (an account holds at most 100,
# which a run of this size fills), a unique email, an IP address or CIDR, an OAuth code,
# refresh token or redirect URI that must be registered, the registration
# rules of RFC 7591, an authorization request of a registered client, and
# (token, introspection, revocation) that a client authenticates one way
# only, HTTP Basic or client_secret_post, never both (RFC 6749 2.3). For
# those operations alone, a 400 is an accepted answer to schema-valid data.
# A fixed id overrides the ids that stateful links carry, so the operations
# given one take no part in stateful sequences: there the override made a
# link's valid request look like a mutated one ("schema-violating request
# accepted", ST201), or found the fixed resource gone ("created resource not
# found", ST302); and a link from a listing would aim rotate, revoke or
# delete at the run's own key or admin. The coverage and fuzzing phases
# still run them all, on their fixed ids.
[[operations]]
include-operation-id = ["listApiKeyUsage"]
parameters = { "path.id" = "$usage_key_id" }
phases.stateful.enabled = false

[[operations]]
include-operation-id = ["getUser", "updateUser"]
parameters = { "path.id" = "$target_user_id" }
phases.stateful.enabled = false

[[operations]]
include-operation-id = ["deleteUser"]
parameters = { "path.id" = "$doomed_user_id" }
phases.stateful.enabled = false

[[operations]]
include-operation-id = ["rotateApiKey"]
parameters = { "path.id" = "$rotate_key_id" }
headers = { Authorization = "Bearer $bystander_key" }
phases.stateful.enabled = false

[[operations]]
include-operation-id = ["revokeApiKey"]
parameters = { "path.id" = "$revoke_key_id" }
headers = { Authorization = "Bearer $bystander_key" }
phases.stateful.enabled = false

[[operations]]
include-operation-id = ["putIpAllowlist"]
headers = { Authorization = "Bearer $bystander_key" }

[[operations]]
include-operation-id = ["userinfo", "userinfoPost"]
headers = { Authorization = "Bearer $openid_token" }

# Stateful sequences with positive data only: a link fills the path
# parameter a negative case had made invalid, and the then valid request is
# reported as "schema-violating request accepted" (schemathesis issue 2983).
# The coverage and fuzzing phases still send negative data to every operation.
[phases.stateful.generation]
mode = "positive"

[[operations]]
include-operation-id = ["createApiKey", "listUsers", "listApiKeyUsage", "createUser", "updateUser", "putIpAllowlist", "token", "introspect", "revoke", "pushAuthorizationRequest", "registerClient", "updateClient", "authorize", "authorizeDecision"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429"]
EOF

# Every check but unsupported_method: /v1 answers a method a path does not
# serve with 404 NOT_FOUND in the envelope (README, "Endpoints"), by design,
# where that check wants 405 (its per-operation switch does not reach the
# coverage phase that sends those requests, so it is off for the run).
echo "==> schemathesis $SCHEMATHESIS_VERSION: at most $MAX_EXAMPLES examples per operation, $MAX_TIME s"
status=0
# From $work: schemathesis keeps a cache of failures (.schemathesis/) in
# its working directory, which would replay an old run's cases in the next.
(cd "$work" && "$OLDPWD/$st" --config-file "$work/schemathesis.toml" run "http://127.0.0.1:$port/openapi.json" \
  --checks all --exclude-checks unsupported_method --max-examples "$MAX_EXAMPLES" --max-time "$MAX_TIME" --workers 2 \
  --seed "${SEED:-1}" --no-color \
  --report ndjson --report-ndjson-path "$work/events.ndjson") || status=$?

cases=$(python3 - "$work/events.ndjson" <<'EOF'
import json, sys
total = 0
for line in open(sys.argv[1]):
    ev = json.loads(line)
    # One ScenarioFinished per operation and phase, with the cases it ran.
    sc = ev.get("ScenarioFinished")
    if sc:
        total += len(sc.get("recorder", {}).get("cases", {}))
print(total)
EOF
)
echo "schemathesis: test_cases=$cases status=$status"
# The run authenticated throughout: its key still works at the end, and
# still manages credentials (never rotated: a rotated key is refused that).
me=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $api_key" "$base/v1/me")
if [ "$me" != 200 ]; then
  echo "the run's API key answers $me at the end, not 200: later cases ran unauthenticated" >&2
  status=1
fi
manages=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $api_key" \
  -H 'Content-Type: application/json' -d '{"name": "after the run", "scopes": ["requests:read"]}' \
  "$base/v1/api-keys")
# 201, or 400 once the run filled the account's 100 keys; never 401 or 403.
if [ "$manages" != 201 ] && [ "$manages" != 400 ]; then
  echo "the run's API key may no longer mint a key at the end ($manages): it was rotated or lost its rights" >&2
  status=1
fi
if grep -q "panicked" "$work/server.log"; then
  echo "the server panicked:" >&2
  grep -B2 -A5 panicked "$work/server.log" >&2
  status=1
fi
exit "$status"
