package store_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
)

func allVersions() []int { return store.Versions() }

func TestMigrateOnceAndReady(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			ctx := context.Background()
			db := storetest.OpenEmpty(t, d)
			if err := db.Ready(ctx); err == nil {
				t.Fatalf("Ready() on an empty database = nil, want an error")
			}
			applied, err := db.Migrate(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(applied, allVersions()) {
				t.Errorf("first Migrate() applied %v, want %v", applied, allVersions())
			}
			again, err := db.Migrate(ctx)
			if err != nil || len(again) != 0 {
				t.Errorf("second Migrate() = %v, %v; want nothing applied", again, err)
			}
			if err := db.Ready(ctx); err != nil {
				t.Errorf("Ready() after migrating = %v", err)
			}
		})
	}
}

// Two instances starting at once on one empty database: both succeed and
// every migration runs exactly once.
func TestMigrateConcurrently(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			ctx := context.Background()
			dsn := storetest.DSN(t, d)
			const instances = 4
			dbs := make([]*store.DB, instances)
			for i := range dbs {
				db, err := store.Open(ctx, dsn, store.Options{})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { db.Close() })
				dbs[i] = db
			}
			var (
				wg      sync.WaitGroup
				mu      sync.Mutex
				applied []int
				errs    []error
			)
			start := make(chan struct{})
			for _, db := range dbs {
				wg.Go(func() {
					<-start
					vs, err := db.Migrate(ctx)
					mu.Lock()
					defer mu.Unlock()
					applied = append(applied, vs...)
					if err != nil {
						errs = append(errs, err)
					}
				})
			}
			close(start)
			wg.Wait()
			if len(errs) > 0 {
				t.Fatalf("concurrent Migrate() errors: %v", errs)
			}
			slices.Sort(applied)
			if !slices.Equal(applied, allVersions()) {
				t.Errorf("migrations applied across instances = %v, want each of %v once", applied, allVersions())
			}
			var n int64
			if err := dbs[0].WithContext(ctx).Table("schema_migrations").Count(&n).Error; err != nil {
				t.Fatal(err)
			}
			if int(n) != len(store.Versions()) {
				t.Errorf("schema_migrations rows = %d, want %d", n, len(store.Versions()))
			}
		})
	}
}

func newBox(t *testing.T) *secret.Box {
	t.Helper()
	text, err := secret.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := secret.ParseKey(text)
	if err != nil {
		t.Fatal(err)
	}
	return secret.NewBox(k)
}

func TestCheckKey(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		right, wrong := newBox(t), newBox(t)
		if err := db.CheckKey(ctx, right, "test"); err != nil {
			t.Fatalf("first CheckKey() = %v", err)
		}
		if err := db.CheckKey(ctx, right, "test"); err != nil {
			t.Fatalf("CheckKey() with the same key = %v", err)
		}
		err := db.CheckKey(ctx, wrong, "MAILSYNC_SECRET_KEY_FILE=/x/secret.key")
		var wk *store.WrongKeyError
		if !errors.As(err, &wk) {
			t.Fatalf("CheckKey() with another key = %v, want *WrongKeyError", err)
		}
		if !strings.Contains(err.Error(), "MAILSYNC_SECRET_KEY_FILE=/x/secret.key") || wk.Want != right.PrimaryID() {
			t.Errorf("error %q should name the key source and want id %s", err, right.PrimaryID())
		}
	})
}

const canary = "Canary-Passw0rd-7f3a91"

