#!/bin/sh
# Outbox benchmark: mailsync beside msmtp and a bare go-mail loop, in one run,
# against one local STARTTLS + AUTH sink. See docs/benchmarks.md.
#
#   bench/outbox/run.sh                 # 10,000 messages, SQLite (+ PostgreSQL if up on 127.0.0.1:5432), 3 rounds
#   bench/outbox/run.sh -n 2000         # any flag of the Go program (go run ./bench/outbox -help)
#
# MAILSYNC_BENCH_POSTGRES overrides the PostgreSQL server (a postgres:// URL
# whose user may CREATE DATABASE); set it to "none" to skip PostgreSQL.
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
go build -o "$bin/bench" ./bench/outbox

pg=${MAILSYNC_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
if [ "$pg" = none ]; then
	pg=
elif ! (command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432); then
	echo "PostgreSQL is not answering on 127.0.0.1:5432: SQLite only" >&2
	pg=
fi

echo "go: $(go version)"
echo "nproc: $(nproc)"
exec "$bin/bench" -mailsync "$bin/mailsync" -postgres "$pg" -rounds 3 "$@"
