package testpeer

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
)

// PostgresEnv names the environment variable holding the URL of a
// PostgreSQL server on which tests may create and drop databases, e.g.
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable (as in CI).
const PostgresEnv = "MAILSYNC_TEST_POSTGRES"

// postgresTimeout bounds each administrative step, so that a wedged server
// fails the test instead of hanging it.
const postgresTimeout = 30 * time.Second

// PostgresDSN creates a fresh, empty database named mailsync_t_<random hex>
// on the server named by MAILSYNC_TEST_POSTGRES and returns a URL for it:
// the same URL with the database path replaced. t.Cleanup drops the
// database, closing any connection still open to it, after the cleanups the
// test registered later (closing its pool, say) have run.
//
// When the variable is unset or the server cannot be reached, PostgresDSN
// calls Missing: the test skips, or fails if MAILSYNC_TEST_REQUIRE lists
// "postgres". A variable that is not a postgres:// URL fails the test.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	raw := os.Getenv(PostgresEnv)
	if raw == "" {
		Missing(t, "postgres", PostgresEnv+" is not set")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("%s must be a postgres:// URL, got %q", PostgresEnv, redactURL(raw))
	}

	admin, err := sql.Open("pgx", raw)
	if err != nil {
		t.Fatalf("open %s: %v", u.Redacted(), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), postgresTimeout)
	defer cancel()
	if err := admin.PingContext(ctx); err != nil {
		_ = admin.Close()
		Missing(t, "postgres", "cannot connect to "+u.Redacted()+": "+err.Error())
	}

	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	name := "mailsync_t_" + hex.EncodeToString(b[:])
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+ident); err != nil {
		_ = admin.Close()
		t.Fatalf("create database %s on %s: %v", name, u.Redacted(), err)
	}
	t.Cleanup(func() {
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), postgresTimeout)
		defer cancel()
		// FORCE (PostgreSQL 13+) ends sessions the test left open.
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s on %s: %v", name, u.Redacted(), err)
		}
	})

	dsn := *u
	dsn.Path = "/" + name
	dsn.RawPath = ""
	return dsn.String()
}

// redactURL hides a password in a string that may not parse as a URL.
func redactURL(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return "(unparseable)"
}
