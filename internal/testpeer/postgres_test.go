package testpeer_test

import (
	"database/sql"
	"os"
	"strings"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/mailsync/mailsync/internal/testpeer"
)

func pgOpen(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func TestPostgresDSN(t *testing.T) {
	t.Parallel()
	var name string
	// The subtest's cleanup drops its database before t.Run returns.
	t.Run("fresh database", func(t *testing.T) {
		dsn := testpeer.PostgresDSN(t)
		db := pgOpen(t, dsn)
		ctx := t.Context()
		if err := db.QueryRowContext(ctx, "SELECT current_database()").Scan(&name); err != nil {
			t.Fatalf("current_database(): %v", err)
		}
		if !strings.HasPrefix(name, "mailsync_t_") {
			t.Errorf("current_database() = %q, want mailsync_t_…", name)
		}
		var tables int
		err := db.QueryRowContext(ctx, `SELECT count(*) FROM information_schema.tables
			WHERE table_schema NOT IN ('pg_catalog', 'information_schema')`).Scan(&tables)
		if err != nil {
			t.Fatalf("count tables: %v", err)
		}
		if tables != 0 {
			t.Errorf("fresh database has %d tables, want 0", tables)
		}
		if _, err := db.ExecContext(ctx, "CREATE TABLE t (id bigint PRIMARY KEY)"); err != nil {
			t.Fatalf("create table: %v", err)
		}
		// The pool stays open: the drop must cope with it.

		other := testpeer.PostgresDSN(t)
		if other == dsn {
			t.Errorf("second PostgresDSN() = %q, same as the first", other)
		}
	})
	if name == "" {
		t.Skip("no database was created")
	}

	admin := pgOpen(t, os.Getenv(testpeer.PostgresEnv))
	var n int
	if err := admin.QueryRowContext(t.Context(), "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil {
		t.Fatalf("look up %s: %v", name, err)
	}
	if n != 0 {
		t.Errorf("database %s still exists after cleanup", name)
	}
}

func TestPostgresDSNMissing(t *testing.T) {
	tests := []struct {
		name, env string
	}{
		{"unset", ""},
		{"unreachable", "postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(testpeer.PostgresEnv, tt.env)
			t.Setenv(testpeer.RequireEnv, "")
			var inner *testing.T
			// "expected_skip": CI ignores this one skip, which is the point of the test.
			t.Run("expected_skip", func(t *testing.T) {
				inner = t
				testpeer.PostgresDSN(t)
				t.Errorf("PostgresDSN() returned, want a skip")
			})
			if !inner.Skipped() {
				t.Errorf("PostgresDSN() with %s=%q did not skip", testpeer.PostgresEnv, tt.env)
			}
		})
	}
}