// A known password written through the secret box is nowhere in the raw
// database; moved to another row it does not open; after rotate-key only
// the new key is needed.
func TestSecretsAtRestAndRotation(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		g := db.WithContext(ctx)
		if err := g.Exec(`CREATE TABLE test_secrets (id BIGINT PRIMARY KEY, password TEXT)`).Error; err != nil {
			t.Fatal(err)
		}
		cols := []store.SecretColumn{{Table: "test_secrets", Column: "password"}}
		oldBox := newBox(t)
		if err := db.CheckKey(ctx, oldBox, "old"); err != nil {
			t.Fatal(err)
		}
		for id := int64(1); id <= 3; id++ {
			sealed, err := oldBox.Seal(canary, secret.AAD("test_secrets", "password", id))
			if err != nil {
				t.Fatal(err)
			}
			if err := g.Exec("INSERT INTO test_secrets (id, password) VALUES (?, ?)", id, sealed).Error; err != nil {
				t.Fatal(err)
			}
		}
		assertCanaryAbsent(t, db)

		// A ciphertext copied to another row fails to open.
		var row1 string
		g.Raw("SELECT password FROM test_secrets WHERE id = 1").Scan(&row1)
		if err := g.Exec("UPDATE test_secrets SET password = ? WHERE id = 2", row1).Error; err != nil {
			t.Fatal(err)
		}
		if _, err := oldBox.Open(row1, secret.AAD("test_secrets", "password", 2)); !errors.Is(err, secret.ErrOpen) {
			t.Errorf("row 1's ciphertext opened as row 2: %v", err)
		}
		if _, err := db.RotateKey(ctx, oldBox, newBox(t), cols); err == nil {
			t.Errorf("RotateKey() over a moved ciphertext = nil, want an error")
		}
		g.Exec("DELETE FROM test_secrets WHERE id = 2")

		newB := newBox(t)
		n, err := db.RotateKey(ctx, oldBox, newB, cols)
		if err != nil || n != 2 {
			t.Fatalf("RotateKey() = %d, %v; want 2 re-sealed", n, err)
		}
		assertCanaryAbsent(t, db)
		// The old key is gone: only the new one is configured.
		onlyNew := newB
		if err := db.CheckKey(ctx, onlyNew, "new"); err != nil {
			t.Errorf("CheckKey() with the new key after rotation = %v", err)
		}
		if err := db.CheckKey(ctx, oldBox, "old"); err == nil {
			t.Errorf("CheckKey() with the old key after rotation = nil, want an error")
		}
		var rows []struct {
			ID       int64
			Password string
		}
		g.Raw("SELECT id, password FROM test_secrets ORDER BY id").Scan(&rows)
		for _, r := range rows {
			got, err := onlyNew.Open(r.Password, secret.AAD("test_secrets", "password", r.ID))
			if err != nil || got.Reveal() != canary {
				t.Errorf("row %d after rotation: Open() = %v", r.ID, err)
			}
		}
	})
}

// assertCanaryAbsent looks for the canary in every text column of every
// table (PostgreSQL) or in the raw database files (SQLite).
func assertCanaryAbsent(t *testing.T, db *store.DB) {
	t.Helper()
	ctx := context.Background()
	if db.Dialect == store.Postgres {
		var tables []string
		db.WithContext(ctx).Raw(`SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'`).Scan(&tables)
		for _, tbl := range tables {
			var hits int64
			q := `SELECT COUNT(*) FROM "` + tbl + `" t WHERE position(? in t::text) > 0`
			if err := db.WithContext(ctx).Raw(q, canary).Scan(&hits).Error; err != nil {
				t.Fatalf("scan %s: %v", tbl, err)
			}
			if hits > 0 {
				t.Errorf("the canary password is stored in clear in table %s", tbl)
			}
		}
		return
	}
	var path string
	db.WithContext(ctx).Raw("SELECT file FROM pragma_database_list WHERE name = 'main'").Scan(&path)
	if path == "" {
		t.Fatal("cannot find the SQLite file")
	}
	db.WithContext(ctx).Exec("PRAGMA wal_checkpoint(FULL)")
	matches, _ := filepath.Glob(path + "*")
	for _, f := range matches {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(canary)) {
			t.Errorf("the canary password is in clear in %s", f)
		}
	}
	if len(matches) == 0 {
		t.Fatalf("no SQLite files at %s", path)
	}
}

// Migration 6 moves every queued message's bytes out of its status row,
// unchanged.
func TestMigrationMovesOutboxBodies(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			ctx := context.Background()
			db := storetest.OpenEmpty(t, d)
			if _, err := db.MigrateUpTo(ctx, 5); err != nil {
				t.Fatal(err)
			}
			now := time.Now().UTC()
			body := []byte("Subject: kept\r\n\r\n\x00\xff binary-safe\r\n")
			if err := db.Gorm.Exec(`INSERT INTO outbox (id, message_id, route_kind, route_id, from_addr, envelope_from, recipients, raw, size, status, created_at, updated_at)
				VALUES (7, '<m@x>', 'system', 1, 'a@b', 'a@b', '[]', ?, ?, 'queued', ?, ?)`, body, len(body), now, now).Error; err != nil {
				t.Fatal(err)
			}
			if applied, err := db.Migrate(ctx); err != nil || !slices.Contains(applied, 6) {
				t.Fatalf("Migrate() = %v, %v; want 6 applied", applied, err)
			}
			var got []byte
			if err := db.Gorm.Raw("SELECT raw FROM outbox_bodies WHERE outbox_id = 7").Row().Scan(&got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, body) {
				t.Errorf("moved body = %q, want %q", got, body)
			}
			if err := db.Gorm.Exec("DELETE FROM outbox WHERE id = 7").Error; err != nil {
				t.Fatal(err)
			}
			var n int64
			if err := db.Gorm.Raw("SELECT count(*) FROM outbox_bodies").Row().Scan(&n); err != nil || n != 0 {
				t.Errorf("bodies left after their message was deleted: %d, %v", n, err)
			}
		})
	}
}
