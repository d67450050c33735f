#!/bin/sh
# Site mail benchmark: 2,000 messages over one SMTP submission connection
# beside msmtp (one process per message) and "mailsync sendmail" (one
# process per message), in one run, into the same "mailsync serve".
# See docs/benchmarks.md, "Site mail submission".
#
#   bench/submission/run.sh                 # 2,000 messages per path
#   bench/submission/run.sh -n 500          # any flag of the Go program (go run ./bench/submission -help)
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

if ! command -v msmtp >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "installing msmtp (Debian package)" >&2
		apt-get install -y msmtp >/dev/null || { apt-get update >/dev/null && apt-get install -y msmtp >/dev/null; }
	else
		echo "msmtp is missing: apt-get install msmtp" >&2
		exit 1
	fi
fi

bin=$(mktemp -d "${TMPDIR:-/tmp}/mailsync-bench-bin.XXXXXX")
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/mailsync" ./cmd/mailsync
go build -o "$bin/bench" ./bench/submission

echo "go: $(go version)"
echo "msmtp: $(msmtp --version | head -n1)"
echo "nproc: $(nproc)"
"$bin/bench" -mailsync "$bin/mailsync" "$@"
