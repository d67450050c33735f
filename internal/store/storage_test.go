package store_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
)

// TestSQLitePageSize: a database Open creates has 16 KiB pages (for the
// synced messages' raw bytes); one created by an older version keeps its
// 4 KiB pages and still opens.
func TestSQLitePageSize(t *testing.T) {
	ctx := context.Background()
	pageSize := func(db *store.DB) int {
		t.Helper()
		var n int
		if err := db.Gorm.Raw("PRAGMA page_size").Scan(&n).Error; err != nil {
			t.Fatal(err)
		}
		return n
	}
	db := storetest.Open(t, store.SQLite)
	if n := pageSize(db); n != 16384 {
		t.Errorf("page_size of a new database = %d, want 16384", n)
	}

	path := filepath.Join(t.TempDir(), "old.db")
	old, err := store.Open(ctx, "sqlite://"+path, store.Options{MaxOpenConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	// What an older version made: 4 KiB pages, set before the first write.
	if err := old.Gorm.Exec("PRAGMA journal_mode = DELETE").Error; err != nil {
		t.Fatal(err)
	}
	if err := old.Gorm.Exec("PRAGMA page_size = 4096").Error; err != nil {
		t.Fatal(err)
	}
	if err := old.Gorm.Exec("VACUUM").Error; err != nil {
		t.Fatal(err)
	}
	old.Close()
	reopened, err := store.Open(ctx, "sqlite://"+path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer reopened.Close()
	if _, err := reopened.Migrate(ctx); err != nil {
		t.Fatalf("Migrate() on a 4 KiB-page database = %v", err)
	}
	if n := pageSize(reopened); n != 4096 {
		t.Errorf("page_size of an existing database = %d, want its own 4096", n)
	}
}

// TestMessagesRawStorage: on PostgreSQL, messages.raw is stored out of
// line without pglz (migration 7).
func TestMessagesRawStorage(t *testing.T) {
	db := storetest.Open(t, store.Postgres)
	var storage string
	if err := db.Gorm.Raw(`SELECT attstorage::text FROM pg_attribute
		WHERE attrelid = 'messages'::regclass AND attname = 'raw'`).Scan(&storage).Error; err != nil {
		t.Fatal(err)
	}
	if storage != "e" {
		t.Errorf("messages.raw storage = %q, want \"e\" (EXTERNAL)", storage)
	}
}

// TestBackgroundCheckpoint: committed pages reach the SQLite database file
// without any commit running a checkpoint (the WAL holds less than the
// automatic checkpoint's limit), a large WAL is rewound, and Close stops
// the checkpointer.
func TestBackgroundCheckpoint(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ckpt.db")
	db, err := store.Open(ctx, "sqlite://"+path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Gorm.Exec("CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB)").Error; err != nil {
		t.Fatal(err)
	}
	const total = 24 << 20
	blob := bytes.Repeat([]byte{0x5a}, 1<<20)
	tx := db.Gorm.Begin()
	for i := range total / len(blob) {
		if err := tx.Exec("INSERT INTO blobs (id, b) VALUES (?, ?)", i, blob).Error; err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit().Error; err != nil {
		t.Fatal(err)
	}
	deadline := time.After(30 * time.Second)
	for {
		if st, err := os.Stat(path); err == nil && st.Size() >= total {
			break
		}
		select {
		case <-db.CheckpointRan():
		case <-deadline:
			t.Fatal("the database file did not receive the committed pages within 30 s")
		}
	}

	// Past 64 MiB of WAL the checkpointer rewinds it (RESTART), and the
	// next write truncates the file (journal_size_limit).
	tx = db.Gorm.Begin()
	for i := range 48 {
		if err := tx.Exec("INSERT INTO blobs (id, b) VALUES (?, ?)", 1000+i, blob).Error; err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit().Error; err != nil {
		t.Fatal(err)
	}
	for n := 0; ; n++ {
		if err := db.Gorm.Exec("UPDATE blobs SET b = ? WHERE id = 0", []byte{byte(n)}).Error; err != nil {
			t.Fatal(err)
		}
		if st, err := os.Stat(path + "-wal"); err == nil && st.Size() <= 64<<20 {
			break
		}
		select {
		case <-db.CheckpointRan():
		case <-deadline:
			t.Fatal("the WAL was not rewound within 30 s")
		}
	}
	var timeout int
	if err := db.Gorm.Raw("PRAGMA busy_timeout").Scan(&timeout).Error; err != nil || timeout != 10000 {
		t.Errorf("busy_timeout = %d (%v), want 10000 on the pool's connections", timeout, err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
}

// TestSQLiteNoCacheSpill: a transaction larger than the page cache keeps
// its pages until it commits (cache_spill off): nothing reaches the WAL
// before the commit, and the commit writes it all.
func TestSQLiteNoCacheSpill(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "spill.db")
	db, err := store.Open(ctx, "sqlite://"+path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Gorm.Exec("CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB)").Error; err != nil {
		t.Fatal(err)
	}
	walSize := func() int64 {
		st, err := os.Stat(path + "-wal")
		if err != nil {
			return 0
		}
		return st.Size()
	}
	before := walSize()
	tx := db.WithContext(ctx).Begin()
	blob := bytes.Repeat([]byte{0xA5}, 1<<20)
	for i := range 8 { // 8 MiB, four times SQLite's default 2 MiB cache
		if err := tx.Exec("INSERT INTO blobs (id, b) VALUES (?, ?)", i, blob).Error; err != nil {
			tx.Rollback()
			t.Fatal(err)
		}
	}
	during := walSize()
	if err := tx.Commit().Error; err != nil {
		t.Fatal(err)
	}
	if during-before > 1<<20 {
		t.Errorf("the WAL grew by %d bytes before the commit, want the pages held in the cache", during-before)
	}
	var n int64
	if err := db.Gorm.Raw("SELECT count(*) FROM blobs WHERE length(b) = ?", len(blob)).Scan(&n).Error; err != nil || n != 8 {
		t.Errorf("after the commit: %d rows (%v), want 8", n, err)
	}
}
