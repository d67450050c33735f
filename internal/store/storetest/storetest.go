// Package storetest opens migrated test databases of both dialects, so that
// every suite runs the same cases on SQLite and on PostgreSQL.
package storetest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/testpeer"
)

// Dialects are the dialects Each runs on.
var Dialects = []store.Dialect{store.SQLite, store.Postgres}

// DSN returns a DSN for a fresh, empty database of dialect d: a file under
// t.TempDir for SQLite, a new database for PostgreSQL (which skips, or fails
// in CI, when no server is configured).
func DSN(t testing.TB, d store.Dialect) string {
	t.Helper()
	if d == store.Postgres {
		return testpeer.PostgresDSN(t)
	}
	return "sqlite://" + filepath.Join(t.TempDir(), "mailsync.db")
}

// Open returns a migrated database of dialect d, closed at cleanup.
func Open(t testing.TB, d store.Dialect) *store.DB {
	t.Helper()
	db := OpenEmpty(t, d)
	if _, err := db.Migrate(context.Background()); err != nil {
		t.Fatalf("migrate %s: %v", d, err)
	}
	return db
}

// OpenEmpty returns an unmigrated database of dialect d, closed at cleanup.
func OpenEmpty(t testing.TB, d store.Dialect) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), DSN(t, d), store.Options{})
	if err != nil {
		t.Fatalf("open %s: %v", d, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Each runs fn as a subtest on a fresh migrated database of every dialect.
func Each(t *testing.T, fn func(t *testing.T, db *store.DB)) {
	t.Helper()
	for _, d := range Dialects {
		t.Run(string(d), func(t *testing.T) {
			fn(t, Open(t, d))
		})
	}
}
