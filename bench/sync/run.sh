#!/bin/sh
# IMAP sync benchmark: mailsync (SQLite and PostgreSQL) beside mbsync (isync)
# in one run, against one generated mailbox in a local Dovecot, over plain
# IMAP and TLS. See docs/benchmarks.md ("IMAP sync").
#
#   bench/sync/run.sh            # 20,000 messages, 3 rounds
#   MAILSYNC_BENCH_N=5000 MAILSYNC_BENCH_ROUNDS=1 bench/sync/run.sh
#
# Each round times mbsync and mailsync back to back on each transport; the
# ratios are taken within a round and their median is the result.
# MAILSYNC_BENCH_POSTGRES names the PostgreSQL server (a postgres:// URL
# whose user may CREATE DATABASE); "none" skips PostgreSQL.
# MAILSYNC_BENCH_OUT=FILE also writes the table to FILE.
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

for pkg in isync:mbsync dovecot-imapd:dovecot; do
	name=${pkg%%:*} cmd=${pkg##*:}
	if ! command -v "$cmd" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$cmd" ]; then
		if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
			echo "installing $name (Debian package)" >&2
			apt-get install -y "$name" >/dev/null || { apt-get update >/dev/null && apt-get install -y "$name" >/dev/null; }
		else
			echo "$cmd is missing: apt-get install $name" >&2
			exit 1
		fi
	fi
done

pg=${MAILSYNC_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
if [ "$pg" = none ]; then
	pg=
elif ! (command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432); then
	echo "PostgreSQL is not answering on 127.0.0.1:5432: SQLite only" >&2
	pg=
fi

echo "go: $(go version)"
echo "nproc: $(nproc)"
echo "mbsync: $(mbsync --version)"
echo "dovecot: $(/usr/sbin/dovecot --version 2>/dev/null || dovecot --version)"
echo "load: $(cat /proc/loadavg)"
MAILSYNC_BENCH=1 MAILSYNC_BENCH_ROUNDS=${MAILSYNC_BENCH_ROUNDS:-3} MAILSYNC_TEST_POSTGRES="$pg" exec go test -tags bench ./bench/sync -run '^TestSyncBenchmark$' -count=1 -v -timeout 90m
